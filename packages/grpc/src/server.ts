import type { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { contextWithRoutingKey, getRoutingKey } from '@branchline/core';
import { activeContext, logger, runInContext } from '@branchline/core/transport';
import { Server, type ServerOptions } from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import { type Deserializer, rawAwareSerializer, rawDeserializer } from './raw.js';
import {
  CALL_CONTEXT,
  type RoutedMetadata,
  routingInterceptor,
  ServerRouting,
} from './server-interceptor.js';
import { StreamRelay } from './stream-relay.js';
import type { ServerRoutingOptions } from './types.js';

type AnyHandler = (call: { metadata: import('@grpc/grpc-js').Metadata }, callback?: unknown) => unknown;

/**
 * A grpc-js Server whose methods receive request bytes raw until Branchline has decided where
 * the call goes. That is what lets a baseline forward any method, of any call type, to a
 * sandbox without knowing its message types, and keep fields an older schema does not know.
 */
class RoutedServer extends Server {
  private readonly relay: StreamRelay | undefined;

  constructor(
    options: ServerOptions,
    private readonly routing: ServerRouting,
  ) {
    super(options);
    this.relay = installStreamRelay(this, routing);
  }

  // The handler and codec types are whatever the service definition says; Branchline only wraps them.
  // biome-ignore lint/suspicious/noExplicitAny: mirrors Server.register's generic signature
  override register(name: string, handler: any, serialize: any, deserialize: any, type: string): boolean {
    return super.register(
      name,
      keepRoutingKey(handler as AnyHandler),
      rawAwareSerializer(serialize as (value: unknown) => Buffer),
      rawDeserializer(deserialize as Deserializer),
      type,
    );
  }

  override forceShutdown(): void {
    this.relay?.close();
    this.routing.close();
    super.forceShutdown();
  }

  override tryShutdown(callback: (error?: Error) => void): void {
    this.relay?.close();
    this.routing.close();
    super.tryShutdown(callback);
  }
}

/**
 * grpc-js's per-stream entry points (one is used, depending on channelz). They are grpc-js
 * internals, checked in the first and last release of every minor from 1.10.0 to 1.14.7
 * (GRPC_JS_VERIFIED; run on 1.10.11 and 1.14.7): 1.10.x calls them as `(stream, headers)`, 1.11
 * and later as `(extraInterceptors, stream, headers)`.
 * The hook goes by the handler's arity, and leaves a handler of any other shape alone. The
 * package tests fail, naming the handler, when a grpc-js release drops or reshapes them.
 */
export const STREAM_HANDLERS = ['_streamHandler', '_channelzHandler'] as const;
export const GRPC_JS_VERIFIED = '>=1.10.0 <=1.14.7';

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
 * open stream on, even while calls are being relayed over it. A grpc-js internal too; 1.10 has
 * no idle timeout and no such method.
 */
function countStream(server: Server, stream: ServerHttp2Stream): void {
  (server as unknown as { onStreamOpened?: (s: ServerHttp2Stream) => void }).onStreamOpened?.(stream);
}

/**
 * Puts the stream-level relay in front of grpc-js's stream handler, so a call that goes to a
 * sandbox is relayed there before grpc-js parses it. The relay reads the key once; for a call it
 * leaves to grpc-js, what it found is handed to the routing interceptor grpc-js creates for that
 * stream, synchronously inside the original handler, so nothing is read or counted twice. When
 * the entry points are not there, or the relay does not apply (TLS to sandboxes, forwarding off,
 * no service name), the interceptor reads the key and forwards through grpc-js.
 */
function installStreamRelay(server: Server, routing: ServerRouting): StreamRelay | undefined {
  if (!routing.forward || routing.service === undefined || routing.sandbox !== undefined) return undefined;
  if (!routing.plainText) return undefined;
  const target = server as unknown as Record<string, StreamHandler | undefined>;
  const originals = STREAM_HANDLERS.map((name) => target[name]);
  if (originals.some((h) => streamHandlerShape(h) === undefined)) {
    logger().debug(
      'branchline: grpc-js has no per-stream handler this version can hook; forwarding through grpc-js',
      {
        hooks: STREAM_HANDLERS,
        verified: GRPC_JS_VERIFIED,
      },
    );
    return undefined;
  }
  const relay = new StreamRelay(routing, routing.service);
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
            const handoff = relay.route(stream, headers);
            if (handoff === undefined) return countStream(this, stream);
            routing.handoff = handoff;
            try {
              original.call(this, extra, stream, headers);
            } finally {
              // Unclaimed when grpc-js answered the stream itself (unknown method, bad content type).
              routing.handoff = undefined;
            }
          }
        : function relayingStreamHandler(
            this: Server,
            stream: ServerHttp2Stream,
            headers: IncomingHttpHeaders,
          ) {
            const handoff = relay.route(stream, headers);
            if (handoff === undefined) return countStream(this, stream);
            routing.handoff = handoff;
            try {
              original.call(this, stream, headers);
            } finally {
              routing.handoff = undefined;
            }
          };
  });
  return relay;
}

/**
 * Re-applies the caller's key right around the handler. The interceptor already made it the
 * active context, but OpenTelemetry's gRPC instrumentation starts handlers in a context it
 * extracts from the metadata itself, and binds the call's event listeners to it; with
 * propagators that carry no baggage (B3 only, say) that context has no key. Costs a property
 * read when the call has no key, and a context comparison when it has.
 */
function keepRoutingKey(handler: AnyHandler): AnyHandler {
  return function routedHandler(this: unknown, call, callback) {
    const given = (call.metadata as RoutedMetadata)[CALL_CONTEXT];
    if (given === undefined) return handler.call(this, call, callback);
    const active = activeContext();
    if (active === given) return handler.call(this, call, callback);
    const key = getRoutingKey(given);
    if (key === undefined || getRoutingKey(active) === key) return handler.call(this, call, callback);
    const ctx = contextWithRoutingKey(active, key);
    bindListeners(call as unknown as EventEmitter, ctx);
    return runInContext(ctx, () => handler.call(this, call, callback));
  };
}

const ADD = ['on', 'addListener', 'prependListener'] as const;
const REMOVE = ['off', 'removeListener'] as const;

/**
 * Makes listeners the handler attaches to `call` run in `ctx`. Layered over whatever binding is
 * already there (OpenTelemetry's), so they see its span and the key; removal still works.
 */
function bindListeners(call: EventEmitter, ctx: Context): void {
  const bound = new WeakMap<Listener, Listener>();
  const bind = (l: Listener): Listener => {
    let b = bound.get(l);
    if (!b) {
      b = function boundListener(this: unknown, ...args: unknown[]) {
        return runInContext(ctx, () => l.apply(this, args));
      };
      bound.set(l, b);
    }
    return b;
  };
  const target = call as unknown as Record<string, (event: string | symbol, l: Listener) => EventEmitter>;
  for (const name of ADD) {
    const add = target[name]!;
    target[name] = function (this: EventEmitter, event, l) {
      return typeof l === 'function' ? add.call(this, event, bind(l)) : add.call(this, event, l);
    };
  }
  for (const name of REMOVE) {
    const remove = target[name]!;
    target[name] = function (this: EventEmitter, event, l) {
      return remove.call(this, event, bound.get(l) ?? l);
    };
  }
}

type Listener = (...args: unknown[]) => unknown;

/**
 * Creates a grpc-js `Server` with Branchline routing: handlers run with the caller's routing key
 * as the active context, and a baseline instance forwards calls whose key routes this service to
 * a sandbox (any method, all four call types, as raw bytes). Use it exactly like `new Server()`.
 */
export function createRoutedServer(
  serverOptions: ServerOptions = {},
  routing: ServerRoutingOptions = {},
): Server {
  const r = new ServerRouting(routing);
  const others = serverOptions.interceptors ?? [];
  const interceptors = [routingInterceptor(r, others.length === 0), ...others];
  return new RoutedServer({ ...serverOptions, interceptors }, r);
}
