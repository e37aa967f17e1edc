import http, { type ClientRequest } from 'node:http';
import https from 'node:https';
import { getRoutingKey } from '@branchline/core';
import {
  type CarrierSetter,
  counters,
  injectRoutingKey,
  joinHeaderValue,
  logger,
  warnRateLimited,
} from '@branchline/core/transport';
import { OutgoingRouter, withoutBaggageMember } from './outgoing.js';
import { isEndpointFailure, type SandboxTarget, SandboxUnreachableError } from './sandbox-error.js';
import type { OutgoingRoutingOptions } from './types.js';

// `Agent#addRequest` is how every node:http client request reaches its agent (axios, got,
// node-fetch, superagent all go through it). It is called synchronously from the ClientRequest
// constructor, so the caller's context is still active and the headers are not yet written.
interface AgentInternals {
  addRequest(req: ClientRequest, options: Record<string, unknown>): void;
}

interface RequestInternals {
  _header?: string | null;
}

const requestSetter: CarrierSetter<ClientRequest> = {
  set: (req, key, value) => req.setHeader(key, value),
};
const requestGetter = {
  keys: (req: ClientRequest) => req.getHeaderNames(),
  get: (req: ClientRequest, key: string) => {
    const v = req.getHeader(key);
    return typeof v === 'number' ? String(v) : v;
  },
};

function route(
  router: OutgoingRouter,
  protocol: string,
  req: ClientRequest,
  options: Record<string, unknown>,
): void {
  const key = getRoutingKey();
  const writable = !(req as unknown as RequestInternals)._header;
  const host = String(options.host ?? options.hostname ?? 'localhost');
  const port = options.port ?? (protocol === 'https:' ? 443 : 80);
  const origin = `${protocol}//${host.includes(':') ? `[${host}]` : host}:${port}`;
  const info = router.hosts.lookup(origin);
  if (!info.internal) {
    if (key === undefined) return;
    counters.egressWithheld++;
    // OpenTelemetry's http instrumentation may already have written our member; take it out.
    const existing = joinHeaderValue(requestGetter.get(req, 'baggage') as string | string[] | undefined);
    if (existing !== undefined && writable) {
      const stripped = withoutBaggageMember(existing, router.baggageKey);
      if (stripped === undefined) req.removeHeader('baggage');
      else if (stripped !== existing) req.setHeader('baggage', stripped);
    }
    return;
  }
  if (key === undefined) return;
  if (writable) injectRoutingKey(req, requestGetter, requestSetter, key, router.baggageKey);
  else
    warnRateLimited(
      'node-http-headers-sent',
      'branchline: a node:http request had its headers written before the agent saw it (headers given as an array?); it leaves without the routing key',
    );
  const target = router.target(info, key);
  if (target === undefined) return;
  const u = new URL(target.endpoint);
  if (u.protocol !== protocol) {
    warnRateLimited(
      'node-http-protocol',
      `branchline: the sandbox endpoint ${target.endpoint} uses ${u.protocol} but this ${protocol} agent cannot reach it; the call goes to baseline. Use fetch (undici) or an endpoint with the same protocol`,
    );
    return;
  }
  options.host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  options.hostname = options.host;
  options.port = u.port === '' ? (protocol === 'https:' ? 443 : 80) : Number(u.port);
  if (protocol === 'https:') options.servername = options.host;
  if (writable) req.setHeader('host', u.host);
  reportSandboxFailures(req, target, origin);
  logger().debug('branchline: routed a node:http call to a sandbox', {
    service: info.service,
    target: target.endpoint,
  });
}

/**
 * Makes a failure of a routed request before the sandbox answered reach the caller's `error`
 * listeners as a SandboxUnreachableError naming the sandbox (the original as its cause).
 * node:http reports socket errors and early closes only through `req.emit('error')`, so that
 * is where the error is replaced; the request's other events pass through untouched.
 */
function reportSandboxFailures(req: ClientRequest, target: SandboxTarget, baseline: string): void {
  const emit = req.emit;
  let answered = false;
  req.emit = function emitNamingSandbox(this: ClientRequest, event: string | symbol, ...args: unknown[]) {
    if (event === 'response' || event === 'upgrade') answered = true;
    else if (event === 'error' && !answered && isEndpointFailure(args[0]))
      args[0] = new SandboxUnreachableError(target, args[0], baseline);
    return emit.call(this, event, ...args);
  } as ClientRequest['emit'];
}

/**
 * An `http.Agent` that routes: give it to axios (`httpAgent`), got, or `http.request({ agent })`,
 * or install it as `http.globalAgent` with `installNodeHttpRouting()`.
 */
export class RoutingHttpAgent extends http.Agent {
  readonly router: OutgoingRouter;

  constructor(options: http.AgentOptions & OutgoingRoutingOptions = {}) {
    const { services, internalHosts, serviceOf, runtime, routeCalls, route: r, ...agentOptions } = options;
    super({ keepAlive: true, ...agentOptions });
    this.router = new OutgoingRouter({ services, internalHosts, serviceOf, runtime, routeCalls, route: r });
  }

  addRequest(req: ClientRequest, options: Record<string, unknown>): void {
    route(this.router, 'http:', req, options);
    (http.Agent.prototype as unknown as AgentInternals).addRequest.call(this, req, options);
  }
}

/** The `https.Agent` counterpart of RoutingHttpAgent. */
export class RoutingHttpsAgent extends https.Agent {
  readonly router: OutgoingRouter;

  constructor(options: https.AgentOptions & OutgoingRoutingOptions = {}) {
    const { services, internalHosts, serviceOf, runtime, routeCalls, route: r, ...agentOptions } = options;
    super({ keepAlive: true, ...agentOptions });
    this.router = new OutgoingRouter({ services, internalHosts, serviceOf, runtime, routeCalls, route: r });
  }

  addRequest(req: ClientRequest, options: Record<string, unknown>): void {
    route(this.router, 'https:', req, options);
    (https.Agent.prototype as unknown as AgentInternals).addRequest.call(this, req, options);
  }
}

/**
 * Replaces `http.globalAgent` and `https.globalAgent` with routing agents, so clients that use
 * the default agent (axios without `httpAgent`, `http.get`) are routed. Returns an undo function.
 */
export function installNodeHttpRouting(options: OutgoingRoutingOptions = {}): () => void {
  const prevHttp = http.globalAgent;
  const prevHttps = https.globalAgent;
  http.globalAgent = new RoutingHttpAgent(options);
  https.globalAgent = new RoutingHttpsAgent(options);
  return () => {
    http.globalAgent.destroy();
    https.globalAgent.destroy();
    http.globalAgent = prevHttp;
    https.globalAgent = prevHttps;
  };
}
