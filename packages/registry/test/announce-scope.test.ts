import { announceWorkload } from '@branchline/core';
import { afterAll, describe, expect, it } from 'vitest';
import { matchesSandboxPattern } from '../src/auth.js';
import { createRegistryServer, parseTokens, type TokenEntry } from '../src/index.js';
import { send, sendJson, startRegistry, stopRegistries } from './helpers.js';

afterAll(stopRegistries);

const WRITE = 'write-token-0123456789abcdef';
const PR1 = 'announce-pr-1-0123456789abcdef';
const PRS = 'announce-prs-0123456789abcdef';
const ANY = 'announce-any-0123456789abcdef';
const READ = 'read-token-0123456789abcdef';
const TOKENS: TokenEntry[] = [
  { token: WRITE, scopes: ['write'], name: 'ci' },
  { token: PR1, scopes: ['announce'], name: 'pr-1-workloads', sandboxes: ['pr-1'] },
  { token: PRS, scopes: ['announce'], name: 'fork-workloads', sandboxes: ['pr-*'] },
  { token: ANY, scopes: ['announce'], name: 'workloads' },
  { token: READ, scopes: ['read'], name: 'dashboards' },
];
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

async function withSandboxes(...names: string[]) {
  const r = await startRegistry({ tokens: TOKENS });
  for (const n of names) {
    const put = await sendJson(r.url, 'PUT', `/v1/sandboxes/${n}`, { labels: { pr: n } }, bearer(WRITE));
    expect(put.status).toBe(201);
  }
  return r;
}

const heartbeat = (url: string, sandbox: string, token: string, ready = true) =>
  sendJson(
    url,
    'POST',
    `/v1/sandboxes/${sandbox}/heartbeat`,
    { service: 'orders', http: 'http://10.0.0.7:8080', ready },
    bearer(token),
  );

async function announced(url: string, sandbox: string): Promise<unknown> {
  return (await send(url, 'GET', `/v1/sandboxes/${sandbox}`, { headers: bearer(READ) })).json.announced;
}

describe('the announce scope', () => {
  it('announces, renews and withdraws an endpoint', async () => {
    const { url } = await withSandboxes('pr-1');
    const on = await heartbeat(url, 'pr-1', PR1);
    expect(on.status).toBe(200);
    expect(await announced(url, 'pr-1')).toEqual({ orders: { http: ['http://10.0.0.7:8080'], grpc: [] } });
    expect((await heartbeat(url, 'pr-1', PR1)).status).toBe(200);
    const off = await heartbeat(url, 'pr-1', PR1, false);
    expect(off.status).toBe(200);
    expect(await announced(url, 'pr-1')).toEqual({});
    // A write token still may (write implies announce).
    expect((await heartbeat(url, 'pr-1', WRITE)).status).toBe(200);
  });

  it("core's announceWorkload announces and withdraws with an announce token", async () => {
    const { url } = await withSandboxes('pr-3');
    const a = announceWorkload({
      registry: url,
      sandbox: 'pr-3',
      service: 'orders',
      token: PRS,
      http: 'http://10.0.0.9:8080',
      withdrawOnSignals: false,
      env: {},
    });
    expect(await a.announced(5000)).toBe(true);
    expect(await announced(url, 'pr-3')).toEqual({ orders: { http: ['http://10.0.0.9:8080'], grpc: [] } });
    await a.stop();
    expect(await announced(url, 'pr-3')).toEqual({});
  });

  it('every other request is 403, naming the scope it needs', async () => {
    const { url } = await withSandboxes('pr-1');
    await sendJson(url, 'PUT', '/v1/routegroups/g1', { match: { labels: { pr: 'pr-1' } } }, bearer(WRITE));
    const refused: [string, string, unknown, string][] = [
      ['PUT', '/v1/sandboxes/pr-1', { labels: {} }, 'write'],
      ['PUT', '/v1/sandboxes/pr-9', {}, 'write'],
      ['DELETE', '/v1/sandboxes/pr-1', undefined, 'write'],
      ['PUT', '/v1/routegroups/g2', { match: { labels: { a: 'b' } } }, 'write'],
      ['DELETE', '/v1/routegroups/g1', undefined, 'write'],
      ['GET', '/v1/sandboxes/pr-1/resources/db', undefined, 'write'],
      ['POST', '/v1/activity', { service: 'orders', counts: [] }, 'report'],
      ['GET', '/v1/rules', undefined, 'read'],
      ['GET', '/v1/sandboxes', undefined, 'read'],
      ['GET', '/v1/sandboxes/pr-1', undefined, 'read'],
      ['GET', '/v1/routegroups', undefined, 'read'],
      ['GET', '/v1/watch', undefined, 'read'],
    ];
    for (const token of [PR1, ANY])
      for (const [method, path, body, scope] of refused) {
        const r =
          body === undefined
            ? await send(url, method, path, { headers: bearer(token) })
            : await sendJson(url, method, path, body, bearer(token));
        expect(r.status, `${method} ${path}`).toBe(403);
        expect(r.json.message, `${method} ${path}`).toContain(
          `has scopes [announce]; this request needs "${scope}"`,
        );
      }
    const list = await send(url, 'GET', '/v1/sandboxes', { headers: bearer(READ) });
    expect(list.json.sandboxes.map((s: { name: string }) => s.name)).toEqual(['pr-1']);
    expect((await send(url, 'GET', '/v1/routegroups/g1', { headers: bearer(READ) })).status).toBe(200);
  });

  it('a token bound to pr-1 cannot announce for pr-2; a pr-* token can, but not for demo', async () => {
    const { url } = await withSandboxes('pr-1', 'pr-2', 'demo');
    const r = await heartbeat(url, 'pr-2', PR1);
    expect(r.status).toBe(403);
    expect(r.json.message).toContain('token "pr-1-workloads" may announce only for the sandboxes pr-1');
    expect(r.json.message).toContain('"pr-2"');
    expect(await announced(url, 'pr-2')).toEqual({});
    // Nor withdraw another sandbox's endpoint.
    expect((await heartbeat(url, 'pr-2', WRITE)).status).toBe(200);
    expect((await heartbeat(url, 'pr-2', PR1, false)).status).toBe(403);
    expect(await announced(url, 'pr-2')).toEqual({ orders: { http: ['http://10.0.0.7:8080'], grpc: [] } });
    // Nor learn whether a sandbox exists outside its binding.
    expect((await heartbeat(url, 'pr-404', PR1)).status).toBe(403);
    expect((await heartbeat(url, 'pr-2', PRS)).status).toBe(200);
    const demo = await heartbeat(url, 'demo', PRS);
    expect(demo.status).toBe(403);
    expect(demo.json.message).toContain('pr-*');
    expect((await heartbeat(url, 'demo', ANY)).status).toBe(200);
  });

  it('a read token may not announce: 403 naming announce', async () => {
    const { url } = await withSandboxes('pr-1');
    const r = await heartbeat(url, 'pr-1', READ);
    expect(r.status).toBe(403);
    expect(r.json.message).toContain('this request needs "announce" (or "write", which implies it)');
  });

  it('reads bound announce tokens from the line and JSON formats and refuses what makes no sense', () => {
    expect(
      parseTokens(`${PR1} announce fork-workloads sandboxes=pr-*,demo\n${ANY} announce sandboxes=pr-1`),
    ).toEqual([
      { token: PR1, scopes: ['announce'], name: 'fork-workloads', sandboxes: ['pr-*', 'demo'] },
      { token: ANY, scopes: ['announce'], name: undefined, sandboxes: ['pr-1'] },
    ]);
    expect(parseTokens(JSON.stringify([{ token: PR1, scopes: ['announce'], sandboxes: ['pr-*'] }]))).toEqual([
      { token: PR1, scopes: ['announce'], name: undefined, sandboxes: ['pr-*'] },
    ]);
    expect(() => parseTokens(`${PR1} read sandboxes=pr-*`)).toThrow(/add "announce" to the scopes/);
    expect(() => parseTokens(`${PR1} write,announce sandboxes=pr-*`)).toThrow(/a write token may announce/);
    expect(() => parseTokens(`${PR1} announce sandboxes=PR_1`)).toThrow(
      /"PR_1" is not a sandbox name or pattern/,
    );
    expect(() => parseTokens(`${PR1} announce a b`)).toThrow(/line 1: unexpected "b"/);
    expect(() => parseTokens(`${PR1} announce,admin`)).toThrow(
      /unknown scope "admin" \(read, write, report, announce\)/,
    );
    const server = (entry: TokenEntry) => () => createRegistryServer({ store: ':memory:', tokens: [entry] });
    expect(server({ token: PR1, scopes: ['announce'], sandboxes: [] })).toThrow(
      /tokens\[0\].*non-empty list/,
    );
    expect(server({ token: PR1, scopes: ['write'], sandboxes: ['pr-*'] })).toThrow(/add "announce"/);
  });

  it('matches sandbox patterns with * for any characters', () => {
    expect(matchesSandboxPattern('pr-*', 'pr-1')).toBe(true);
    expect(matchesSandboxPattern('pr-*', 'pr-')).toBe(true);
    expect(matchesSandboxPattern('pr-*', 'xpr-1')).toBe(false);
    expect(matchesSandboxPattern('*-shop', 'pr-1-shop')).toBe(true);
    expect(matchesSandboxPattern('pr-*-shop', 'pr-1-shop')).toBe(true);
    expect(matchesSandboxPattern('pr-*-shop', 'pr-shop')).toBe(false);
    expect(matchesSandboxPattern('a*b*c', 'abc')).toBe(true);
    expect(matchesSandboxPattern('a*b*c', 'acb')).toBe(false);
    expect(matchesSandboxPattern('*', 'anything')).toBe(true);
    expect(matchesSandboxPattern('pr-1', 'pr-10')).toBe(false);
  });
});
