import {
  getBaggageKey,
  getRoutingKey,
  grpcMetadataGetter,
  grpcMetadataSetter,
  injectRoutingKey,
} from '@branchline/core';
import { InterceptingCall, type Interceptor, type Metadata } from '@grpc/grpc-js';
import type { ClientInterceptorOptions } from './types.js';

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
    return new InterceptingCall(nextCall(callOptions), {
      start(metadata: Metadata, listener, next) {
        injectRoutingKey(metadata, grpcMetadataGetter, grpcMetadataSetter, key, baggageKey);
        next(metadata, listener);
      },
    });
  };
}
