// The forwarding hop over node:http's public client: the fallback of upstream-client.ts. It
// takes the request as the built-in client does (a head string, body pieces) and reports the
// response the same way (flat header array without the connection-level headers, body pieces,
// trailers), with the same timeouts and error codes, so the forwarder cannot tell them apart.

import {
  type ClientRequest,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import {
  type Exchange,
  type UpstreamConnection,
  type UpstreamEndpoint,
  type UpstreamError,
  type UpstreamOptions,
  upstreamError,
} from './upstream.js';

/** Response headers that describe the sandbox's connection, not the response (never relayed). */
const CONNECTION_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
]);

/** The parts of a request head the forwarder wrote (see forward.ts requestHead). */
function parseHead(head: string): { method: string; path: string; headers: string[]; hasAuth: boolean } {
  const lines = head.split('\r\n');
  const first = lines[0]!;
  const sp = first.indexOf(' ');
  const method = first.slice(0, sp);
  const path = first.slice(sp + 1, first.lastIndexOf(' '));
  const headers: string[] = [];
  let hasAuth = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') break;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    if (name.length === 13 && name.toLowerCase() === 'authorization') hasAuth = true;
    headers.push(name, line.slice(colon + 1).trim());
  }
  return { method, path, headers, hasAuth };
}

/** The response's header lines for the client: connection-level ones (and those it lists) dropped. */
function relayedResponseHeaders(raw: string[]): string[] {
  let listed: Set<string> | undefined;
  let te = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name === 'transfer-encoding') te = true;
    else if (name === 'connection')
      for (const t of raw[i + 1]!.split(',')) {
        const tok = t.trim().toLowerCase();
        if (tok === '' || tok === 'close' || tok === 'keep-alive') continue;
        listed ??= new Set();
        listed.add(tok);
      }
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (CONNECTION_HEADERS.has(name) || listed?.has(name)) continue;
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); the length must not be relayed.
    if (te && name === 'content-length') continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** Sockets whose connection (and TLS handshake) completed. */
const READY = new WeakSet<Socket>();

class NodeEndpoint implements UpstreamEndpoint {
  readonly authority: string;
  readonly conns: NodeConnection[] = [];
  readonly tls: boolean;
  readonly host: string;
  readonly port: number;
  /** Basic credentials from the endpoint URL (`user:pass`), if any. */
  readonly auth: string | undefined;
  readonly agent: HttpAgent;
  private closed = false;

  constructor(
    url: string,
    readonly opts: UpstreamOptions,
  ) {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new TypeError(`branchline: sandbox endpoint ${url} is not an http(s) URL`);
    this.tls = u.protocol === 'https:';
    this.port = Number(u.port || (this.tls ? 443 : 80));
    this.host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    this.authority = u.host;
    this.auth =
      u.username || u.password
        ? `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`
        : undefined;
    const agentOptions = { keepAlive: true, maxSockets: opts.connections, scheduling: 'lifo' as const };
    this.agent = this.tls ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  }

  dispatch(ex: Exchange, retried = false): void {
    const c = new NodeConnection(this, ex, retried);
    this.conns.push(c);
    c.open(ex.head);
  }

  unqueue(): boolean {
    // Requests wait in the agent's queue with their connection object: the forwarder destroys it.
    return false;
  }

  tick(): void {
    // Each exchange keeps its own timers.
  }

  remove(c: NodeConnection): void {
    const i = this.conns.indexOf(c);
    if (i !== -1) this.conns.splice(i, 1);
    if (this.closed && this.conns.length === 0) this.agent.destroy();
  }

  close(): void {
    this.closed = true;
    if (this.conns.length === 0) this.agent.destroy();
  }

  destroyAll(): void {
    this.closed = true;
    for (const c of [...this.conns]) c.destroy();
    this.agent.destroy();
  }
}

/** One exchange over node:http (the agent owns the keep-alive sockets). */
class NodeConnection implements UpstreamConnection {
  ex: Exchange | undefined;
  private req: ClientRequest | undefined;
  private res: IncomingMessage | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerKind: 'connect' | 'response' | 'body' | undefined;
  private requestDone = false;
  private started = false;
  private paused = false;
  private dead = false;

  constructor(
    private readonly endpoint: NodeEndpoint,
    ex: Exchange,
    private readonly retried: boolean,
  ) {
    this.ex = ex;
  }

  writeHead(): void {
    // Sent with the request (see open): node:http writes the head itself.
  }

  /**
   * Creates the request from the exchange's head. The exchange starts (and reads the client's
   * body) once a connection is there: until then a failure leaves the body unread, so the
   * request can still fall back to baseline, as with the built-in client.
   */
  open(head: string): void {
    const e = this.endpoint;
    const { method, path, headers, hasAuth } = parseHead(head);
    const auth = e.auth !== undefined && !hasAuth ? e.auth : undefined;
    if (auth !== undefined) headers.push('authorization', `Basic ${Buffer.from(auth).toString('base64')}`);
    const options = {
      host: e.host,
      port: e.port,
      method,
      path,
      // The head's lines as the built-in client writes them (order and case kept).
      headers: headers as unknown as OutgoingHttpHeaders,
      agent: e.agent,
      servername: e.tls && !/^[\d.]+$|:/.test(e.host) ? e.host : undefined,
    };
    const req = e.tls ? httpsRequest(options) : httpRequest(options);
    this.req = req;
    req.on('socket', (socket: Socket) => this.onSocket(socket));
    req.on('response', (res) => this.onResponse(res));
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      this.fail(upstreamError('UPSTREAM_BAD_RESPONSE', 'unexpected 101 Switching Protocols'));
    });
    req.on('error', (err: Error & { code?: string }) => this.onRequestError(err));
  }

  writeBody(chunk: Buffer): boolean {
    // node:http frames the body itself (chunked when the head says so).
    if (this.req === undefined || this.dead) return true;
    if (chunk.length === 0) return true;
    return this.req.write(chunk);
  }

  onDrain(fn: () => void): void {
    this.req?.once('drain', fn);
  }

  endBody(chunked: boolean, trailers: readonly string[]): void {
    const req = this.req;
    if (req !== undefined && !this.dead && chunked && trailers.length > 0) {
      const t: Record<string, string> = {};
      for (let i = 0; i < trailers.length; i += 2) t[trailers[i]!] = trailers[i + 1]!;
      req.addTrailers(t);
    }
    this.requestFinished();
  }

  requestFinished(): void {
    if (this.requestDone || this.dead) return;
    this.requestDone = true;
    this.req?.end();
    // The response timeout runs from the end of the request (an upload may take longer).
    if (this.res === undefined) this.arm('response');
  }

  pause(): void {
    if (this.paused || this.dead) return;
    this.paused = true;
    this.res?.pause();
    this.disarm();
  }

  resume(): void {
    if (!this.paused || this.dead) return;
    this.paused = false;
    if (this.res !== undefined && !this.res.complete) this.arm('body');
    this.res?.resume();
  }

  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.ex = undefined;
    this.disarm();
    this.req?.destroy();
    this.endpoint.remove(this);
  }

  private onSocket(socket: Socket): void {
    if (this.dead) return;
    // Every socket of the endpoint's agent was first seen here, so a reused one is in `ready`.
    if (READY.has(socket) || (!this.endpoint.tls && !socket.connecting)) {
      this.begin();
      return;
    }
    this.arm('connect');
    socket.once(this.endpoint.tls ? 'secureConnect' : 'connect', () => {
      READY.add(socket);
      this.begin();
    });
  }

  /** Connected: the exchange writes its request. */
  private begin(): void {
    const ex = this.ex;
    if (ex === undefined || this.dead || this.started) return;
    this.started = true;
    this.disarm();
    ex.start(this);
    // While a request body is still being written, the response timeout waits (see requestFinished).
    if (this.requestDone && this.res === undefined && !this.dead) this.arm('response');
  }

  private arm(kind: 'connect' | 'response' | 'body'): void {
    // The same deadline again (a body chunk arrived): restart the timer rather than replace it.
    if (this.timer !== undefined && this.timerKind === kind) {
      this.timer.refresh();
      return;
    }
    this.disarm();
    this.timerKind = kind;
    const o = this.endpoint.opts;
    const ms =
      kind === 'connect' ? o.connectTimeoutMs : kind === 'response' ? o.responseTimeoutMs : o.bodyTimeoutMs;
    if (ms === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.fail(
        kind === 'connect'
          ? upstreamError('UND_ERR_CONNECT_TIMEOUT', `no connection within ${ms} ms`)
          : kind === 'response'
            ? upstreamError('UND_ERR_HEADERS_TIMEOUT', `no response within ${ms} ms`)
            : upstreamError('UND_ERR_BODY_TIMEOUT', `the response body stalled for ${ms} ms`),
      );
    }, ms);
  }

  private disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private onResponse(res: IncomingMessage): void {
    const ex = this.ex;
    if (ex === undefined || this.dead) {
      res.destroy();
      return;
    }
    this.res = res;
    this.disarm();
    const eventStream = /^text\/event-stream/i.test(String(res.headers['content-type'] ?? ''));
    res.on('data', (chunk: Buffer) => {
      if (this.ex === undefined) return;
      if (!this.paused) this.arm('body');
      this.ex.onData(chunk, false);
    });
    res.on('end', () => {
      const ex = this.ex;
      if (ex === undefined || this.dead) return;
      this.disarm();
      this.ex = undefined;
      const trailers = res.rawTrailers.length > 0 ? res.rawTrailers : undefined;
      // The sandbox answered before the whole request body was written: the connection is out
      // of step (the rest of the body is not sent), so it is not reused.
      if (!this.requestDone) this.req?.destroy();
      this.dead = true;
      this.endpoint.remove(this);
      ex.onEnd(trailers);
    });
    res.on('error', (err: Error & { code?: string }) =>
      this.fail(upstreamError(err.code ?? 'UPSTREAM_CLOSED', err.message)),
    );
    res.on('aborted', () => this.fail(upstreamError('UPSTREAM_CLOSED', 'the sandbox closed the connection')));
    if (!res.complete) this.arm('body');
    ex.onHead(
      res.statusCode ?? 502,
      res.statusMessage ?? '',
      relayedResponseHeaders(res.rawHeaders),
      eventStream,
    );
  }

  private onRequestError(err: Error & { code?: string }): void {
    const ex = this.ex;
    if (ex === undefined || this.dead) return;
    // Bytes after a complete response: node:http drops that connection itself, and the response
    // (its data still queued) stands.
    if (this.res?.complete) return;
    // A kept-alive connection the sandbox had just closed: nothing was answered, nothing of the
    // body consumed, so the request goes out again on a fresh connection (once).
    if (this.res === undefined && this.req?.reusedSocket && !ex.bodyStarted && !this.retried) {
      this.dead = true;
      this.ex = undefined;
      this.disarm();
      this.endpoint.remove(this);
      this.endpoint.dispatch(ex, true);
      return;
    }
    const code = err.code ?? 'ECONNRESET';
    this.fail(
      code === 'HPE_INVALID_CONSTANT' || code.startsWith('HPE_')
        ? upstreamError('UPSTREAM_BAD_RESPONSE', `malformed response (${err.message})`)
        : upstreamError(code, err.message),
    );
  }

  private fail(err: UpstreamError): void {
    const ex = this.ex;
    this.destroy();
    ex?.onError(err);
  }
}

/** An endpoint whose requests go through node:http (or node:https). */
export function createNodeEndpoint(url: string, options: UpstreamOptions): UpstreamEndpoint {
  return new NodeEndpoint(url, options);
}
