import type { IncomingMessage, ServerResponse } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { counters, logger, noteForwarded, type RouteSource, type RouteTable } from '@branchline/core';
import { type Dispatcher, Pool } from 'undici';
import { type ForwardOptions, HOP_HEADER } from './types.js';

/** Where one request is forwarded: the rule's sandbox, this service, the chosen endpoint. */
export interface ForwardTarget {
  readonly endpoint: string;
  readonly sandbox: string;
  readonly service: string;
}

interface ResolvedForwardOptions {
  connectTimeout: number;
  responseTimeout: number;
  bodyTimeout: number;
  fallbackToBaseline: boolean;
  connections: number;
  pipelining: number;
  preserveHost: boolean;
}

function positive(name: string, v: unknown, def: number, allowZero = false): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
    throw new TypeError(
      `branchline: option ${name} must be a ${allowZero ? 'non-negative' : 'positive'} number of ${name.endsWith('Timeout') ? 'milliseconds' : 'units'}, got ${JSON.stringify(v)}`,
    );
  return v;
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
    connectTimeout: positive('connectTimeout', o.connectTimeout, 2000),
    responseTimeout: positive('responseTimeout', o.responseTimeout, 30_000),
    bodyTimeout: positive('bodyTimeout', o.bodyTimeout, 300_000, true),
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

/** The request's headers as a flat array, hop-by-hop ones removed, hop marker added. */
export function forwardRequestHeaders(req: IncomingMessage, hop: string, preserveHost: boolean): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (isHopByHop(name)) {
      if (name.length === 10 && name.toLowerCase() === 'connection') listed = connectionListed(raw[i + 1]);
      continue;
    }
    if (!preserveHost && isHost(name)) continue;
    out.push(name, raw[i + 1]!);
  }
  if (listed !== undefined) {
    const kept: string[] = [];
    for (let i = 0; i < out.length; i += 2)
      if (!listed.has(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
    kept.push(HOP_HEADER, hop);
    return kept;
  }
  out.push(HOP_HEADER, hop);
  return out;
}

/** Response headers as a flat array for `writeHead`, hop-by-hop ones removed. */
function relayResponseHeaders(headers: Record<string, string | string[] | undefined>): (string | string[])[] {
  const out: (string | string[])[] = [];
  for (const name in headers) {
    switch (name) {
      case 'connection':
      case 'keep-alive':
      case 'transfer-encoding':
      case 'proxy-connection':
      case 'upgrade':
        continue;
    }
    const v = headers[name];
    if (v !== undefined) out.push(name, v);
  }
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

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'ETIMEDOUT']);

/** The 502/504 body: names the sandbox, the service and the endpoint, and says what to do. */
export function sandboxErrorBody(
  target: ForwardTarget,
  err: Error & { code?: string },
): { status: number; body: string } {
  const timeout = TIMEOUT_CODES.has(err.code ?? '');
  const status = timeout ? 504 : 502;
  const what = timeout ? 'did not answer in time' : 'could not be reached';
  const body = JSON.stringify({
    error: timeout ? 'sandbox_timeout' : 'sandbox_unreachable',
    message: `branchline: sandbox "${target.sandbox}" (service "${target.service}") at ${target.endpoint} ${what} (${err.code ?? err.message}). The request carried that sandbox's routing key, so baseline did not serve it. Start the sandbox, remove the key, or set fallbackToBaseline to serve from baseline instead.`,
    sandbox: target.sandbox,
    service: target.service,
    endpoint: target.endpoint,
    cause: err.code ?? err.message,
  });
  return { status, body };
}

const kForward = Symbol('branchline.forward');

interface ForwardableResponse extends ServerResponse {
  [kForward]?: ForwardHandler | undefined;
}

function onClientClose(this: ForwardableResponse): void {
  const h = this[kForward];
  if (h !== undefined && !this.writableFinished) h.abort();
}

function onClientDrain(this: ForwardableResponse): void {
  this[kForward]?.controller?.resume();
}

/**
 * One forwarded request, as an undici dispatch handler: it writes the sandbox's response
 * straight into the ServerResponse. A class with methods on its prototype, so a forward costs
 * one object and no closures.
 */
class ForwardHandler implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | undefined = undefined;
  private started = false;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ForwardableResponse,
    private readonly target: ForwardTarget,
    private readonly fallback: (() => void) | undefined,
    private readonly bodySent: boolean,
  ) {}

  abort(): void {
    const c = this.controller;
    if (c !== undefined && !c.aborted) c.abort(new Error('branchline: the client went away'));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
    statusMessage?: string,
  ): void {
    this.started = true;
    const res = this.res;
    if (statusMessage) res.writeHead(statusCode, statusMessage, relayResponseHeaders(headers));
    else res.writeHead(statusCode, relayResponseHeaders(headers));
    // Server-Sent Events must reach the client before the first event, not with it.
    const ct = headers['content-type'];
    if (typeof ct === 'string' && ct.startsWith('text/event-stream')) res.flushHeaders();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', onClientDrain);
    }
  }

  onResponseEnd(
    _controller: Dispatcher.DispatchController,
    trailers: Record<string, string | string[] | undefined>,
  ): void {
    const res = this.res;
    res[kForward] = undefined;
    for (const _ in trailers) {
      res.addTrailers(trailers as Record<string, string>);
      break;
    }
    res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error & { code?: string }): void {
    const res = this.res;
    res[kForward] = undefined;
    if (res.destroyed || res.writableEnded) return;
    if (this.started || res.headersSent) {
      // Mid-body failure: the status is gone; cut the response so the client sees it failed.
      counters.forwardFailed++;
      res.destroy(err);
      return;
    }
    counters.forwardFailed++;
    const canFallBack =
      this.fallback !== undefined &&
      (!this.bodySent || !(this.req as { readableDidRead?: boolean }).readableDidRead);
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

/**
 * Forwards incoming requests to sandbox endpoints over one keep-alive undici Pool per endpoint.
 * When the route table changes, pools of endpoints no longer in it are closed, so new requests
 * never ride an old connection to a previous endpoint.
 */
export class SandboxForwarder {
  readonly options: ResolvedForwardOptions;
  private readonly pools = new Map<string, Pool>();
  private readonly unsubscribe: (() => void) | undefined;
  /** The hop marker's value: this service's name. */
  readonly hop: string;

  constructor(options: ForwardOptions & { routes?: RouteSource; service?: string } = {}) {
    this.options = resolveForwardOptions(options);
    this.hop = options.service ?? '1';
    this.unsubscribe = options.routes?.subscribe((table) => this.prune(table));
  }

  /** The keep-alive pool for an endpoint (created on first use). */
  pool(endpoint: string): Pool {
    let p = this.pools.get(endpoint);
    if (p === undefined || p.closed || p.destroyed) {
      const o = this.options;
      p = new Pool(endpoint, {
        connections: o.connections,
        pipelining: o.pipelining,
        connect: { timeout: o.connectTimeout },
        headersTimeout: o.responseTimeout,
        bodyTimeout: o.bodyTimeout,
      });
      this.pools.set(endpoint, p);
    }
    return p;
  }

  /** Endpoints with an open pool (for tests and debugging). */
  endpoints(): string[] {
    return [...this.pools.keys()];
  }

  /** Closes the pools of endpoints that `table` no longer routes to. */
  prune(table: RouteTable): void {
    if (this.pools.size === 0) return;
    const live = new Set<string>();
    for (const rule of table.rules()) for (const e of rule.http) live.add(e);
    for (const [endpoint, pool] of this.pools) {
      if (live.has(endpoint)) continue;
      this.pools.delete(endpoint);
      // In-flight requests finish; the pool takes no new ones.
      pool.close().catch(() => {});
    }
  }

  /**
   * Streams `req` to the sandbox and its response back into `res`. `fallback`, when given and
   * `fallbackToBaseline` is on, is called instead of answering 502/504 if the sandbox cannot be
   * reached before any of the body was sent.
   */
  forward(req: IncomingMessage, res: ServerResponse, target: ForwardTarget, fallback?: () => void): void {
    noteForwarded(target.sandbox, target.service);
    const body = hasBody(req);
    const handler = new ForwardHandler(
      req,
      res as ForwardableResponse,
      target,
      this.options.fallbackToBaseline ? fallback : undefined,
      body,
    );
    (res as ForwardableResponse)[kForward] = handler;
    res.on('close', onClientClose);
    const method = req.method ?? 'GET';
    this.pool(target.endpoint).dispatch(
      {
        path: req.url ?? '/',
        method: method as Dispatcher.HttpMethod,
        headers: forwardRequestHeaders(req, this.hop, this.options.preserveHost),
        body: body ? req : null,
      },
      handler,
    );
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
    for (let i = 0; i < raw.length; i += 2) {
      if (!this.options.preserveHost && isHost(raw[i]!)) continue;
      lines += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    if (!this.options.preserveHost) lines += `host: ${u.host}\r\n`;
    lines += `${HOP_HEADER}: ${this.hop}\r\n\r\n`;
    const timer = setTimeout(
      () =>
        upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })),
      this.options.connectTimeout,
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

  async close(): Promise<void> {
    this.unsubscribe?.();
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => {})));
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
