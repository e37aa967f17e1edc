import type { BranchlineRuntime, RuntimeOptions } from '@branchline/core';
import { HOP_MARKER } from '@branchline/core/transport';

/** Which hosts are internal (may receive the routing key) and which service each one is. */
export interface HostMapOptions {
  /**
   * service → baseline URL, for example `{ payments: 'http://payments:8080' }`. A call to that
   * host (and port) is a call to that service. These hosts are always internal.
   */
  services?: Record<string, string>;
  /**
   * More internal hosts: exact host names (`orders`), suffixes (`*.svc.cluster.local` or
   * `.internal`), or a predicate over the host name. Only internal hosts get the routing key.
   * Default: none beyond `services`.
   */
  internalHosts?: readonly string[] | ((hostname: string) => boolean);
  /**
   * The service of an internal host that `services` does not name. Default: the host's first
   * DNS label (`payments.staging.svc.cluster.local` → `payments`); none for IP addresses.
   */
  serviceOf?: (hostname: string) => string | undefined;
}

/** Options of the outgoing routers (undici interceptor, node:http agents). */
export interface OutgoingRoutingOptions extends HostMapOptions {
  /** The runtime to read routes and the baggage key from. Default: `defaultRuntime()`, on first call. */
  runtime?: BranchlineRuntime;
  /** Send calls to sandbox endpoints (default `true`); `false` only propagates the key. */
  routeCalls?: boolean;
  /** @deprecated Use `routeCalls` (`routes` is the route source everywhere). */
  route?: boolean;
}

/** How forwarded requests reach a sandbox. */
export interface ForwardOptions {
  /** Milliseconds to wait for a TCP (and TLS) connection to the sandbox. Default 2000. */
  connectTimeoutMs?: number;
  /** Milliseconds to wait for the sandbox's response headers. Default 30000. */
  responseTimeoutMs?: number;
  /** Milliseconds of silence allowed between response body chunks; 0 disables. Default 300000. */
  bodyTimeoutMs?: number;
  /**
   * Which HTTP client carries forwarded requests: `builtin` (default; faster) or `node`
   * (node:http). Default: `BRANCHLINE_HTTP_CLIENT`, else `builtin`. See docs/http.md.
   */
  httpClient?: 'builtin' | 'node';
  /** @deprecated Use `connectTimeoutMs`. */
  connectTimeout?: number;
  /** @deprecated Use `responseTimeoutMs`. */
  responseTimeout?: number;
  /** @deprecated Use `bodyTimeoutMs`. */
  bodyTimeout?: number;
  /**
   * When the sandbox cannot be reached, serve the request here (baseline) instead of answering
   * 502/504. Only possible while no byte of the request body has been sent. Default `false`.
   */
  fallbackToBaseline?: boolean;
  /** Keep-alive connections per sandbox endpoint. Default 128. */
  connections?: number;
  /**
   * Accepted for compatibility and ignored: the forwarder sends one request at a time per
   * connection (pipelining would let one slow response hold up the ones behind it).
   */
  pipelining?: number;
  /** Keep the client's `Host` header (default `true`); `false` sends the endpoint's host. */
  preserveHost?: boolean;
}

/** Options of the incoming side, shared by @branchline/express and @branchline/fastify. */
export interface IncomingRoutingOptions extends RuntimeOptions, ForwardOptions {
  /** A runtime built elsewhere; otherwise one is built from these options and the environment. */
  runtime?: BranchlineRuntime;
}

/** What the framework adapters expose on each request (`req.branchline`). */
export interface BranchlineRequestInfo {
  /** The request's routing key, or undefined. */
  readonly key: string | undefined;
  /** The sandbox the key selects for this service, or undefined (served by baseline). */
  readonly sandbox: string | undefined;
  /** The request reached this instance through a Branchline forward (it carries the hop marker). */
  readonly forwarded: boolean;
}

/**
 * The hop marker header a forwarded request carries.
 * @deprecated Use `HOP_MARKER`, the one name for every transport.
 */
export const HOP_HEADER = HOP_MARKER;
