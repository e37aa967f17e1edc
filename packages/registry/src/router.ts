import { routingBaggage } from '@branchline/core';
import { RouteTable } from '@branchline/core/transport';
// The HTTP API: which request goes where, who may make it, how errors are answered. The
// registry's behaviour lives in server.ts and the modules it composes; this file maps requests
// onto it. See docs/registry.md for the API.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ActivityLog } from './activity.js';
import {
  matchesSandboxPattern,
  type Scope,
  type TokenAuth,
  type TokenHolder,
  tokenMatchesHash,
} from './auth.js';
import { renderDashboard } from './dashboard.js';
import { ClientGoneError, checkBrowserWrite, isWrite, pathSegments } from './http-guards.js';
import { type LogFn, notFound, readJson, send } from './http-io.js';
import type { RegistryMetrics } from './metrics.js';
import { groupMatches, labelValue, RegistryError, type RegistryState } from './state.js';
import type { Store } from './store.js';
import type { GroupDoc, SandboxDoc } from './types.js';
import { REGISTRY_VERSION } from './version.js';

/** What the router needs of the registry. */
export interface RouterHost {
  readonly state: RegistryState;
  readonly store: Store;
  readonly metrics: RegistryMetrics;
  readonly activity: ActivityLog;
  readonly auth: TokenAuth;
  readonly readRequiresToken: boolean;
  readonly allowOrigins: Set<string>;
  readonly maxBodyBytes: number;
  readonly log: LogFn;
  /** False until the store is open. */
  opened(): boolean;
  completeUntil(): number | undefined;
  watcherCount(): number;
  watch(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>;
  githubWebhook(req: IncomingMessage, res: ServerResponse): Promise<void>;
  putSandbox(
    name: string,
    input: unknown,
  ): Promise<{ sandbox: SandboxDoc; created: boolean; revision: number; sandboxToken?: string }>;
  deleteSandbox(
    name: string,
    reason: 'api',
    wait: boolean,
  ): Promise<{ sandbox: SandboxDoc; done: boolean } | undefined>;
  putGroup(name: string, input: unknown): Promise<{ group: GroupDoc; created: boolean }>;
  deleteGroup(name: string, reason: 'api'): Promise<GroupDoc | undefined>;
  heartbeat(name: string, input: unknown): Promise<SandboxDoc>;
}

/** The answer to a CORS preflight from an allowed origin (see `allowOrigins`). */
const CORS_PREFLIGHT_HEADERS = {
  'access-control-allow-methods': 'GET, PUT, POST, DELETE',
  'access-control-allow-headers': 'authorization, content-type, last-event-id',
  'access-control-max-age': '600',
};

/** Builds the registry's request handler. */
export function createRouter(h: RouterHost): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return (req, res) => answerRequest(h, req, res);
}

/** Answers one request: finds its route, checks who may make it, and answers errors as JSON. */
async function answerRequest(h: RouterHost, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = process.hrtime.bigint();
  let route = 'unknown';
  res.once('finish', () => {
    if (route !== 'watch')
      h.metrics.observe(
        req.method ?? 'GET',
        route,
        res.statusCode,
        Number(process.hrtime.bigint() - started) / 1e9,
      );
  });
  try {
    const { url, parts } = pathSegments(req.url ?? '/');
    const method = req.method ?? 'GET';
    if (!h.opened())
      throw new RegistryError(503, 'starting', 'the registry is still opening its store; retry shortly');
    // Pages on an allowed origin may call the API from the browser: CORS for them only.
    const origin = req.headers.origin;
    if (origin !== undefined && h.allowOrigins.has(origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('vary', 'origin');
      if (method === 'OPTIONS') {
        route = 'preflight';
        res.writeHead(204, CORS_PREFLIGHT_HEADERS);
        res.end();
        return;
      }
    }
    if (isWrite(method)) checkBrowserWrite(req, h.allowOrigins, h.auth.enabled);
    const state = h.state;
    if (parts.length === 0 && method === 'GET') {
      route = 'dashboard';
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(
        renderDashboard({
          revision: state.revision,
          sandboxes: state.liveSandboxCount,
          groups: state.liveGroupCount,
        }),
      );
      return;
    }
    if (parts[0] === 'healthz') {
      route = 'healthz';
      return send(res, 200, {
        status: 'ok',
        version: REGISTRY_VERSION,
        revision: state.revision,
        store: h.store.description,
        watchers: h.watcherCount(),
      });
    }
    if (parts[0] === 'metrics') {
      route = 'metrics';
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(
        h.metrics.render({
          sandboxes: state.liveSandboxCount,
          tombstones: state.sandboxes.size - state.liveSandboxCount,
          groups: state.liveGroupCount,
          watchers: h.watcherCount(),
          revision: state.revision,
        }),
      );
      return;
    }
    if (parts[0] !== 'v1')
      throw new RegistryError(
        404,
        'not_found',
        `no route ${method} ${url.pathname}; the API lives under /v1`,
      );
    const [, resource, name, sub, subname] = parts;
    const maxBody = h.maxBodyBytes;
    if (resource === 'webhooks' && name === 'github' && method === 'POST') {
      route = 'webhook';
      return await h.githubWebhook(req, res);
    }
    if (resource === 'watch' && method === 'GET') {
      route = 'watch';
      authorize(h, req, 'read');
      return await h.watch(req, res, url);
    }
    if (resource === 'activity' && name === undefined && (method === 'GET' || method === 'POST')) {
      route = 'activity';
      authorize(h, req, method === 'POST' ? 'report' : 'read');
      if (method === 'POST') return send(res, 202, h.activity.report(await readJson(req, maxBody)));
      return send(res, 200, h.activity.snapshot(Date.now(), url.searchParams.get('sandbox') ?? undefined));
    }
    if (resource === 'rules' && method === 'GET') {
      route = 'rules';
      authorize(h, req, 'read');
      return send(res, 200, rules(state, h.completeUntil(), url.searchParams));
    }
    if (resource === 'sandboxes') {
      route = name === undefined ? 'sandboxes' : sub === undefined ? 'sandbox' : `sandbox/${sub}`;
      if (name === undefined && method === 'GET') {
        authorize(h, req, 'read');
        return send(res, 200, {
          revision: state.revision,
          sandboxes: listSandboxes(state, url.searchParams),
        });
      }
      if (name !== undefined && sub === undefined) {
        if (method === 'GET') {
          authorize(h, req, 'read');
          const s =
            state.sandbox(name) ?? (url.searchParams.get('deleted') ? tombstone(state, name) : undefined);
          if (!s) throw notFound('sandbox', name);
          return send(res, 200, s);
        }
        if (method === 'PUT') {
          authorize(h, req, 'write');
          const r = await h.putSandbox(name, await readJson(req, maxBody));
          return send(res, r.created ? 201 : 200, {
            ...r.sandbox,
            ...(r.sandboxToken ? { sandboxToken: r.sandboxToken } : {}),
            header: `baggage: ${routingBaggage(r.sandbox.key)}`,
            revision: r.revision,
          });
        }
        if (method === 'DELETE') {
          authorize(h, req, 'write');
          const r = await h.deleteSandbox(name, 'api', url.searchParams.get('wait') !== 'false');
          if (!r) throw notFound('sandbox', name);
          const failed = Object.entries(r.sandbox.resources)
            .filter(([, x]) => x.status === 'failed')
            .map(([n, x]) => ({ resource: n, error: x.error }));
          return send(res, r.done ? 200 : 202, { deleted: r.sandbox, done: r.done, failed });
        }
      }
      if (name !== undefined && sub === 'heartbeat' && method === 'POST') {
        await authorizeSandbox(h, req, name, 'announce');
        return send(res, 200, await h.heartbeat(name, await readJson(req, maxBody)));
      }
      if (name !== undefined && sub === 'resources' && subname !== undefined && method === 'GET') {
        const s = await authorizeSandbox(h, req, name, 'write');
        const r = s.resources[subname];
        if (!r) throw notFound('resource', subname);
        const secret = await h.store.getSecret(s.id);
        return send(res, 200, { name: subname, ...r, outputs: secret?.outputs?.[subname] ?? null });
      }
    }
    if (resource === 'routegroups') {
      route = name === undefined ? 'routegroups' : 'routegroup';
      if (name === undefined && method === 'GET') {
        authorize(h, req, 'read');
        const deleted = url.searchParams.get('deleted') === 'true';
        const groups = deleted ? [...state.groups.values()] : state.liveGroups();
        return send(res, 200, {
          revision: state.revision,
          groups: groups.map((g) => withMembers(state, g)),
        });
      }
      if (name !== undefined && sub === undefined) {
        if (method === 'GET') {
          authorize(h, req, 'read');
          const g = state.group(name);
          if (!g) throw notFound('route group', name);
          return send(res, 200, withMembers(state, g));
        }
        if (method === 'PUT') {
          authorize(h, req, 'write');
          const r = await h.putGroup(name, await readJson(req, maxBody));
          return send(res, r.created ? 201 : 200, {
            ...withMembers(state, r.group),
            header: `baggage: ${routingBaggage(r.group.key)}`,
          });
        }
        if (method === 'DELETE') {
          authorize(h, req, 'write');
          const g = await h.deleteGroup(name, 'api');
          if (!g) throw notFound('route group', name);
          return send(res, 200, { deleted: g });
        }
      }
    }
    throw new RegistryError(
      404,
      'not_found',
      `no route ${method} ${url.pathname} (see docs/registry.md for the API)`,
    );
  } catch (err) {
    if (err instanceof ClientGoneError) {
      h.log('info', 'client disconnected before its request body was complete', {
        method: req.method,
        url: req.url,
      });
      res.destroy();
      return;
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof RegistryError)
      return send(res, err.status, { error: err.code, message: err.message, ...err.details });
    h.log('error', 'request failed', {
      method: req.method,
      url: req.url,
      err: String((err as Error)?.stack ?? err),
    });
    return send(res, 503, {
      error: 'unavailable',
      message: `the registry could not complete the request: ${(err as Error)?.message ?? err}`,
    });
  }
}

function authorize(h: RouterHost, req: IncomingMessage, scope: Scope): TokenHolder | undefined {
  if (!h.auth.enabled) return undefined;
  if (scope === 'read' && !h.readRequiresToken) return undefined;
  const header = req.headers.authorization;
  const who = h.auth.identify(header);
  if (!who)
    throw new RegistryError(
      401,
      'unauthorized',
      header
        ? 'the bearer token is not valid for this registry; check BRANCHLINE_TOKEN'
        : 'this request needs a token: send "Authorization: Bearer <token>" (BRANCHLINE_TOKEN)',
    );
  if (!who.scopes.has(scope))
    throw new RegistryError(
      403,
      'forbidden',
      `token "${who.name}" has scopes [${[...who.scopes].join(', ')}]; this request needs "${scope}"${scope === 'announce' ? ' (or "write", which implies it)' : ''}`,
    );
  return who;
}

/**
 * The sandbox-scoped token returned when the sandbox was created, or a token with `scope`
 * (`announce`: one bound to sandboxes must name this one).
 */
async function authorizeSandbox(
  h: RouterHost,
  req: IncomingMessage,
  name: string,
  scope: 'announce' | 'write',
): Promise<SandboxDoc> {
  const s = h.state.sandbox(name);
  if (!h.auth.enabled) {
    if (!s) throw notFound('sandbox', name);
    return s;
  }
  const token = /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1];
  if (token && s) {
    const secret = await h.store.getSecret(s.id);
    if (secret?.tokenHash && tokenMatchesHash(token, secret.tokenHash)) return s;
  }
  const who = authorize(h, req, scope);
  if (who?.sandboxes && !who.sandboxes.some((p) => matchesSandboxPattern(p, name)))
    throw new RegistryError(
      403,
      'forbidden',
      `token "${who.name}" may announce only for the sandboxes ${who.sandboxes.join(', ')} (its "sandboxes"); this request is for sandbox ${JSON.stringify(name)}`,
    );
  if (!s) throw notFound('sandbox', name);
  return s;
}

/** The newest tombstone of a sandbox name. */
function tombstone(state: RegistryState, name: string): SandboxDoc | undefined {
  let best: SandboxDoc | undefined;
  for (const s of state.sandboxes.values())
    if (s.name === name && (!best || (s.deletedAt ?? 0) > (best.deletedAt ?? 0))) best = s;
  return best;
}

function withMembers(
  state: RegistryState,
  g: GroupDoc,
): GroupDoc & { members: string[]; conflicts: unknown[] } {
  const members = state
    .liveSandboxes()
    .filter((s) => groupMatches(g, s))
    .sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
  const table = new RouteTable({ sandboxes: members, groups: [g] });
  return { ...g, members: members.map((s) => s.name), conflicts: [...table.conflicts] };
}

function listSandboxes(state: RegistryState, q: URLSearchParams): SandboxDoc[] {
  let list = q.get('deleted') === 'true' ? [...state.sandboxes.values()] : state.liveSandboxes();
  for (const l of q.getAll('label')) {
    const i = l.indexOf('=');
    const [k, v] = i < 0 ? [l, undefined] : [l.slice(0, i), l.slice(i + 1)];
    list = list.filter((s) => (v === undefined ? Object.hasOwn(s.labels, k) : labelValue(s.labels, k) === v));
  }
  return list.sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
}

function rules(state: RegistryState, completeUntil: number | undefined, q: URLSearchParams): unknown {
  const table = new RouteTable(state.tableSpec(completeUntil));
  const service = q.get('service');
  const key = q.get('key');
  const sandbox = q.get('sandbox');
  const list = table
    .rules()
    .filter(
      (r) =>
        (!service || r.service === service) && (!key || r.key === key) && (!sandbox || r.sandbox === sandbox),
    )
    .sort((a, b) => (a.service + a.key < b.service + b.key ? -1 : 1));
  return { revision: state.revision, rules: list, conflicts: table.conflicts };
}
