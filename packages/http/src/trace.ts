import { activeContext, hasOtelPropagator } from '@branchline/core/transport';
import { isSpanContextValid, propagation, type TextMapSetter, trace } from '@opentelemetry/api';

/** Collects injected headers as flat lower-case name/value pairs, leaving `baggage` out. */
const traceSetter: TextMapSetter<string[]> = {
  set(carrier, key, value) {
    const name = key.toLowerCase();
    if (name !== 'baggage') carrier.push(name, value);
  },
};

/**
 * The trace headers a request forwarded from here carries, so that the sandbox's spans join
 * this process's trace as children of its active span (the server span the HTTP
 * instrumentation started for the request): whatever the application's propagators inject —
 * `traceparent`/`tracestate` with the W3C one, `b3` with B3 — as flat lower-case name/value
 * pairs. They replace the client's headers of those names; a request that arrived without any
 * then still continues the baseline's trace instead of starting a new one in the sandbox.
 *
 * Undefined when no span is active (no OpenTelemetry tracing in this process): the client's
 * headers are relayed as they came. `baggage` is never injected here: the request's own is
 * relayed unchanged.
 */
export function activeTraceHeaders(): string[] | undefined {
  if (!hasOtelPropagator()) return undefined;
  const ctx = activeContext();
  const span = trace.getSpanContext(ctx);
  if (span === undefined || !isSpanContextValid(span)) return undefined;
  const out: string[] = [];
  propagation.inject(ctx, out, traceSetter);
  return out.length > 0 ? out : undefined;
}

/** The header names in flat `pairs`, for skipping the client's headers they replace. */
export function headerNames(pairs: string[] | undefined): Set<string> | undefined {
  if (pairs === undefined) return undefined;
  const names = new Set<string>();
  for (let i = 0; i < pairs.length; i += 2) names.add(pairs[i]!);
  return names;
}
