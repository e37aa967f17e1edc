// The one door to the forwarding hop's HTTP client. The built-in client (upstream.ts) is fast
// but private: it leans on Node's `onread` socket option and speaks only plain HTTP/1.1 to an
// endpoint's host and port. Where it cannot be used, or when asked, the forwarder uses
// node:http's public client instead (node-upstream.ts), with the same timeouts and errors:
//
// - `httpClient: 'node'` (forwarder option) or `BRANCHLINE_HTTP_CLIENT=node`: always;
// - a runtime other than Node.js (Bun, Deno): their `net` has no `onread`;
// - an endpoint URL with credentials (`http://user:pass@host`): the built-in client would drop
//   them; node:http sends them as Basic authentication (unless the request has its own).

import { logger } from '@branchline/core/transport';
import { createNodeEndpoint } from './node-upstream.js';
import { type CoarseClock, Endpoint, type UpstreamEndpoint, type UpstreamOptions } from './upstream.js';

export {
  type CoarseClock,
  type Exchange,
  SMALL_BODY,
  type UpstreamConnection,
  type UpstreamEndpoint,
  type UpstreamError,
  type UpstreamOptions,
} from './upstream.js';

/** `builtin`: the forwarder's own HTTP/1.1 client; `node`: node:http's. */
export type UpstreamClient = 'builtin' | 'node';

export interface UpstreamClientOptions {
  /**
   * Which HTTP client carries forwarded requests: `builtin` (default; faster) or `node`
   * (node:http, for runtimes or endpoints the built-in one does not handle, or to rule it out
   * when chasing a problem). Default: `BRANCHLINE_HTTP_CLIENT`, else `builtin`.
   */
  httpClient?: UpstreamClient;
}

const CLIENTS: readonly string[] = ['builtin', 'node'];
let warnedEnv: string | undefined;

/** The client an option (or else `BRANCHLINE_HTTP_CLIENT`) asks for; a bad option throws. */
export function resolveUpstreamClient(option: unknown): UpstreamClient {
  if (option !== undefined) {
    if (typeof option === 'string' && CLIENTS.includes(option)) return option as UpstreamClient;
    throw new TypeError(
      `branchline: option httpClient must be "builtin" or "node", got ${JSON.stringify(option)}`,
    );
  }
  const env = process.env.BRANCHLINE_HTTP_CLIENT?.trim().toLowerCase();
  if (env === undefined || env === '') return builtinRuns() ? 'builtin' : 'node';
  if (CLIENTS.includes(env)) return env === 'builtin' && !builtinRuns() ? 'node' : (env as UpstreamClient);
  if (warnedEnv !== env) {
    warnedEnv = env;
    logger().warn(
      `branchline: BRANCHLINE_HTTP_CLIENT=${JSON.stringify(env)} is not "builtin" or "node"; using the built-in client`,
    );
  }
  return builtinRuns() ? 'builtin' : 'node';
}

/** The built-in client needs Node.js's `net` (its `onread` option). */
function builtinRuns(): boolean {
  const v = process.versions as Record<string, string | undefined>;
  return v.bun === undefined && v.deno === undefined;
}

/** Whether the built-in client can carry requests to `url` as node:http would. */
function builtinHandles(url: string): boolean {
  try {
    const u = new URL(url);
    return u.username === '' && u.password === '';
  } catch {
    // The built-in Endpoint reports a bad URL the forwarder's way.
    return true;
  }
}

/** The connections to one endpoint, through the chosen client. */
export function createUpstreamEndpoint(
  url: string,
  options: UpstreamOptions,
  clock: CoarseClock,
  client: UpstreamClient,
): UpstreamEndpoint {
  if (client === 'builtin' && builtinHandles(url)) return new Endpoint(url, options, clock);
  return createNodeEndpoint(url, options);
}
