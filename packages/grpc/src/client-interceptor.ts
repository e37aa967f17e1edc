import { getRoutingKey } from '@branchline/core';
import { getBaggageKey, injectRoutingKey } from '@branchline/core/transport';
import {
  InterceptingCall,
  type InterceptingListener,
  type Interceptor,
  type Metadata,
  type NextCall,
  type StatusObject,
} from '@grpc/grpc-js';
import { grpcMetadataGetter, grpcMetadataSetter } from './metadata.js';
import type { ClientInterceptorOptions } from './types.js';

type Next = ReturnType<NextCall>;

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

const USE_KEYED_CALL = keyedCallCovers();

/**
 * A pass-through call that adds the key to the metadata it is started with, and otherwise hands
 * every method to the next call, as if no interceptor were there. grpc-js's InterceptingCall
 * does the same with a requester, but allocates a listener chain, bound functions and closures
 * for every call to support requesters that continue asynchronously; adding a header never does.
 */
class KeyedCall {
  constructor(
    private readonly next: Next,
    private readonly key: string,
    private readonly baggageKey: string,
  ) {}

  start(metadata: Metadata, listener?: Partial<InterceptingListener>): void {
    injectRoutingKey(metadata, grpcMetadataGetter, grpcMetadataSetter, this.key, this.baggageKey);
    this.next.start(metadata, listener);
  }
  cancelWithStatus(code: StatusObject['code'], details: string): void {
    this.next.cancelWithStatus(code, details);
  }
  getPeer(): string {
    return this.next.getPeer();
  }
  // biome-ignore lint/suspicious/noExplicitAny: grpc-js's MessageContext and message types
  sendMessageWithContext(context: any, message: any): void {
    this.next.sendMessageWithContext(context, message);
  }
  sendMessage(message: unknown): void {
    this.next.sendMessage(message);
  }
  startRead(): void {
    this.next.startRead();
  }
  halfClose(): void {
    this.next.halfClose();
  }
  getAuthContext() {
    // grpc-js 1.10 has no auth context.
    return (this.next as Partial<Next>).getAuthContext?.() ?? null;
  }
}

/**
 * A client interceptor that writes the active routing key into the call's `baggage` metadata,
 * merged with baggage already there (OpenTelemetry's, the application's), never duplicated.
 * A call made outside any routing context passes through untouched.
 *
 * Attach it only to clients of your own services: that is how an application declares a
 * target internal (the key never leaves for third-party APIs).
 */
export function createClientInterceptor(options: ClientInterceptorOptions = {}): Interceptor {
  const fixedBaggageKey = options.baggageKey;
  return (callOptions, nextCall) => {
    const key = getRoutingKey();
    // No key: hand back the next call as it is (no wrapper allocated).
    if (key === undefined) return nextCall(callOptions) as InterceptingCall;
    const baggageKey = fixedBaggageKey ?? getBaggageKey();
    if (USE_KEYED_CALL)
      return new KeyedCall(nextCall(callOptions), key, baggageKey) as unknown as InterceptingCall;
    return new InterceptingCall(nextCall(callOptions), {
      start(metadata: Metadata, listener, next) {
        injectRoutingKey(metadata, grpcMetadataGetter, grpcMetadataSetter, key, baggageKey);
        next(metadata, listener);
      },
    });
  };
}
