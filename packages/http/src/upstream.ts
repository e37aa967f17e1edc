import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

// A small HTTP/1.1 client for the forwarding hop. The hop runs on every forwarded request, and
// a general-purpose client (undici, node:http's agent) spends most of a proxy's CPU on work a
// relay does not need: building request objects, validating headers Node's parser already
// validated, building header objects, per-request timers. This one keeps idle keep-alive
// sockets per endpoint, writes a request head as one string, parses the response head into the
// flat [name, value, ...] array `writeHead` takes, and hands body bytes over as they arrive
// (de-chunked when the sandbox chunks them, since the ServerResponse frames its own body).
// Timeouts are checked by one coarse interval per client instead of a timer per request.

/**
 * One upstream connection as an exchange sees it. The built-in client (Connection, below) and
 * the node:http fallback (node-upstream.ts) both implement it; upstream-client.ts picks one.
 */
export interface UpstreamConnection {
  /** The exchange this connection carries, until its response ended or it failed. */
  readonly ex: Exchange | undefined;
  /** Writes the request head: `METHOD target HTTP/1.1`, header lines, an empty line (latin1). */
  writeHead(head: string): void;
  /** A piece of the request body, chunk-framed when `chunked`; false: wait for onDrain. */
  writeBody(chunk: Buffer, chunked: boolean): boolean;
  /** Calls `fn` once the connection can take more of the body. */
  onDrain(fn: () => void): void;
  /** Ends the request body (the terminating chunk and `trailers` when `chunked`). */
  endBody(chunked: boolean, trailers: readonly string[]): void;
  /** The request had no body: it is complete with its head. */
  requestFinished(): void;
  /** Stops reading the response (the client is not keeping up). */
  pause(): void;
  resume(): void;
  /** Drops the connection (client gone, broken response). */
  destroy(): void;
}

/** The connections to one endpoint as the forwarder sees them (see UpstreamConnection). */
export interface UpstreamEndpoint {
  /** `host[:port]` as a Host header would name it. */
  readonly authority: string;
  /** The open (or, for the fallback, in-flight) connections; 0 once everything finished. */
  readonly conns: { readonly length: number };
  /** Sends `ex` on an idle connection, a new one, or queues it. */
  dispatch(ex: Exchange): void;
  /** Takes a queued exchange back (its client went away); false when it was not queued. */
  unqueue(ex: Exchange): boolean;
  /** Called by the forwarder's interval: fails exchanges whose deadline passed. */
  tick(now: number, slack: number): void;
  /** No new exchanges; idle connections close now, busy ones when their exchange ends. */
  close(): void;
  /** Every connection, busy or not (for shutdown). */
  destroyAll(): void;
}

/** The request side of one exchange; the connection calls it as the response arrives. */
export interface Exchange {
  /** HEAD: the response carries no body whatever its headers say. */
  readonly isHead: boolean;
  /** Whether any of the request body has been read (a failed exchange can then not be retried). */
  readonly bodyStarted: boolean;
  /** The request head `start` writes (the node:http fallback reads it before it connects). */
  readonly head: string;
  /** The connection is ready: write the request. */
  start(conn: UpstreamConnection): void;
  onHead(status: number, reason: string, headers: string[], eventStream: boolean): void;
  /**
   * A piece of the body; `last` when it completes it (onEnd follows). A last piece of at most
   * SMALL_BODY bytes may live in a buffer reused after the call: use it before returning.
   */
  onData(chunk: Buffer, last: boolean): void;
  onEnd(trailers: string[] | undefined): void;
  onError(err: UpstreamError): void;
}

export type UpstreamError = Error & { code: string };

export function upstreamError(code: string, message: string): UpstreamError {
  return Object.assign(new Error(`branchline: ${message}`), { code });
}

export interface UpstreamOptions {
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  bodyTimeoutMs: number;
  connections: number;
}

const CRLF = Buffer.from('\r\n');
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);
const CRLFCRLF = Buffer.from('\r\n\r\n');
const MAX_HEAD = 64 * 1024;
const MAX_LINE = 8 * 1024;
/** The largest final body piece handed over without a copy (see Exchange.onData). */
export const SMALL_BODY = 4096;
/** Idle connections are closed after this long (Node servers drop them after 5 s by default). */
const IDLE_TIMEOUT = 4000;

enum Phase {
  Idle,
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkEnd,
  Trailers,
  UntilClose,
  Done,
}

enum Timer {
  None,
  Connect,
  Response,
  Body,
  Idle,
}

/** One keep-alive connection to an endpoint; carries one exchange at a time. */
export class Connection implements UpstreamConnection {
  readonly socket: Socket;
  ex: Exchange | undefined = undefined;
  private phase = Phase.Idle;
  private remaining = 0;
  private pending: Buffer | undefined = undefined;
  private trailers: string[] | undefined = undefined;
  private reusable = true;
  private gotBytes = false;
  private connected = false;
  private requests = 0;
  /** The request (head and body) has been written in full. */
  requestDone = false;
  private paused = false;
  private dead = false;
  timer = Timer.None;
  armedAt = 0;
  idleTimeout = IDLE_TIMEOUT;
  private lastHint: string | undefined = undefined;
  /** The bytes being parsed live in READ_BUFFER: copy what must outlive this call. */
  private shared = false;

  constructor(
    private readonly endpoint: Endpoint,
    first: Exchange,
  ) {
    const e = endpoint;
    // Plain TCP reads land in one buffer shared by every connection (`onread`), handed over
    // synchronously: no Buffer and no stream machinery per read. Whatever outlives the call
    // (a body chunk, a partial head) is copied (see keep()).
    this.socket = e.tls
      ? tlsConnect({ host: e.host, port: e.port, servername: e.servername, ALPNProtocols: ['http/1.1'] })
      : netConnect({
          host: e.host,
          port: e.port,
          onread: {
            buffer: READ_BUFFER,
            callback: (n: number) => {
              this.shared = true;
              try {
                this.onSocketData(READ_BUFFER.subarray(0, n));
              } finally {
                this.shared = false;
              }
              return true;
            },
          },
        });
    this.socket.setNoDelay(true);
    this.ex = first;
    this.arm(Timer.Connect);
    this.socket.once(e.tls ? 'secureConnect' : 'connect', () => {
      this.connected = true;
      const ex = this.ex;
      if (ex === undefined) {
        this.endpoint.release(this);
        return;
      }
      this.begin(ex);
    });
    this.socket.on('data', (chunk: Buffer) => this.onSocketData(chunk));
    this.socket.on('error', (err: Error & { code?: string }) =>
      this.onSocketGone(upstreamError(err.code ?? 'ECONNRESET', err.message)),
    );
    this.socket.on('close', () =>
      this.onSocketGone(upstreamError('UPSTREAM_CLOSED', 'the sandbox closed the connection')),
    );
  }

  private arm(t: Timer): void {
    this.timer = t;
    this.armedAt = this.endpoint.clock.now;
  }

  /** Starts an exchange on this (connected) connection. */
  begin(ex: Exchange): void {
    this.ex = ex;
    this.phase = Phase.Head;
    this.gotBytes = false;
    this.reusable = true;
    this.requestDone = false;
    this.trailers = undefined;
    this.pending = undefined;
    this.requests++;
    this.arm(Timer.Response);
    ex.start(this);
    // While a request body is still being written, the response timeout waits: it starts
    // once the whole request is out (an upload may take longer than the sandbox's answer).
    if (!this.requestDone && this.phase === Phase.Head) this.timer = Timer.None;
  }

  writeHead(head: string): void {
    this.socket.write(head, 'latin1');
  }

  writeBody(chunk: Buffer, chunked: boolean): boolean {
    if (!chunked) return this.socket.write(chunk);
    if (chunk.length === 0) return true;
    const socket = this.socket;
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    socket.write(chunk);
    const ok = socket.write('\r\n', 'latin1');
    socket.uncork();
    return ok;
  }

  onDrain(fn: () => void): void {
    this.socket.once('drain', fn);
  }

  endBody(chunked: boolean, trailers: readonly string[]): void {
    if (chunked) {
      let end = '0\r\n';
      for (let i = 0; i < trailers.length; i += 2) end += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
      this.socket.write(`${end}\r\n`, 'latin1');
    }
    this.requestFinished();
  }

  /** The request body was written in full (or there was none). */
  requestFinished(): void {
    this.requestDone = true;
    if (this.phase === Phase.Done) this.endpoint.release(this);
    else if (this.phase === Phase.Head && this.timer === Timer.None) this.arm(Timer.Response);
  }

  /** Stops reading from the sandbox (the client is not keeping up). */
  pause(): void {
    if (this.paused || this.dead) return;
    this.paused = true;
    this.socket.pause();
    if (this.timer === Timer.Body) this.timer = Timer.None;
  }

  resume(): void {
    if (!this.paused || this.dead) return;
    this.paused = false;
    if (this.phase !== Phase.Done && this.phase !== Phase.Idle) this.arm(Timer.Body);
    this.socket.resume();
  }

  /** Drops the connection (client gone, timeout, broken response). */
  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.ex = undefined;
    this.timer = Timer.None;
    this.socket.destroy();
    this.endpoint.remove(this);
  }

  /** Called by the interval: fails the exchange whose deadline passed. */
  expire(now: number, opts: UpstreamOptions, slack: number): void {
    const t = this.timer;
    if (t === Timer.None) return;
    const limit =
      t === Timer.Connect
        ? opts.connectTimeoutMs
        : t === Timer.Response
          ? opts.responseTimeoutMs
          : t === Timer.Body
            ? opts.bodyTimeoutMs
            : this.idleTimeout;
    if (limit === 0 || now - this.armedAt < limit + slack) return;
    if (t === Timer.Idle) {
      this.destroy();
      return;
    }
    const ex = this.ex;
    const err =
      t === Timer.Connect
        ? upstreamError('UND_ERR_CONNECT_TIMEOUT', `no connection within ${limit} ms`)
        : t === Timer.Response
          ? upstreamError('UND_ERR_HEADERS_TIMEOUT', `no response within ${limit} ms`)
          : upstreamError('UND_ERR_BODY_TIMEOUT', `the response body stalled for ${limit} ms`);
    this.destroy();
    ex?.onError(err);
  }

  /** Becomes idle in the endpoint's pool. */
  idle(): void {
    this.ex = undefined;
    this.phase = Phase.Idle;
    this.arm(Timer.Idle);
  }

  get usable(): boolean {
    return !this.dead && this.connected && this.reusable;
  }

  private onSocketGone(err: UpstreamError): void {
    if (this.dead) return;
    const ex = this.ex;
    const phase = this.phase;
    this.dead = true;
    this.ex = undefined;
    this.timer = Timer.None;
    this.socket.destroy();
    this.endpoint.remove(this);
    if (ex === undefined) return;
    if (phase === Phase.UntilClose) {
      // The sandbox framed this body by closing the connection: that is its end.
      this.phase = Phase.Done;
      ex.onEnd(undefined);
      return;
    }
    if (phase === Phase.Done) return;
    // A kept-alive connection the sandbox had just closed: nothing was answered, nothing of
    // the body consumed, so the request can go out again on a fresh connection.
    if (this.requests > 1 && !this.gotBytes && !ex.bodyStarted && phase === Phase.Head) {
      this.endpoint.dispatch(ex, true);
      return;
    }
    ex.onError(err);
  }

  private fail(message: string): void {
    const ex = this.ex;
    this.destroy();
    ex?.onError(upstreamError('UPSTREAM_BAD_RESPONSE', message));
  }

  private keep(b: Buffer): Buffer {
    return this.shared ? Buffer.from(b) : b;
  }

  private onSocketData(chunk: Buffer): void {
    if (this.ex === undefined || this.phase === Phase.Idle || this.phase === Phase.Done) {
      // Bytes nobody asked for: the connection is out of step, do not reuse it.
      const ex = this.ex;
      if (ex === undefined) this.destroy();
      else this.reusable = false;
      return;
    }
    this.gotBytes = true;
    if (this.timer === Timer.Body) this.armedAt = this.endpoint.clock.now;
    let buf = chunk;
    if (this.pending !== undefined) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = undefined;
    }
    this.parse(buf);
  }

  private parse(buf: Buffer): void {
    let off = 0;
    const n = buf.length;
    while (off < n) {
      const ex = this.ex;
      if (ex === undefined) return;
      switch (this.phase) {
        case Phase.Head: {
          const end = this.find(buf, off, CRLFCRLF, MAX_HEAD, 'response head too large');
          if (end === -1) return;
          const head = buf.toString('latin1', off, end);
          off = end + 4;
          if (!this.onHead(head, ex)) return;
          if ((this.phase as Phase) === Phase.Done) {
            this.finish(ex, off < n);
            return;
          }
          break;
        }
        case Phase.Length:
        case Phase.ChunkData:
        case Phase.UntilClose: {
          const avail = n - off;
          const take = this.phase === Phase.UntilClose || avail < this.remaining ? avail : this.remaining;
          const piece = off === 0 && take === n ? buf : buf.subarray(off, off + take);
          off += take;
          if (this.phase === Phase.Length && take === this.remaining && take <= SMALL_BODY) {
            // The whole rest of a small body: used before onData returns, so not copied.
            this.remaining = 0;
            this.phase = Phase.Done;
            ex.onData(piece, true);
            this.finish(ex, off < n);
            return;
          }
          const slice = this.keep(piece);
          if (this.phase === Phase.UntilClose) {
            ex.onData(slice, false);
            break;
          }
          this.remaining -= take;
          if (this.remaining > 0) {
            ex.onData(slice, false);
            break;
          }
          if (this.phase === Phase.ChunkData) {
            this.phase = Phase.ChunkEnd;
            ex.onData(slice, false);
            break;
          }
          this.phase = Phase.Done;
          ex.onData(slice, true);
          this.finish(ex, off < n);
          return;
        }
        case Phase.ChunkSize: {
          const eol = this.find(buf, off, CRLF, MAX_LINE, 'chunk size line too long');
          if (eol === -1) return;
          let line = buf.toString('latin1', off, eol);
          off = eol + 2;
          const semi = line.indexOf(';');
          if (semi !== -1) line = line.slice(0, semi);
          line = line.trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(line)) {
            this.fail('bad chunk size');
            return;
          }
          const size = Number.parseInt(line, 16);
          if (size === 0) this.phase = Phase.Trailers;
          else {
            this.remaining = size;
            this.phase = Phase.ChunkData;
          }
          break;
        }
        case Phase.ChunkEnd: {
          if (n - off < 2) {
            this.pending = this.keep(buf.subarray(off));
            return;
          }
          if (buf[off] !== 13 || buf[off + 1] !== 10) {
            this.fail('bad chunk terminator');
            return;
          }
          off += 2;
          this.phase = Phase.ChunkSize;
          break;
        }
        case Phase.Trailers: {
          if (n - off < 2) {
            this.pending = this.keep(buf.subarray(off));
            return;
          }
          let end: number;
          if (buf[off] === 13 && buf[off + 1] === 10) end = off;
          else {
            end = this.find(buf, off, CRLFCRLF, MAX_HEAD, 'trailers too large');
            if (end === -1) return;
            const trailers: string[] = [];
            if (!parseFields(buf.toString('latin1', off, end), 0, trailers)) {
              this.fail('bad trailer line');
              return;
            }
            this.trailers = trailers;
            end += 2;
          }
          off = end + 2;
          this.phase = Phase.Done;
          this.finish(ex, off < n);
          return;
        }
        default:
          return;
      }
    }
  }

  /**
   * Where `delim` starts in `buf` from `off`. When it is not there yet, the rest is kept for the
   * next read (or, past `max` bytes, the exchange fails with `what`) and the answer is -1.
   */
  private find(buf: Buffer, off: number, delim: Buffer, max: number, what: string): number {
    const at = buf.indexOf(delim, off);
    if (at !== -1) return at;
    if (buf.length - off > max) this.fail(what);
    else this.pending = this.keep(buf.subarray(off));
    return -1;
  }

  /** Parses a response head; false when the exchange failed. */
  private onHead(head: string, ex: Exchange): boolean {
    // Status line: HTTP/1.x SSS[ reason]
    const minor = head.charCodeAt(7);
    const status = statusOf(head);
    if (status === -1 || !head.startsWith('HTTP/1.') || (minor !== 48 && minor !== 49)) {
      this.fail('malformed status line');
      return false;
    }
    let eol = head.indexOf('\r\n');
    if (eol === -1) eol = head.length;
    const reason = eol > 13 ? head.slice(13, eol) : '';
    if (status < 200) {
      if (status === 101) {
        this.fail('unexpected 101 Switching Protocols');
        return false;
      }
      // 100 Continue, 103 Early Hints, ...: informational, the real response follows.
      return true;
    }
    const headers: string[] = [];
    // One HeadInfo per process, reset per head: it never outlives this call.
    const info = HEAD_INFO;
    info.length = -1;
    info.chunked = false;
    info.te = false;
    info.close = false;
    info.keepAlive = false;
    info.eventStream = false;
    if (eol < head.length && !parseResponseFields(head, eol + 2, headers, info, this)) {
      this.fail('malformed response header');
      return false;
    }
    // HTTP/1.0 closes unless it says keep-alive; HTTP/1.1 keeps alive unless it says close.
    if (info.close || (minor === 48 && !info.keepAlive)) this.reusable = false;
    if (ex.isHead || status === 204 || status === 304) this.phase = Phase.Done;
    else if (info.te) {
      if (info.chunked) this.phase = Phase.ChunkSize;
      else {
        this.phase = Phase.UntilClose;
        this.reusable = false;
      }
    } else if (info.length >= 0) {
      this.remaining = info.length;
      this.phase = info.length === 0 ? Phase.Done : Phase.Length;
    } else {
      this.phase = Phase.UntilClose;
      this.reusable = false;
    }
    if (this.phase !== Phase.Done && !this.paused) this.arm(Timer.Body);
    else if (this.phase !== Phase.Done) this.timer = Timer.None;
    ex.onHead(status, reason, headers, info.eventStream);
    return this.ex === ex;
  }

  /**
   * The response is complete. `stray`: the sandbox sent bytes past its end, so the connection is
   * out of step and must not carry another exchange (decided before it is released).
   */
  private finish(ex: Exchange, stray: boolean): void {
    if (stray) this.reusable = false;
    this.timer = Timer.None;
    const trailers = this.trailers;
    this.trailers = undefined;
    ex.onEnd(trailers);
    if (this.ex !== ex) return;
    if (this.requestDone) this.endpoint.release(this);
    // Otherwise the sandbox answered before the whole request body was written: the rest of
    // the body is not sent, and the connection, out of step, is not reused.
    else this.destroy();
  }

  /** A keep-alive hint (`timeout=N` seconds) shortens how long this connection idles. */
  keepAliveHint(value: string): void {
    if (value === this.lastHint) return;
    this.lastHint = value;
    const m = /timeout\s*=\s*(\d+)/i.exec(value);
    if (m) this.idleTimeout = Math.max(500, Math.min(IDLE_TIMEOUT, Number(m[1]) * 1000 - 1000));
  }
}

interface HeadInfo {
  length: number;
  chunked: boolean;
  te: boolean;
  close: boolean;
  keepAlive: boolean;
  eventStream: boolean;
}

const HEAD_INFO: HeadInfo = {
  length: -1,
  chunked: false,
  te: false,
  close: false,
  keepAlive: false,
  eventStream: false,
};

function isWhitespace(c: number): boolean {
  return c === 32 || c === 9;
}

/**
 * The header name at `text[at, at + len)` as a constant when it is one a sandbox commonly sends
 * in that spelling (Node writes `Date`, `Connection`, `Keep-Alive` itself): no string is sliced
 * for it.
 */
function knownName(text: string, at: number, len: number): string | undefined {
  let c: string;
  switch (len) {
    case 4:
      c = 'Date';
      break;
    case 10:
      c = text.charCodeAt(at) === 67 ? 'Connection' : 'Keep-Alive';
      break;
    case 12:
      c = 'content-type';
      break;
    case 14:
      c = 'content-length';
      break;
    case 17:
      c = 'transfer-encoding';
      break;
    default:
      return undefined;
  }
  return text.startsWith(c, at) ? c : undefined;
}

/**
 * `name` lowercased. Sandboxes mostly send a header name in one of two spellings (Node writes
 * its own `Connection`, `Keep-Alive`, `Date` capitalised, the application's names as given),
 * so checking those first saves allocating a lowercased copy per header per response.
 */
function lowerName(name: string, lower: string, capitalised: string): string {
  return name === lower || name === capitalised ? lower : name.toLowerCase();
}

/** The status code of `HTTP/1.x SSS[ reason]`, or -1. */
function statusOf(head: string): number {
  if (head.length < 12 || head.charCodeAt(8) !== 32) return -1;
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = head.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return -1;
    status = status * 10 + d;
  }
  if (status < 100) return -1;
  const after = head.charCodeAt(12);
  return head.length === 12 || after === 32 || after === 13 ? status : -1;
}

/** Splits `name: value` lines into a flat array; false on a malformed line. */
function parseFields(text: string, from: number, out: string[]): boolean {
  let i = from;
  const n = text.length;
  while (i < n) {
    let eol = text.indexOf('\r\n', i);
    if (eol === -1) eol = n;
    const colon = text.indexOf(':', i);
    if (colon <= i || colon > eol) return false;
    const c = text.charCodeAt(i);
    if (c === 32 || c === 9) return false; // obsolete line folding
    out.push(text.slice(i, colon), text.slice(colon + 1, eol).trim());
    i = eol + 2;
  }
  return true;
}

/**
 * Response header lines into `out` for the client, minus the connection-level ones, while
 * reading what frames the body. False on a malformed line or conflicting lengths.
 */
function parseResponseFields(
  text: string,
  from: number,
  out: string[],
  info: HeadInfo,
  conn: Connection,
): boolean {
  let i = from;
  const n = text.length;
  let listed: string[] | undefined;
  while (i < n) {
    let eol = text.indexOf('\r\n', i);
    if (eol === -1) eol = n;
    const colon = text.indexOf(':', i);
    if (colon <= i || colon > eol) return false;
    const c = text.charCodeAt(i);
    if (c === 32 || c === 9) return false;
    const name = knownName(text, i, colon - i) ?? text.slice(i, colon);
    // The value without surrounding whitespace, sliced once (no trim() copy).
    let vs = colon + 1;
    let ve = eol;
    while (vs < ve && isWhitespace(text.charCodeAt(vs))) vs++;
    while (ve > vs && isWhitespace(text.charCodeAt(ve - 1))) ve--;
    const value = text.slice(vs, ve);
    i = eol + 2;
    switch (name.length) {
      case 7:
        if (lowerName(name, 'upgrade', 'Upgrade') === 'upgrade') continue;
        break;
      case 10: {
        const l =
          name === 'Connection' ? 'connection' : name === 'Keep-Alive' ? 'keep-alive' : name.toLowerCase();
        if (l === 'connection') {
          if (value === 'keep-alive') {
            info.keepAlive = true;
            continue;
          }
          if (value === 'close') {
            info.close = true;
            continue;
          }
          for (const t of value.split(',')) {
            const tok = t.trim().toLowerCase();
            if (tok === 'close') info.close = true;
            else if (tok === 'keep-alive') info.keepAlive = true;
            else if (tok !== '') {
              listed ??= [];
              listed.push(tok);
            }
          }
          continue;
        }
        if (l === 'keep-alive') {
          conn.keepAliveHint(value);
          continue;
        }
        break;
      }
      case 12:
        if (
          lowerName(name, 'content-type', 'Content-Type') === 'content-type' &&
          value.startsWith('text/event-stream')
        )
          info.eventStream = true;
        break;
      case 14:
        if (lowerName(name, 'content-length', 'Content-Length') === 'content-length') {
          if (!/^\d{1,15}$/.test(value)) return false;
          const len = Number(value);
          if (info.length !== -1 && info.length !== len) return false;
          info.length = len;
        }
        break;
      case 16:
        if (name.toLowerCase() === 'proxy-connection') continue;
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          info.te = true;
          const codings = value.toLowerCase().split(',');
          info.chunked = codings[codings.length - 1]!.trim() === 'chunked';
          continue;
        }
        break;
    }
    out.push(name, value);
  }
  if (info.te && info.length !== -1) {
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); the length must not be relayed.
    info.length = -1;
    for (let j = out.length - 2; j >= 0; j -= 2)
      if (out[j]!.length === 14 && out[j]!.toLowerCase() === 'content-length') out.splice(j, 2);
  }
  if (listed !== undefined) {
    // Headers the sandbox named in `Connection` belong to that connection only.
    for (let j = out.length - 2; j >= 0; j -= 2) if (listed.includes(out[j]!.toLowerCase())) out.splice(j, 2);
  }
  return true;
}

/** The clock the interval keeps: reading it costs nothing on the request path. */
export interface CoarseClock {
  now: number;
}

/** The connections to one endpoint: idle ones, a cap on how many are open, a queue beyond it. */
export class Endpoint implements UpstreamEndpoint {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly servername: string | undefined;
  /** `host[:port]` as a Host header would name it. */
  readonly authority: string;
  readonly conns: Connection[] = [];
  private readonly idleConns: Connection[] = [];
  private readonly queue: Exchange[] = [];
  closed = false;

  constructor(
    readonly url: string,
    private readonly opts: UpstreamOptions,
    readonly clock: CoarseClock,
  ) {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new TypeError(`branchline: sandbox endpoint ${url} is not an http(s) URL`);
    this.tls = u.protocol === 'https:';
    this.port = Number(u.port || (this.tls ? 443 : 80));
    this.host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    this.servername = this.tls && !/^[\d.]+$|:/.test(this.host) ? this.host : undefined;
    this.authority = u.host;
  }

  /** Sends `ex` on an idle connection, a new one, or queues it. */
  dispatch(ex: Exchange, fresh = false): void {
    if (!fresh) {
      const idle = this.idleConns;
      while (idle.length > 0) {
        const c = idle.pop()!;
        if (c.usable) {
          c.begin(ex);
          return;
        }
        c.destroy();
      }
    }
    if (this.conns.length < this.opts.connections || fresh) {
      this.conns.push(new Connection(this, ex));
      return;
    }
    this.queue.push(ex);
  }

  /** Takes a queued exchange back (its client went away). */
  unqueue(ex: Exchange): boolean {
    const i = this.queue.indexOf(ex);
    if (i === -1) return false;
    this.queue.splice(i, 1);
    return true;
  }

  /** An exchange finished on `c`: reuse the connection, or drop it. */
  release(c: Connection): void {
    if (!c.usable || this.closed) {
      c.destroy();
      if (this.closed && this.queue.length > 0) this.pump();
      return;
    }
    const next = this.queue.shift();
    if (next !== undefined) {
      c.begin(next);
      return;
    }
    c.idle();
    this.idleConns.push(c);
  }

  remove(c: Connection): void {
    const i = this.conns.indexOf(c);
    if (i !== -1) this.conns.splice(i, 1);
    const j = this.idleConns.indexOf(c);
    if (j !== -1) this.idleConns.splice(j, 1);
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && this.conns.length < this.opts.connections)
      this.conns.push(new Connection(this, this.queue.shift()!));
  }

  tick(now: number, slack: number): void {
    // expire() may remove connections: walk a copy.
    if (this.conns.length === 0) return;
    for (const c of [...this.conns]) c.expire(now, this.opts, slack);
  }

  /** No new exchanges; idle connections close now, busy ones when their exchange ends. */
  close(): void {
    this.closed = true;
    for (const c of [...this.idleConns]) c.destroy();
  }

  /** Every connection, busy or not (for shutdown). */
  destroyAll(): void {
    this.closed = true;
    for (const c of [...this.conns]) c.destroy();
  }

  get busy(): boolean {
    return this.conns.length > this.idleConns.length || this.queue.length > 0;
  }
}
