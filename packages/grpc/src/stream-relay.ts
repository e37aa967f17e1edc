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
  logger,
  nodeHeadersGetter,
  noteForwarded,
  type RouteTable,
} from '@branchline/core';
import { HOP_METADATA } from './metadata.js';
import type { ServerRouting } from './server-interceptor.js';

const { NGHTTP2_CANCEL, NGHTTP2_FLAG_END_STREAM } = constants;

/** `host:port`, `[v6]:port`, or the same with grpc-js's `dns:` / `ipv4:` / `ipv6:` scheme. */
const PLAIN_TARGET = /^(?:(?:dns|ipv4|ipv6):(?:\/\/\/)?)?((?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5})$/;

function authorityOf(endpoint: string): string | undefined {
  return PLAIN_TARGET.exec(endpoint)?.[1];
}

/**
 * Forwards calls at the HTTP/2 stream level, before grpc-js parses them: headers, DATA bytes
 * and trailers are piped as they are, like a gRPC proxy does. It skips grpc-js's server and
 * client layers (about half the cost of a forwarding hop), reaches methods the baseline does
 * not implement, and keeps the caller's compression. Used by createRoutedServer for plain-text
 * endpoints; TLS endpoints and unusual targets go through the grpc-js relay (ForwardedCall).
 */
/**
 * Reads the key without counting bad input: a call this path leaves to grpc-js has its headers
 * read again by the interceptor, which counts (and warns) once.
 */
function readUncounted(r: ServerRouting, headers: IncomingHttpHeaders): string | undefined {
  const { invalidKey, malformedBaggage, oversizeBaggage } = counters;
  const key = r.keys.read(headers, nodeHeadersGetter);
  if (key === undefined) {
    counters.invalidKey = invalidKey;
    counters.malformedBaggage = malformedBaggage;
    counters.oversizeBaggage = oversizeBaggage;
  }
  return key;
}

export class StreamRelay {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly routing: ServerRouting,
    private readonly service: string,
  ) {
    this.unsubscribe = routing.runtime.routes.subscribe((table) => this.closeUnused(table));
  }

  /** Relays the stream when its key routes this service to a sandbox; false leaves it to grpc-js. */
  tryForward(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
    const r = this.routing;
    if (headers.baggage === undefined && r.keys.sources.length === 1) return false;
    const key = readUncounted(r, headers);
    if (key === undefined) return false;
    const table = r.runtime.routes.table;
    if (table === undefined) return false;
    const contentType = headers['content-type'];
    if (typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) return false;
    const decision = decideIncoming({
      table,
      service: this.service,
      sandbox: r.sandbox,
      key,
      forwarded: r.sandbox === undefined && headers[HOP_METADATA] !== undefined,
      transport: 'grpc',
    });
    // Serving (and counting a prevented loop) is the interceptor's job, on grpc-js's path.
    if (decision.action !== 'forward') return false;
    const authority = authorityOf(decision.endpoint);
    if (authority === undefined) return false;
    const path = String(headers[':path']);
    r.notifyForward(path, key, decision.rule.sandbox, decision.endpoint);
    noteForwarded(decision.rule.sandbox, this.service);
    this.relay(stream, headers, path, authority, decision.rule.sandbox, decision.endpoint);
    return true;
  }

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
    path: string,
    authority: string,
    sandbox: string,
    endpoint: string,
  ): void {
    const request: OutgoingHttpHeaders = {};
    for (const name in headers) if (name.charCodeAt(0) !== 58 /* ':' */) request[name] = headers[name];
    request[':method'] = 'POST';
    request[':path'] = path;
    request[':authority'] = authority;
    request[HOP_METADATA] = this.service;

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
      out = this.session(authority).request(request, { waitForTrailers: false });
    } catch (err) {
      fail((err as Error).message);
      return;
    }
    stream.on('error', () => {});
    out.on('error', (err) => {
      if (!stream.headersSent || trailers === undefined) fail(err.message);
    });

    // Caller → sandbox: request bytes, with the pipe's backpressure.
    stream.pipe(out);

    // Sandbox → caller.
    out.on('response', (h, flags) => {
      if (stream.destroyed || stream.closed) return;
      const response: OutgoingHttpHeaders = { ':status': h[':status'] ?? 200 };
      for (const name in h) if (name.charCodeAt(0) !== 58) response[name] = h[name];
      if (flags & NGHTTP2_FLAG_END_STREAM) {
        done = true;
        stream.respond(response, { endStream: true });
      } else {
        stream.respond(response, { waitForTrailers: true });
      }
    });
    out.on('trailers', (t) => {
      trailers = {};
      for (const name in t) if (name.charCodeAt(0) !== 58) trailers[name] = t[name];
    });
    out.on('data', (chunk: Buffer) => {
      if (!stream.write(chunk)) {
        out.pause();
        stream.once('drain', () => out.resume());
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
