// Every use of grpc-js internals in this package, in one place, each with its public-API
// fallback. Two speed-ups lean on grpc-js's private shape:
//
// - the stream-level relay (server.ts, stream-relay.ts) replaces Server's per-stream entry
//   points (`_streamHandler`, `_channelzHandler`) and tells grpc-js about streams it took
//   (`onStreamOpened`); without it a routed server forwards through grpc-js's public client
//   and server API (ForwardedCall in forward.ts), slower but complete;
// - the client interceptor returns a plain object grpc-js drives like an InterceptingCall
//   (KeyedCall in client-interceptor.ts); without it, it returns a real InterceptingCall.
//
// Both are used when the installed grpc-js is 1.10 or a later 1.x and has the expected shape;
// `BRANCHLINE_GRPC_INTERNALS=off` turns both off (to rule them out, or on a grpc-js release that
// reshaped them in a way the shape checks cannot see).

import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { createRequire } from 'node:module';
import { logger } from '@branchline/core/transport';
import { InterceptingCall, type Server } from '@grpc/grpc-js';

/**
 * grpc-js's per-stream entry points (one is used, depending on channelz). Checked in the first
 * and last release of every minor from 1.10.0 to 1.14.7 (GRPC_JS_VERIFIED; run on 1.10.11 and
 * 1.14.7): 1.10.x calls them as `(stream, headers)`, 1.11 and later as
 * `(extraInterceptors, stream, headers)`. The hook goes by the handler's arity, and leaves a
 * handler of any other shape alone. The package tests fail, naming the handler, when a grpc-js
 * release drops or reshapes them.
 */
export const STREAM_HANDLERS = ['_streamHandler', '_channelzHandler'] as const;
export const GRPC_JS_VERIFIED = '>=1.10.0 <=1.14.7';

/** The installed grpc-js's version, or undefined when its package.json cannot be read. */
export const GRPC_JS_VERSION: string | undefined = (() => {
  try {
    return (createRequire(import.meta.url)('@grpc/grpc-js/package.json') as { version?: string }).version;
  } catch {
    return undefined;
  }
})();

/**
 * Whether grpc-js internals may be used: not turned off by `BRANCHLINE_GRPC_INTERNALS=off`, and
 * grpc-js 1.10 or a later 1.x (a version that cannot be read is left to the shape checks).
 */
export function grpcInternalsEnabled(version: string | undefined = GRPC_JS_VERSION): boolean {
  const env = process.env.BRANCHLINE_GRPC_INTERNALS?.trim().toLowerCase();
  if (env === 'off' || env === '0' || env === 'false') return false;
  if (version === undefined) return true;
  const m = /^(\d+)\.(\d+)\./.exec(version);
  if (!m) return true;
  return Number(m[1]) === 1 && Number(m[2]) >= 10;
}

// biome-ignore lint/suspicious/noExplicitAny: a grpc-js internal, called with its own arguments
type StreamHandler = (this: Server, ...args: any[]) => void;

/** How to find the stream and headers among a grpc-js stream handler's arguments; undefined: unknown shape. */
export function streamHandlerShape(handler: unknown): 'stream-first' | 'extra-first' | undefined {
  if (typeof handler !== 'function') return undefined;
  if (handler.length === 2) return 'stream-first';
  if (handler.length === 3) return 'extra-first';
  return undefined;
}

/**
 * Tells grpc-js about a stream the relay took, as its own handler does first thing: with
 * `grpc.max_connection_idle_ms` set, grpc-js (1.11 and later) closes a connection it counts no
 * open stream on, even while calls are being relayed over it. 1.10 has no idle timeout and no
 * such method.
 */
function countStream(server: Server, stream: ServerHttp2Stream): void {
  (server as unknown as { onStreamOpened?: (s: ServerHttp2Stream) => void }).onStreamOpened?.(stream);
}

/** Where a stream hook leaves what it learned for the call grpc-js then builds (see hookStreamHandlers). */
export interface HandoffSlot<H> {
  handoff: H | undefined;
}

/**
 * Puts `route` in front of grpc-js's per-stream handler. For every new stream it runs first:
 * undefined means it took the stream (grpc-js only counts it as open); anything else is set in
 * `slot.handoff` while grpc-js's own handler runs for the stream, synchronously, and cleared
 * after. False (and nothing changed) when internals are off or the handlers are not there in a
 * known shape: the caller then goes by the public API.
 */
export function hookStreamHandlers<H>(
  server: Server,
  route: (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => H | undefined,
  slot: HandoffSlot<H>,
): boolean {
  if (!grpcInternalsEnabled()) {
    logger().debug('branchline: grpc-js internals are off; forwarding through the grpc-js API', {
      grpcJs: GRPC_JS_VERSION,
    });
    return false;
  }
  const target = server as unknown as Record<string, StreamHandler | undefined>;
  const originals = STREAM_HANDLERS.map((name) => target[name]);
  if (originals.some((h) => streamHandlerShape(h) === undefined)) {
    logger().debug(
      'branchline: grpc-js has no per-stream handler this version can hook; forwarding through grpc-js',
      { hooks: STREAM_HANDLERS, verified: GRPC_JS_VERIFIED, grpcJs: GRPC_JS_VERSION },
    );
    return false;
  }
  STREAM_HANDLERS.forEach((name, i) => {
    const original = originals[i]!;
    target[name] =
      streamHandlerShape(original) === 'extra-first'
        ? function relayingStreamHandler(
            this: Server,
            extra: unknown,
            stream: ServerHttp2Stream,
            headers: IncomingHttpHeaders,
          ) {
            const handoff = route(stream, headers);
            if (handoff === undefined) return countStream(this, stream);
            slot.handoff = handoff;
            try {
              original.call(this, extra, stream, headers);
            } finally {
              // Unclaimed when grpc-js answered the stream itself (unknown method, bad content type).
              slot.handoff = undefined;
            }
          }
        : function relayingStreamHandler(
            this: Server,
            stream: ServerHttp2Stream,
            headers: IncomingHttpHeaders,
          ) {
            const handoff = route(stream, headers);
            if (handoff === undefined) return countStream(this, stream);
            slot.handoff = handoff;
            try {
              original.call(this, stream, headers);
            } finally {
              slot.handoff = undefined;
            }
          };
  });
  return true;
}

/**
 * The methods grpc-js calls on what an interceptor returns (InterceptingCallInterface in
 * 1.10-1.14; getAuthContext since 1.11). KeyedCall implements each of them by passing it on.
 */
export const DELEGATED_CALL_METHODS = [
  'cancelWithStatus',
  'getPeer',
  'start',
  'sendMessageWithContext',
  'sendMessage',
  'startRead',
  'halfClose',
  'getAuthContext',
] as const;

/** InterceptingCall's own helpers, which are not part of the interface. */
const INTERCEPTING_CALL_HELPERS = new Set([
  'constructor',
  'processPendingMessage',
  'processPendingHalfClose',
]);

/**
 * Whether this grpc-js's InterceptingCall has no public method KeyedCall lacks. When a release
 * adds one, the interceptor goes back to wrapping calls in an InterceptingCall.
 */
export function keyedCallCovers(proto: object = InterceptingCall.prototype): boolean {
  const known = new Set<string>(DELEGATED_CALL_METHODS);
  return Object.getOwnPropertyNames(proto).every((m) => INTERCEPTING_CALL_HELPERS.has(m) || known.has(m));
}

/** Whether the client interceptor may hand grpc-js a KeyedCall instead of an InterceptingCall. */
export function keyedCallUsable(): boolean {
  return grpcInternalsEnabled() && keyedCallCovers();
}
