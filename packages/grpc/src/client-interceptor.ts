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
import { keyedCallUsable } from './internals.js';
import { grpcMetadataGetter, grpcMetadataSetter } from './metadata.js';
import type { ClientInterceptorOptions } from './types.js';

type Next = ReturnType<NextCall>;

/** Kept here for code that imported them from this module. */
export { DELEGATED_CALL_METHODS, keyedCallCovers } from './internals.js';

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
  // Decided per interceptor, so BRANCHLINE_GRPC_INTERNALS applies to interceptors made after it is set.
  const useKeyedCall = keyedCallUsable();
  return (callOptions, nextCall) => {
    const key = getRoutingKey();
    // No key: hand back the next call as it is (no wrapper allocated).
    if (key === undefined) return nextCall(callOptions) as InterceptingCall;
    const baggageKey = fixedBaggageKey ?? getBaggageKey();
    if (useKeyedCall)
      return new KeyedCall(nextCall(callOptions), key, baggageKey) as unknown as InterceptingCall;
    return new InterceptingCall(nextCall(callOptions), {
      start(metadata: Metadata, listener, next) {
        injectRoutingKey(metadata, grpcMetadataGetter, grpcMetadataSetter, key, baggageKey);
        next(metadata, listener);
      },
    });
  };
}
