import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import {
  counters,
  decideIncoming,
  HOP_MARKER,
  type IncomingDecision,
  logger,
  nodeHeadersGetter,
  noteForwarded,
  RouteTable,
} from '@branchline/core/transport';
import type { ServerRouting } from './server-interceptor.js';

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM } = constants;

/** `host:port`, `[v6]:port`, or the same with grpc-js's `dns:` / `ipv4:` / `ipv6:` scheme. */
const PLAIN_TARGET = /^(?:(?:dns|ipv4|ipv6):(?:\/\/\/)?)?((?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5})$/;

function authorityOf(endpoint: string): string | undefined {
  return PLAIN_TARGET.exec(endpoint)?.[1];
}

/**
 * What the stream hook learned about a call it leaves to grpc-js: the key it read (once, with
 * bad input counted then) and, for a keyed call, the routing decision. The routing interceptor
 * grpc-js builds for the same stream takes it instead of reading the metadata again.
 */
export interface Handoff {
  readonly key: string | undefined;
  readonly decision?: IncomingDecision;
}

const NO_KEY: Handoff = Object.freeze({ key: undefined });

/**
 * Forwards calls at the HTTP/2 stream level, before grpc-js parses them: headers, DATA bytes
 * and trailers are relayed as they are, like a gRPC proxy does. It skips grpc-js's server and
 * client layers (about half the cost of a forwarding hop), reaches methods the baseline does
 * not implement, and keeps the caller's compression. Used by createRoutedServer for plain-text
 * endpoints; TLS endpoints and unusual targets go through the grpc-js relay (ForwardedCall).
 */
export class StreamRelay {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly routing: ServerRouting,
    private readonly service: string,
  ) {
    this.unsubscribe = routing.runtime.routes.subscribe((table) => this.closeUnused(table));
  }

  /**
   * Reads the call's key once and decides. Relays the stream and returns undefined when the key
   * routes this service to a plain-text sandbox endpoint; otherwise returns what it found, for
   * the interceptor on grpc-js's path (which serves, counts a prevented loop, or forwards
   * through grpc-js).
   */
  route(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Handoff | undefined {
    const r = this.routing;
    if (headers.baggage === undefined && r.keys.sources.length === 1) return NO_KEY;
    const table = r.runtime.routes.table ?? RouteTable.empty;
    const forwarded = r.sandbox === undefined && headers[HOP_MARKER] !== undefined;
    // A header seen on the last call is a string compare in the key reader (core's memo).
    const key = r.keys.read(headers, nodeHeadersGetter);
    if (key === undefined) return NO_KEY;
    const decision = decideIncoming({
      table,
      service: this.service,
      sandbox: r.sandbox,
      key,
      forwarded,
      transport: 'grpc',
    });
    if (decision.action !== 'forward') return { key, decision };
    // grpc-js answers a request that is not gRPC; an endpoint with a scheme needs its relay.
    const contentType = headers['content-type'];
    const authority = authorityOf(decision.endpoint);
    if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc') || !authority)
      return { key, decision };
    const path = headers[':path'] as string;
    r.notifyForward(path, key, decision.rule.sandbox, decision.endpoint);
    noteForwarded(decision.rule.sandbox, this.service);
    this.relay(stream, headers, authority, decision.rule.sandbox, decision.endpoint);
    return undefined;
  }

  /**
   * One HTTP/2 session per sandbox endpoint, reused by every relayed call (node:http2 turns
   * Nagle off on its sockets itself).
   */
  private session(authority: string): ClientHttp2Session {
    let s = this.sessions.get(authority);
    if (s && !s.closed && !s.destroyed) return s;
    s = connect(`http://${authority}`);
    const current = s;
    const forget = () => {
      if (this.sessions.get(authority) === current) this.sessions.delete(authority);
    };
    s.on('error', forget);
    s.on('close', forget);
    s.on('goaway', forget);
    // A pooled connection must not keep the process alive on its own.
    s.unref();
    this.sessions.set(authority, s);
    return s;
  }

  private relay(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    authority: string,
    sandbox: string,
    endpoint: string,
  ): void {
    // The caller's header object becomes the request's (grpc-js never sees this stream): its
    // pseudo-headers are a gRPC request's already; the authority and scheme become the sandbox
    // endpoint's, and the hop marker is added.
    const request = headers as OutgoingHttpHeaders;
    request[':authority'] = authority;
    request[':scheme'] = 'http';
    request[HOP_MARKER] = this.service;

    let trailers: OutgoingHttpHeaders | undefined;
    let done = false;
    const fail = (reason: string) => {
      if (done) return;
      done = true;
      counters.forwardFailed++;
      const details =
        `branchline: could not reach sandbox "${sandbox}" for service "${this.service}" at ${endpoint}: ${reason}. ` +
        'Check that the sandbox is running and that its registered gRPC endpoint is right.';
      const status = { 'grpc-status': '14', 'grpc-message': encodeURI(details) };
      if (stream.destroyed || stream.closed) return;
      if (!stream.headersSent) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', ...status },
          { endStream: true },
        );
      } else {
        trailers = status;
        if (!stream.writableEnded) stream.end();
      }
    };

    let out: ClientHttp2Stream;
    try {
      out = this.session(authority).request(request);
    } catch (err) {
      fail((err as Error).message);
      return;
    }
    stream.on('error', () => {});
    out.on('error', (err) => {
      if (!stream.headersSent || trailers === undefined) fail(err.message);
    });

    // Caller → sandbox: DATA bytes as they come (gRPC's length-prefixed frames untouched),
    // pausing the caller while the sandbox's side is full.
    const resumeCaller = () => stream.resume();
    stream.on('data', (chunk: Buffer) => {
      if (!out.write(chunk)) {
        stream.pause();
        out.once('drain', resumeCaller);
      }
    });
    stream.on('end', () => {
      if (!out.writableEnded) out.end();
    });

    // Sandbox → caller. Header and trailer objects are fresh per event and passed on as they
    // are (respond() takes the `:status` the response headers carry).
    out.on('response', (h, flags) => {
      if (stream.destroyed || stream.closed) return;
      if (flags & NGHTTP2_FLAG_END_STREAM) {
        // A trailers-only response: the status is in these headers.
        done = true;
        stream.respond(h, { endStream: true });
      } else {
        stream.respond(h, { waitForTrailers: true });
      }
    });
    out.on('trailers', (t) => {
      trailers = t;
    });
    const resumeSandbox = () => out.resume();
    out.on('data', (chunk: Buffer) => {
      if (!stream.write(chunk)) {
        out.pause();
        stream.once('drain', resumeSandbox);
      }
    });
    out.on('end', () => {
      if (done) return;
      done = true;
      if (!stream.destroyed && !stream.closed && !stream.writableEnded) stream.end();
    });
    stream.on('wantTrailers', () => {
      stream.sendTrailers(
        trailers ?? {
          'grpc-status': '13',
          'grpc-message': encodeURI('branchline: the sandbox sent no status'),
        },
      );
    });

    // Cancellation, both ways: a caller that goes away cancels the sandbox's stream, and a
    // sandbox that resets its stream resets the caller's.
    stream.on('close', () => {
      if (!out.closed && !out.destroyed) out.close(NGHTTP2_CANCEL);
    });
    out.on('close', () => {
      if (done || stream.closed || stream.destroyed) return;
      if (!stream.headersSent)
        fail(out.rstCode ? `the stream was reset (code ${out.rstCode})` : 'connection closed');
      else stream.close(out.rstCode || NGHTTP2_CANCEL);
    });
  }

  private closeUnused(table: RouteTable): void {
    if (this.sessions.size === 0) return;
    const live = new Set<string>();
    for (const rule of table.rules())
      if (rule.service === this.service)
        for (const ep of rule.grpc) {
          const a = authorityOf(ep);
          if (a !== undefined) live.add(a);
        }
    for (const [authority, s] of this.sessions) {
      if (live.has(authority)) continue;
      this.sessions.delete(authority);
      logger().debug('branchline: closing the connection to a sandbox endpoint no rule uses', { authority });
      // Graceful: streams in flight finish first.
      s.close();
    }
  }

  close(): void {
    this.unsubscribe();
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
  }
}
