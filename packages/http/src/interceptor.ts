import { channel } from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import { contextWithRoutingKey, getRoutingKey } from '@branchline/core';
import { activeContext, counters, hasOtelPropagator, runInContext } from '@branchline/core/transport';
import { propagation } from '@opentelemetry/api';
import type { Dispatcher } from 'undici';
import { headersWithKey, OutgoingRouter } from './outgoing.js';
import { isEndpointFailure, type SandboxTarget, SandboxUnreachableError } from './sandbox-error.js';
import type { OutgoingRoutingOptions } from './types.js';

const requestCreated = channel('undici:request:create');

/**
 * OpenTelemetry's undici instrumentation adds the propagators' headers to every request it sees
 * (from the same context our key comes from). When it will write `baggage`, writing it here too
 * would send the header twice, so the key is left to it.
 */
function otelWritesBaggage(): boolean {
  return requestCreated.hasSubscribers && hasOtelPropagator() && propagation.fields().includes('baggage');
}

/**
 * Passes every event on to the caller's handler, except that a failure before the sandbox
 * answered becomes a SandboxUnreachableError naming the sandbox (the original as its cause).
 */
class SandboxCallHandler implements Dispatcher.DispatchHandler {
  private answered = false;

  constructor(
    private readonly handler: Dispatcher.DispatchHandler,
    private readonly target: SandboxTarget,
    private readonly baseline: string,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.handler.onRequestStart?.(controller, context);
  }

  onRequestUpgrade(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>[2],
    socket: Parameters<NonNullable<Dispatcher.DispatchHandler['onRequestUpgrade']>>[3],
  ): void {
    this.answered = true;
    this.handler.onRequestUpgrade?.(controller, statusCode, headers, socket);
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseStart']>>[2],
    statusMessage?: string,
  ): void {
    this.answered = true;
    this.handler.onResponseStart?.(controller, statusCode, headers, statusMessage);
  }

  onResponseStarted(): void {
    this.handler.onResponseStarted?.();
  }

  onBodySent(chunk: Buffer): void {
    this.handler.onBodySent?.(chunk);
  }

  onRequestSent(): void {
    this.handler.onRequestSent?.();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.handler.onResponseData?.(controller, chunk);
  }

  onResponseEnd(
    controller: Dispatcher.DispatchController,
    trailers: Parameters<NonNullable<Dispatcher.DispatchHandler['onResponseEnd']>>[1],
  ): void {
    this.handler.onResponseEnd?.(controller, trailers);
  }

  onResponseError(controller: Dispatcher.DispatchController, error: Error): void {
    const err =
      !this.answered && isEndpointFailure(error)
        ? new SandboxUnreachableError(this.target, error, this.baseline)
        : error;
    this.handler.onResponseError?.(controller, err);
  }
}

/**
 * An undici interceptor: `new Agent().compose(createRoutingInterceptor({ services }))`.
 *
 * A call made while a routing key is active goes to the sandbox endpoint of rule (service, key)
 * when there is one, else where it was going; internal hosts get the key merged into `baggage`,
 * other hosts get nothing (and are counted in `egressWithheld`). A routed call that cannot reach
 * its sandbox fails with a SandboxUnreachableError. Without a key it costs one context lookup.
 */
export function createRoutingInterceptor(
  options: OutgoingRoutingOptions = {},
): Dispatcher.DispatcherComposeInterceptor {
  const router = new OutgoingRouter(options);
  return (dispatch) =>
    function branchlineRoutingDispatch(opts, handler) {
      const key = getRoutingKey();
      if (key === undefined || opts.origin === undefined) return dispatch(opts, handler);
      const info = router.hosts.lookup(opts.origin);
      if (!info.internal) {
        counters.egressWithheld++;
        // OpenTelemetry's undici instrumentation injects baggage from the active context while
        // the request is created; dispatch in a context without our key so it cannot leak.
        return runInContext(contextWithRoutingKey(activeContext(), undefined), () => dispatch(opts, handler));
      }
      const target = router.target(info, key);
      const next: Dispatcher.DispatchOptions = { ...opts };
      if (!otelWritesBaggage())
        next.headers = headersWithKey(
          opts.headers,
          key,
          router.baggageKey,
        ) as Dispatcher.DispatchOptions['headers'];
      if (target === undefined) return dispatch(next, handler);
      next.origin = target.endpoint;
      return dispatch(next, new SandboxCallHandler(handler, target, String(opts.origin)));
    };
}

let installed: { previous: Dispatcher } | undefined;

// undici is loaded on first use, not with this package: a service that only receives requests
// (the framework adapters) then carries none of its ~4 MB of heap.
let undiciModule: typeof import('undici') | undefined;
function undici(): typeof import('undici') {
  undiciModule ??= createRequire(import.meta.url)('undici') as typeof import('undici');
  return undiciModule;
}

/**
 * Routes global `fetch` (and undici's own `request`/`fetch` without an explicit dispatcher) by
 * composing the routing interceptor onto the global dispatcher. Returns a function that puts
 * the previous dispatcher back.
 */
export function installFetchRouting(
  options: OutgoingRoutingOptions & { dispatcher?: Dispatcher } = {},
): () => void {
  const { dispatcher, ...routing } = options;
  const { Agent, getGlobalDispatcher, setGlobalDispatcher } = undici();
  const previous = getGlobalDispatcher();
  const base = dispatcher ?? (installed ? installed.previous : previous) ?? new Agent();
  setGlobalDispatcher(base.compose(createRoutingInterceptor(routing)));
  const mine = { previous: installed ? installed.previous : previous };
  installed = mine;
  return () => {
    if (installed === mine) {
      setGlobalDispatcher(mine.previous);
      installed = undefined;
    }
  };
}
