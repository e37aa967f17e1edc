import type { EventEmitter } from 'node:events';
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { contextWithRoutingKey, getRoutingKey } from '@branchline/core';
import { activeContext, logger, runInContext } from '@branchline/core/transport';
import { Server, type ServerOptions } from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import { hookStreamHandlers } from './internals.js';
import { type Deserializer, rawAwareSerializer, rawDeserializer } from './raw.js';
import {
  CALL_CONTEXT,
  type RoutedMetadata,
  routingInterceptor,
  ServerRouting,
} from './server-interceptor.js';
import { StreamRelay } from './stream-relay.js';
import type { ServerRoutingOptions } from './types.js';

/** Kept here for code that imported them from this module. */
export { GRPC_JS_VERIFIED, STREAM_HANDLERS, streamHandlerShape } from './internals.js';

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
 * Puts the stream-level relay in front of grpc-js's stream handler (see hookStreamHandlers in
 * internals.ts), so a call that goes to a sandbox is relayed there before grpc-js parses it. The
 * relay reads the key once; for a call it leaves to grpc-js, what it found is handed to the
 * routing interceptor grpc-js creates for that stream, so nothing is read or counted twice. When
 * the internals cannot be used, or the relay does not apply (TLS to sandboxes, forwarding off,
 * no service name), the interceptor reads the key and forwards through grpc-js.
 */
function installStreamRelay(server: Server, routing: ServerRouting): StreamRelay | undefined {
  if (!routing.forward || routing.service === undefined || routing.sandbox !== undefined) return undefined;
  if (!routing.plainText) return undefined;
  const relay = new StreamRelay(routing, routing.service);
  if (hookStreamHandlers(server, (stream, headers) => relay.route(stream, headers), routing)) return relay;
  relay.close();
  return undefined;
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
