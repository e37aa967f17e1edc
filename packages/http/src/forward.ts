import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import {
  counters,
  HOP_MARKER,
  logger,
  noteForwarded,
  type RouteSource,
  type RouteTable,
  renamedOption,
} from '@branchline/core/transport';
import { describeSandboxFailure, isTimeoutFailure, type SandboxTarget } from './sandbox-error.js';
import { activeTraceHeaders, headerNames } from './trace.js';
import type { ForwardOptions } from './types.js';
import {
  type CoarseClock,
  createUpstreamEndpoint,
  type Exchange,
  resolveUpstreamClient,
  SMALL_BODY,
  type UpstreamClient,
  type UpstreamClientOptions,
  type UpstreamConnection,
  type UpstreamEndpoint,
  type UpstreamError,
} from './upstream-client.js';

/** Where one request is forwarded: the rule's sandbox, this service, the chosen endpoint. */
export interface ForwardTarget extends SandboxTarget {}

interface ResolvedForwardOptions {
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  bodyTimeoutMs: number;
  fallbackToBaseline: boolean;
  connections: number;
  pipelining: number;
  preserveHost: boolean;
}

function positive(name: string, v: unknown, def: number, allowZero = false): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
    throw new TypeError(
      `branchline: option ${name} must be a ${allowZero ? 'non-negative' : 'positive'} number${name.endsWith('Ms') ? ' of milliseconds' : ''}, got ${JSON.stringify(v)}`,
    );
  return v;
}

/** A timeout given under its new name (`…Ms`) or its deprecated one (warned about once). */
function renamed(o: ForwardOptions, old: 'connectTimeout' | 'responseTimeout' | 'bodyTimeout'): unknown {
  return renamedOption('@branchline/http', o[`${old}Ms`], o[old], old, `${old}Ms`);
}

/** Checks forwarding options; throws a TypeError naming the bad option. */
export function resolveForwardOptions(o: ForwardOptions = {}): ResolvedForwardOptions {
  if (o.fallbackToBaseline !== undefined && typeof o.fallbackToBaseline !== 'boolean')
    throw new TypeError(
      `branchline: option fallbackToBaseline must be true or false, got ${JSON.stringify(o.fallbackToBaseline)}`,
    );
  if (o.preserveHost !== undefined && typeof o.preserveHost !== 'boolean')
    throw new TypeError(
      `branchline: option preserveHost must be true or false, got ${JSON.stringify(o.preserveHost)}`,
    );
  return {
    connectTimeoutMs: positive('connectTimeoutMs', renamed(o, 'connectTimeout'), 2000),
    responseTimeoutMs: positive('responseTimeoutMs', renamed(o, 'responseTimeout'), 30_000),
    bodyTimeoutMs: positive('bodyTimeoutMs', renamed(o, 'bodyTimeout'), 300_000, true),
    fallbackToBaseline: o.fallbackToBaseline ?? false,
    connections: positive('connections', o.connections, 128),
    pipelining: positive('pipelining', o.pipelining, 1),
    preserveHost: o.preserveHost ?? true,
  };
}

// Request headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
// `expect` (Node already answered 100-continue) — none of them may be relayed. Checked by
// length first so that ordinary headers cost one switch.
function isHopByHop(name: string): boolean {
  switch (name.length) {
    case 2:
      return name.toLowerCase() === 'te';
    case 6:
      return name.toLowerCase() === 'expect';
    case 7: {
      const l = name.toLowerCase();
      return l === 'upgrade' || l === 'trailer';
    }
    case 10: {
      const l = name.toLowerCase();
      return l === 'connection' || l === 'keep-alive';
    }
    case 16:
      return name.toLowerCase() === 'proxy-connection';
    case 17:
      return name.toLowerCase() === 'transfer-encoding';
    default:
      return false;
  }
}

function isHost(name: string): boolean {
  return name.length === 4 && name.toLowerCase() === 'host';
}

/** Extra header names the client listed in `Connection` (other than the usual tokens). */
function connectionListed(value: string | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  let set: Set<string> | undefined;
  for (const t of value.split(',')) {
    const tok = t.trim().toLowerCase();
    if (tok === '' || tok === 'keep-alive' || tok === 'close' || tok === 'upgrade') continue;
    set ??= new Set();
    set.add(tok);
  }
  return set;
}

/** The names a `Connection` header lists besides the usual tokens (they are hop-by-hop too). */
function listedInConnection(raw: string[]): Set<string> | undefined {
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      const more = connectionListed(raw[i + 1]);
      if (more !== undefined) {
        listed ??= new Set();
        for (const m of more) listed.add(m);
      }
    }
  }
  return listed;
}

/**
 * Whether a client's request header is relayed to the sandbox: not a hop-by-hop one (nor one
 * the client's `Connection` listed), not `Host` when the endpoint's host replaces it, and not
 * a trace header this process's active span replaces (`traced`, see trace.ts).
 */
function relayed(
  name: string,
  preserveHost: boolean,
  listed: Set<string> | undefined,
  traced: Set<string> | undefined,
): boolean {
  if (isHopByHop(name)) return false;
  if (!preserveHost && isHost(name)) return false;
  if (listed === undefined && traced === undefined) return true;
  const lower = name.toLowerCase();
  return !listed?.has(lower) && !traced?.has(lower);
}

/**
 * The request's headers as a flat array, as the forwarder sends them: hop-by-hop ones removed,
 * the active span's trace headers in place of the client's (see trace.ts), hop marker added.
 * Call it in the request's context.
 */
export function forwardRequestHeaders(req: IncomingMessage, hop: string, preserveHost: boolean): string[] {
  const raw = req.rawHeaders;
  const listed = listedInConnection(raw);
  const trace = activeTraceHeaders();
  const traced = headerNames(trace);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2)
    if (relayed(raw[i]!, preserveHost, listed, traced)) out.push(raw[i]!, raw[i + 1]!);
  if (trace !== undefined) out.push(...trace);
  out.push(HOP_MARKER, hop);
  return out;
}

/**
 * Reads header values straight from `req.rawHeaders` (names in any case, repeated lines as an
 * array). Used instead of `req.headers`, which Node only builds when someone reads it.
 */
export const rawHeadersGetter = {
  keys(raw: string[]): string[] {
    const out: string[] = [];
    for (let i = 0; i < raw.length; i += 2) out.push(raw[i]!.toLowerCase());
    return out;
  },
  get(raw: string[], key: string): string | string[] | undefined {
    let found: string | string[] | undefined;
    const n = key.length;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      if (name.length !== n || (name !== key && name.toLowerCase() !== key)) continue;
      const v = raw[i + 1]!;
      if (found === undefined) found = v;
      else if (typeof found === 'string') found = [found, v];
      else found.push(v);
    }
    return found;
  },
};

/** Whether a request announces a body (a length other than 0, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const cl = rawHeadersGetter.get(req.rawHeaders, 'content-length');
  if (cl !== undefined) return cl !== '0';
  return rawHeadersGetter.get(req.rawHeaders, 'transfer-encoding') !== undefined;
}

/** The 502/504 body: names the sandbox, the service and the endpoint, and says what to do. */
export function sandboxErrorBody(
  target: ForwardTarget,
  err: Error & { code?: string },
): { status: number; body: string } {
  const timeout = isTimeoutFailure(err);
  const status = timeout ? 504 : 502;
  const body = JSON.stringify({
    error: timeout ? 'sandbox_timeout' : 'sandbox_unreachable',
    message: `branchline: ${describeSandboxFailure(target, err)}. The request carried that sandbox's routing key, so baseline did not serve it. Start the sandbox, remove the key, or set fallbackToBaseline to serve from baseline instead.`,
    sandbox: target.sandbox,
    service: target.service,
    endpoint: target.endpoint,
    cause: err.code ?? err.message,
  });
  return { status, body };
}

const kForward = Symbol('branchline.forward');

interface ForwardableResponse extends ServerResponse {
  [kForward]?: ForwardExchange | undefined;
}
interface ForwardableRequest extends IncomingMessage {
  [kForward]?: ForwardExchange | undefined;
}

function onClientClose(this: ForwardableResponse): void {
  const ex = this[kForward];
  if (ex !== undefined && !this.writableFinished) ex.abort();
}

function onClientDrain(this: ForwardableResponse): void {
  this[kForward]?.conn?.resume();
}

function onRequestData(this: ForwardableRequest, chunk: Buffer): void {
  this[kForward]?.requestData(chunk);
}

function onRequestEnd(this: ForwardableRequest): void {
  this[kForward]?.requestEnd();
}

/**
 * The request head sent to the sandbox, as one latin1 string (Node's parser decoded the
 * client's bytes as latin1, so they go out unchanged): the client's header lines minus the
 * hop-by-hop ones, Host kept or set to the endpoint, the active span's trace headers (`trace`)
 * in place of the client's, chunked framing when the client's body had no length, and the hop
 * marker.
 */
function requestHead(
  req: IncomingMessage,
  hop: string,
  preserveHost: boolean,
  authority: string,
  chunked: boolean,
  trace: string[] | undefined,
): string {
  const raw = req.rawHeaders;
  const listed = listedInConnection(raw);
  const traced = headerNames(trace);
  // Pieces joined once: a flat string, instead of a chain of concatenations that the socket
  // write then has to flatten (fewer short-lived objects per forwarded request).
  const parts: string[] = [req.method ?? 'GET', ' ', req.url ?? '/', ' HTTP/1.1\r\n'];
  let host = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (!relayed(name, preserveHost, listed, traced)) continue;
    if (isHost(name)) host = true;
    parts.push(name, ': ', raw[i + 1]!, '\r\n');
  }
  if (!host) parts.push('host: ', authority, '\r\n');
  if (trace !== undefined)
    for (let i = 0; i < trace.length; i += 2) parts.push(trace[i]!, ': ', trace[i + 1]!, '\r\n');
  if (chunked) parts.push('transfer-encoding: chunked\r\n');
  parts.push(HOP_MARKER, ': ', hop, '\r\n\r\n');
  return parts.join('');
}

function trailerObject(flat: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!.toLowerCase();
    out[k] = out[k] === undefined ? flat[i + 1]! : `${out[k]}, ${flat[i + 1]}`;
  }
  return out;
}

/**
 * One forwarded request: writes it to an upstream connection and the sandbox's response
 * straight into the ServerResponse. A class with methods on its prototype, so a forward costs
 * one object and no closures.
 */
class ForwardExchange implements Exchange {
  conn: UpstreamConnection | undefined = undefined;
  bodyStarted = false;
  readonly isHead: boolean;
  private started = false;
  private ended = false;
  private failed = false;
  private readonly chunked: boolean;
  readonly head: string;

  constructor(
    private readonly endpoint: UpstreamEndpoint,
    private readonly req: ForwardableRequest,
    private readonly res: ForwardableResponse,
    private readonly target: ForwardTarget,
    private readonly fallback: (() => void) | undefined,
    private readonly hasBody: boolean,
    hop: string,
    preserveHost: boolean,
  ) {
    this.isHead = req.method === 'HEAD';
    this.chunked = hasBody && rawHeadersGetter.get(req.rawHeaders, 'content-length') === undefined;
    // Built now, in the request's context: its active span is the parent the sandbox continues.
    this.head = requestHead(req, hop, preserveHost, endpoint.authority, this.chunked, activeTraceHeaders());
  }

  start(conn: UpstreamConnection): void {
    this.conn = conn;
    conn.writeHead(this.head);
    if (!this.hasBody) {
      conn.requestFinished();
      return;
    }
    const req = this.req;
    // Started again after a retry: the listeners are already there.
    if (req[kForward] !== this) {
      req[kForward] = this;
      req.on('data', onRequestData);
      req.on('end', onRequestEnd);
    }
    if (req.readableEnded) this.requestEnd();
  }

  requestData(chunk: Buffer): void {
    const conn = this.conn;
    if (conn === undefined || this.failed || conn.ex !== this) return;
    this.bodyStarted = true;
    if (!conn.writeBody(chunk, this.chunked)) {
      const req = this.req;
      req.pause();
      conn.onDrain(() => req.resume());
    }
  }

  requestEnd(): void {
    const conn = this.conn;
    this.detachRequest();
    if (conn === undefined || this.failed || conn.ex !== this) return;
    conn.endBody(this.chunked, this.req.rawTrailers);
  }

  private detachRequest(): void {
    const req = this.req;
    if (req[kForward] !== this) return;
    req[kForward] = undefined;
    req.removeListener('data', onRequestData);
    req.removeListener('end', onRequestEnd);
  }

  /** The client went away: drop the upstream exchange. */
  abort(): void {
    this.failed = true;
    this.res[kForward] = undefined;
    this.detachRequest();
    const conn = this.conn;
    if (conn !== undefined) conn.destroy();
    else this.endpoint.unqueue(this);
  }

  onHead(status: number, reason: string, headers: string[], eventStream: boolean): void {
    if (this.failed) return;
    this.started = true;
    const res = this.res;
    dropPresetHeaders(res);
    try {
      if (reason) res.writeHead(status, reason, headers);
      else res.writeHead(status, headers);
    } catch (err) {
      // A header Node will not send (it validates what the sandbox sent): answer 502.
      this.started = false;
      this.conn?.destroy();
      this.onError(Object.assign(err as Error, { code: 'UPSTREAM_BAD_RESPONSE' }));
      return;
    }
    // Server-Sent Events must reach the client before the first event, not with it.
    if (eventStream) res.flushHeaders();
  }

  onData(chunk: Buffer, last: boolean): void {
    if (this.failed) return;
    const res = this.res;
    if (last) {
      // The whole (rest of the) body: one end() sends it with the head in a single write.
      this.ended = true;
      res[kForward] = undefined;
      if (this.hasBody) this.detachRequest();
      // A small body as a latin1 string (byte for byte the same): Node then sends head and
      // body as one string in one write, without queueing a Buffer next to the head.
      if (chunk.length <= SMALL_BODY) res.end(chunk.toString('latin1'), 'latin1');
      else res.end(chunk);
      return;
    }
    if (!res.write(chunk)) {
      this.conn?.pause();
      res.once('drain', onClientDrain);
    }
  }

  onEnd(trailers: string[] | undefined): void {
    if (this.failed) return;
    const res = this.res;
    res[kForward] = undefined;
    if (this.hasBody) this.detachRequest();
    if (this.ended) return;
    this.ended = true;
    if (trailers !== undefined && trailers.length > 0) res.addTrailers(trailerObject(trailers));
    res.end();
  }

  onError(err: UpstreamError | (Error & { code?: string })): void {
    this.failed = true;
    this.detachRequest();
    const res = this.res;
    res[kForward] = undefined;
    if (res.destroyed || res.writableEnded) return;
    counters.forwardFailed++;
    if (this.started || res.headersSent) {
      // Mid-body failure: the status is gone; cut the response so the client sees it failed.
      res.destroy(err);
      return;
    }
    const canFallBack = this.fallback !== undefined && !this.bodyStarted;
    logger().warn('branchline: forwarding to a sandbox failed', {
      sandbox: this.target.sandbox,
      service: this.target.service,
      endpoint: this.target.endpoint,
      err: err.code ?? err.message,
      fallback: canFallBack,
    });
    if (canFallBack) {
      this.fallback!();
      return;
    }
    const { status, body } = sandboxErrorBody(this.target, err);
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'x-branchline-error': status === 504 ? 'sandbox-timeout' : 'sandbox-unreachable',
    });
    res.end(body);
  }
}

/** Node's slot for headers set with `setHeader` (an internal symbol, looked up on first use). */
let outHeaders: symbol | null | undefined;

/**
 * The relayed response is the sandbox's own. Headers the baseline set before forwarding (Express
 * sets `X-Powered-By` on every response before any middleware runs) would otherwise be added to
 * it, or duplicated when the sandbox sets them too; and any header set that way sends
 * `writeHead` down Node's slow path, which validates and copies every relayed header again.
 * A fallback to baseline keeps them: only a relay drops them.
 */
function dropPresetHeaders(res: ServerResponse): void {
  if (outHeaders === undefined)
    outHeaders = Object.getOwnPropertySymbols(res).find((s) => s.description === 'kOutHeaders') ?? null;
  if (outHeaders !== null) {
    // null is what Node starts every response with: no header set.
    const r = res as unknown as Record<symbol, unknown>;
    if (r[outHeaders] != null) r[outHeaders] = null;
    return;
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name);
}

/**
 * Forwards incoming requests to sandbox endpoints over keep-alive connections kept per
 * endpoint (see upstream.ts). When the route table changes, the connections of endpoints no
 * longer in it are closed once idle, so new requests never ride an old connection to a
 * previous endpoint.
 */
export class SandboxForwarder {
  readonly options: ResolvedForwardOptions;
  private readonly pools = new Map<string, UpstreamEndpoint>();
  /** Endpoints dropped from the table whose connections still carry a response. */
  private readonly draining = new Set<UpstreamEndpoint>();
  /** The HTTP client that carries forwarded requests (see upstream-client.ts). */
  readonly client: UpstreamClient;
  private readonly unsubscribe: (() => void) | undefined;
  private readonly clock: CoarseClock = { now: performance.now() };
  private ticker: ReturnType<typeof setInterval> | undefined;
  private readonly tickMs: number;
  /** The hop marker's value: this service's name. */
  readonly hop: string;

  constructor(
    options: ForwardOptions & UpstreamClientOptions & { routes?: RouteSource; service?: string } = {},
  ) {
    this.options = resolveForwardOptions(options);
    this.client = resolveUpstreamClient(options.httpClient);
    this.hop = options.service ?? '1';
    const o = this.options;
    // Deadlines are checked by one interval; its period bounds how late a timeout fires.
    const shortest = Math.min(o.connectTimeoutMs, o.responseTimeoutMs, o.bodyTimeoutMs || Infinity, 4000);
    this.tickMs = Math.max(5, Math.min(250, Math.floor(shortest / 8)));
    this.unsubscribe = options.routes?.subscribe((table) => this.prune(table));
  }

  /** The connections to an endpoint (created on first use). */
  private endpoint(url: string): UpstreamEndpoint {
    let e = this.pools.get(url);
    if (e === undefined) {
      e = createUpstreamEndpoint(url, this.options, this.clock, this.client);
      this.pools.set(url, e);
      this.startTicker();
    }
    return e;
  }

  private startTicker(): void {
    if (this.ticker !== undefined) return;
    this.clock.now = performance.now();
    this.ticker = setInterval(() => this.tick(), this.tickMs);
    this.ticker.unref();
  }

  private tick(): void {
    const now = performance.now();
    this.clock.now = now;
    for (const e of this.pools.values()) e.tick(now, this.tickMs);
    for (const e of this.draining) {
      e.tick(now, this.tickMs);
      if (e.conns.length === 0) this.draining.delete(e);
    }
  }

  /** Endpoints with open connections or in use (for tests and debugging). */
  endpoints(): string[] {
    return [...this.pools.keys()];
  }

  /** Drops the endpoints that `table` no longer routes to. */
  prune(table: RouteTable): void {
    if (this.pools.size === 0) return;
    const live = new Set<string>();
    for (const rule of table.rules()) for (const e of rule.http) live.add(e);
    for (const [url, e] of this.pools) {
      if (live.has(url)) continue;
      this.pools.delete(url);
      // In-flight requests finish; no new request goes to these connections.
      e.close();
      if (e.conns.length > 0) this.draining.add(e);
    }
  }

  /**
   * Streams `req` to the sandbox and its response back into `res`. `fallback`, when given and
   * `fallbackToBaseline` is on, is called instead of answering 502/504 if the sandbox cannot be
   * reached before any of the body was sent.
   */
  forward(req: IncomingMessage, res: ServerResponse, target: ForwardTarget, fallback?: () => void): void {
    noteForwarded(target.sandbox, target.service);
    let endpoint: UpstreamEndpoint;
    try {
      endpoint = this.endpoint(target.endpoint);
    } catch (err) {
      const { status, body } = sandboxErrorBody(
        target,
        Object.assign(err as Error, { code: 'BAD_ENDPOINT' }),
      );
      counters.forwardFailed++;
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
      res.end(body);
      return;
    }
    const ex = new ForwardExchange(
      endpoint,
      req,
      res as ForwardableResponse,
      target,
      this.options.fallbackToBaseline ? fallback : undefined,
      hasBody(req),
      this.hop,
      this.options.preserveHost,
    );
    (res as ForwardableResponse)[kForward] = ex;
    res.on('close', onClientClose);
    endpoint.dispatch(ex);
  }

  /**
   * Forwards an HTTP upgrade (WebSocket) by opening a connection to the sandbox, replaying the
   * request head with the hop marker, and piping both sockets. The sandbox's 101 (or refusal)
   * reaches the client unchanged.
   */
  forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: ForwardTarget): void {
    noteForwarded(target.sandbox, target.service);
    const u = new URL(target.endpoint);
    const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const upstream: Socket =
      u.protocol === 'https:'
        ? tlsConnect({ host, port, servername: host, ALPNProtocols: ['http/1.1'] })
        : netConnect({ host, port });
    let lines = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n`;
    const raw = req.rawHeaders;
    const trace = activeTraceHeaders();
    const traced = headerNames(trace);
    for (let i = 0; i < raw.length; i += 2) {
      if (!this.options.preserveHost && isHost(raw[i]!)) continue;
      if (traced?.has(raw[i]!.toLowerCase())) continue;
      lines += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    if (!this.options.preserveHost) lines += `host: ${u.host}\r\n`;
    if (trace !== undefined)
      for (let i = 0; i < trace.length; i += 2) lines += `${trace[i]}: ${trace[i + 1]}\r\n`;
    lines += `${HOP_MARKER}: ${this.hop}\r\n\r\n`;
    const timer = setTimeout(
      () =>
        upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })),
      this.options.connectTimeoutMs,
    );
    const connectEvent = u.protocol === 'https:' ? 'secureConnect' : 'connect';
    upstream.once(connectEvent, () => {
      clearTimeout(timer);
      upstream.write(lines);
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.once('error', (err: Error & { code?: string }) => {
      clearTimeout(timer);
      counters.forwardFailed++;
      if (socket.writable && upstream.bytesRead === 0) {
        const { status, body } = sandboxErrorBody(target, err);
        socket.end(
          `HTTP/1.1 ${status} ${status === 504 ? 'Gateway Timeout' : 'Bad Gateway'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
        );
      } else socket.destroy();
    });
    socket.once('error', () => upstream.destroy());
    socket.once('close', () => upstream.destroy());
    upstream.once('close', () => socket.destroy());
  }

  /** Stops routing through this forwarder: idle connections close now, busy ones when done (at most 5 s). */
  async close(): Promise<void> {
    this.unsubscribe?.();
    const all = [...this.pools.values(), ...this.draining];
    this.pools.clear();
    this.draining.clear();
    for (const e of all) e.close();
    const deadline = performance.now() + 5000;
    while (all.some((e) => e.conns.length > 0) && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const e of all) e.destroyAll();
    if (this.ticker !== undefined) clearInterval(this.ticker);
    this.ticker = undefined;
  }
}

let shared: SandboxForwarder | undefined;

/**
 * Forwards one request to a sandbox endpoint and relays the response (the frameworks' adapters
 * call this; use it directly in a plain `node:http` server). Uses a process-wide forwarder
 * unless one is given.
 */
export function forwardToSandbox(
  req: IncomingMessage,
  res: ServerResponse,
  target: ForwardTarget,
  options: { forwarder?: SandboxForwarder; fallback?: () => void } = {},
): void {
  shared ??= new SandboxForwarder();
  const forwarder = options.forwarder ?? shared;
  forwarder.forward(req, res, target, options.fallback);
}
