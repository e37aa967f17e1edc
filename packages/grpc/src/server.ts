import { getRoutingKey, withRoutingKey } from '@branchline/core';
import { Server, type ServerOptions } from '@grpc/grpc-js';
import { type Deserializer, rawAwareSerializer, rawDeserializer } from './raw.js';
import { callKeys, routingInterceptor, ServerRouting } from './server-interceptor.js';
import type { ServerRoutingOptions } from './types.js';

type AnyHandler = (call: { metadata: import('@grpc/grpc-js').Metadata }, callback?: unknown) => unknown;

/**
 * A grpc-js Server whose methods receive request bytes raw until Branchline has decided where
 * the call goes. That is what lets a baseline forward any method, of any call type, to a
 * sandbox without knowing its message types, and keep fields an older schema does not know.
 */
class RoutedServer extends Server {
  constructor(
    options: ServerOptions,
    private readonly routing: ServerRouting,
  ) {
    super(options);
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
    this.routing.close();
    super.forceShutdown();
  }

  override tryShutdown(callback: (error?: Error) => void): void {
    this.routing.close();
    super.tryShutdown(callback);
  }
}

/**
 * Re-applies the caller's key right around the handler. The interceptor already made it the
 * active context, but OpenTelemetry's gRPC instrumentation starts handlers in a context it
 * extracts from the metadata itself; with propagators that carry no baggage that context has
 * no key. Costs a WeakMap lookup when the call has no key.
 */
function keepRoutingKey(handler: AnyHandler): AnyHandler {
  return function routedHandler(this: unknown, call, callback) {
    const key = callKeys.get(call.metadata);
    if (key === undefined || getRoutingKey() === key) return handler.call(this, call, callback);
    return withRoutingKey(key, () => handler.call(this, call, callback));
  };
}

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
  const interceptors = [routingInterceptor(r), ...(serverOptions.interceptors ?? [])];
  return new RoutedServer({ ...serverOptions, interceptors }, r);
}
