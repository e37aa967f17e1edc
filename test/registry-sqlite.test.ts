import { execFile } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRegistrySource, type RegistryRouteSource } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, describe, expect, it } from 'vitest';
import type { RunningProcess } from './helpers/processes.js';

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-registry-'));
const procs: RunningProcess[] = [];
const sources: RegistryRouteSource[] = [];
afterAll(async () => {
  for (const s of sources) await s.close();
  for (const p of procs) await p.stop('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function startRegistry(args: string[], env: Record<string, string> = {}, port?: number) {
  const r = await startRegistryProcess({ args, env, port });
  procs.push(r.proc);
  return r;
}

function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function api(url: string, method: string, path: string, body?: unknown, token?: string) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

function follow(url: string, token?: string): RegistryRouteSource {
  const s = createRegistrySource({ registry: url, token, reconnect: { initialMs: 50, maxMs: 500 } });
  sources.push(s);
  return s;
}

const svc = (port: number) => ({ payments: { http: `http://127.0.0.1:${port}` } });

/** Opens `GET url` (a watch stream); `until` reads until the text so far satisfies `stopAt`. */
async function openStream(url: string) {
  const ctl = new AbortController();
  const res = await fetch(url, { signal: ctl.signal });
  const it = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  return {
    async until(stopAt: (t: string) => boolean): Promise<string> {
      while (!stopAt(text)) {
        const { done, value } = await it.read();
        if (done) throw new Error(`the stream ended before the expected text; got: ${text.slice(-300)}`);
        text += dec.decode(value, { stream: true });
      }
      return text;
    },
    close: () => ctl.abort(),
  };
}

describe('registry on SQLite (real processes)', () => {
  it('keeps every sandbox and group across a restart, even after SIGKILL', async () => {
    const db = join(dir, 'restart.db');
    const r1 = await startRegistry(['--store', db]);
    for (const n of ['alpha', 'beta', 'gamma'])
      expect(
        (await api(r1.url, 'PUT', `/v1/sandboxes/${n}`, { overrides: svc(4000), labels: { team: 'x' } }))
          .status,
      ).toBe(201);
    expect(
      (await api(r1.url, 'PUT', '/v1/routegroups/team-x', { match: { labels: { team: 'x' } } })).status,
    ).toBe(201);
    const before = (await api(r1.url, 'GET', '/v1/sandboxes')).body;
    await r1.proc.stop('SIGKILL');
    const r2 = await startRegistry(['--store', db], {}, r1.port);
    const after = (await api(r2.url, 'GET', '/v1/sandboxes')).body;
    expect(after.sandboxes.map((s: { name: string }) => s.name)).toEqual(['alpha', 'beta', 'gamma']);
    expect(after.sandboxes).toEqual(before.sandboxes);
    expect(after.revision).toBe(before.revision);
    expect((await api(r2.url, 'GET', '/v1/routegroups/team-x')).body.members).toEqual([
      'alpha',
      'beta',
      'gamma',
    ]);
    await r2.proc.stop();
  });

  it('validates bodies: 400 names the field and the reason, 413 over the size limit, 409 for a taken key', async () => {
    const r = await startRegistry(['--store', join(dir, 'validate.db')]);
    const bad = await api(r.url, 'PUT', '/v1/sandboxes/v1', { overrides: { payments: { http: 'ftp://x' } } });
    expect(bad.status).toBe(400);
    expect(bad.body.issues[0].path).toBe('overrides.payments.http');
    expect(bad.body.message).toMatch(/http\(s\) URL/);
    const ttl = await api(r.url, 'PUT', '/v1/sandboxes/v1', { ttl: 'soon' });
    expect(ttl.body.issues[0].path).toBe('ttl');
    const big = await api(r.url, 'PUT', '/v1/sandboxes/v1', { labels: { x: 'y'.repeat(300_000) } });
    expect(big.status).toBe(413);
    expect((await api(r.url, 'PUT', '/v1/sandboxes/one', { key: 'shared' })).status).toBe(201);
    const taken = await api(r.url, 'PUT', '/v1/sandboxes/two', { key: 'shared' });
    expect(taken.status).toBe(409);
    expect(taken.body.message).toContain('sandbox one');
    await r.proc.stop();
  });

  it('expires a sandbox and a group by TTL (the reaper runs every 250 ms), closing the sandbox history at expiry', async () => {
    const r = await startRegistry(['--store', join(dir, 'ttl.db')]);
    const src = follow(r.url);
    await src.ready(10_000);
    const put = await api(r.url, 'PUT', '/v1/sandboxes/short', {
      overrides: svc(4001),
      ttl: '1s',
      labels: { t: '1' },
    });
    await api(r.url, 'PUT', '/v1/routegroups/short-group', { match: { labels: { t: '1' } }, ttl: 1 });
    await until(() => src.table?.resolve('payments', 'short-group'), 'group rule');
    expect(src.table?.resolve('payments', 'short')?.http).toEqual(['http://127.0.0.1:4001']);
    await until(
      () =>
        !src.table?.resolve('payments', 'short') && !src.table?.groups.some((g) => g.name === 'short-group'),
      'expiry',
      { timeoutMs: 10_000 },
    );
    const tomb = (await api(r.url, 'GET', '/v1/sandboxes/short?deleted=true')).body;
    expect(tomb.deleteReason).toBe('expired');
    // Within a second of expiry on an idle machine; the bound here allows for a loaded CI box.
    expect(tomb.deletedAt - put.body.expiresAt).toBeLessThan(2000);
    expect(tomb.history.payments[0].to).toBe(tomb.deletedAt);
    expect((await api(r.url, 'GET', '/v1/sandboxes/short')).status).toBe(404);
    expect((await api(r.url, 'GET', '/v1/routegroups/short-group')).status).toBe(404);
    await r.proc.stop();
  });

  it('deletes a group marked expireWhenUnmatched when its last sandbox goes; a conflict is won by the older sandbox', async () => {
    const r = await startRegistry(['--store', join(dir, 'groups.db')]);
    await api(r.url, 'PUT', '/v1/sandboxes/old', { overrides: svc(4002), labels: { feature: 'f' } });
    await api(r.url, 'PUT', '/v1/sandboxes/new', { overrides: svc(4003), labels: { feature: 'f' } });
    const g = await api(r.url, 'PUT', '/v1/routegroups/feat', {
      match: { labels: { feature: 'f' } },
      expireWhenUnmatched: true,
    });
    expect(g.body.conflicts).toEqual([
      { group: 'feat', service: 'payments', winner: 'old', losers: ['new'] },
    ]);
    const rules = (await api(r.url, 'GET', '/v1/rules?key=feat')).body;
    expect(rules.rules).toEqual([
      expect.objectContaining({
        service: 'payments',
        sandbox: 'old',
        group: 'feat',
        http: ['http://127.0.0.1:4002'],
      }),
    ]);
    expect(rules.conflicts).toHaveLength(1);
    await api(r.url, 'DELETE', '/v1/sandboxes/old');
    expect((await api(r.url, 'GET', '/v1/rules?key=feat')).body.rules[0].sandbox).toBe('new');
    await api(r.url, 'DELETE', '/v1/sandboxes/new');
    expect((await api(r.url, 'GET', '/v1/routegroups/feat')).status).toBe(404);
    const tombs = (await api(r.url, 'GET', '/v1/routegroups?deleted=true')).body.groups;
    expect(tombs[0].deleteReason).toBe('unmatched');
    await r.proc.stop();
  });

  it('GitHub webhook: a signed "closed" event deletes the PR\'s sandboxes; unsigned or forged gets 401', async () => {
    const secret = 'webhook-secret-123';
    const r = await startRegistry(['--store', join(dir, 'hook.db'), '--github-webhook-secret', secret]);
    await api(r.url, 'PUT', '/v1/sandboxes/pr-7', {
      overrides: svc(4004),
      labels: { pr: '7', repo: 'acme/shop' },
    });
    await api(r.url, 'PUT', '/v1/sandboxes/pr-7-other-repo', {
      overrides: svc(4005),
      labels: { pr: '7', repo: 'acme/other' },
    });
    await api(r.url, 'PUT', '/v1/sandboxes/pr-8', { overrides: svc(4006), labels: { pr: '8' } });
    const payload = JSON.stringify({
      action: 'closed',
      number: 7,
      pull_request: { number: 7, merged: true },
      repository: { full_name: 'acme/shop' },
    });
    const post = (sig?: string) =>
      fetch(`${r.url}/v1/webhooks/github`, {
        method: 'POST',
        headers: {
          'x-github-event': 'pull_request',
          'x-github-delivery': randomUUID(),
          'content-type': 'application/json',
          ...(sig ? { 'x-hub-signature-256': sig } : {}),
        },
        body: payload,
      });
    expect((await post()).status).toBe(401);
    const forged = `sha256=${createHmac('sha256', 'wrong-secret').update(payload).digest('hex')}`;
    expect((await post(forged)).status).toBe(401);
    expect((await api(r.url, 'GET', '/v1/sandboxes')).body.sandboxes).toHaveLength(3);
    const good = await post(`sha256=${createHmac('sha256', secret).update(payload).digest('hex')}`);
    expect(good.status).toBe(200);
    expect(((await good.json()) as Json).deleted).toEqual(['pr-7']);
    const left = (await api(r.url, 'GET', '/v1/sandboxes')).body.sandboxes.map(
      (s: { name: string }) => s.name,
    );
    expect(left).toEqual(['pr-7-other-repo', 'pr-8']);
    expect((await api(r.url, 'GET', '/v1/sandboxes/pr-7?deleted=true')).body.deleteReason).toBe('webhook');
    await r.proc.stop();
  });

  it('--allow-endpoints, --allow-origins and --max-ttl (and their variables) set what writes may ask for', async () => {
    const r = await startRegistry(['--store', join(dir, 'limits.db'), '--max-ttl', '2h'], {
      BRANCHLINE_REGISTRY_ALLOW_ENDPOINTS: '10.0.0.0/8, *.staging.example',
      BRANCHLINE_REGISTRY_ALLOW_ORIGINS: 'https://tools.staging.example',
    });
    const inside = {
      payments: { http: 'http://10.0.3.7:8080' },
      orders: { grpc: 'orders.staging.example:50051' },
    };
    expect((await api(r.url, 'PUT', '/v1/sandboxes/ok', { overrides: inside, ttl: '2h' })).status).toBe(201);
    const outside = await api(r.url, 'PUT', '/v1/sandboxes/out', { overrides: svc(4000) });
    expect(outside.status).toBe(400);
    expect(outside.body.error).toBe('endpoint_not_allowed');
    expect(outside.body.message).toContain('10.0.0.0/8, *.staging.example');
    // Without --default-ttl, the default follows a --max-ttl shorter than 24 h.
    const plain = await api(r.url, 'PUT', '/v1/sandboxes/plain', {});
    expect(plain.body.expiresAt - plain.body.createdAt).toBe(2 * 3_600_000);
    const long = await api(r.url, 'PUT', '/v1/sandboxes/long', { ttl: '3h' });
    expect(long.status).toBe(400);
    expect(long.body.message).toMatch(/^ttl: at most 2h/);
    const fromPage = (origin: string) =>
      fetch(`${r.url}/v1/sandboxes/page`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json', origin },
        body: '{}',
      });
    expect((await fromPage('https://elsewhere.example')).status).toBe(403);
    expect((await fromPage('https://tools.staging.example')).status).toBe(201);
    const cliRefused = await cli([
      'sandbox',
      'create',
      'cli-out',
      '--service',
      'payments=http://192.168.1.5',
      '--registry',
      r.url,
    ]);
    expect(cliRefused.code).toBe(2);
    expect(cliRefused.stderr).toContain('overrides.payments.http');
    await r.proc.stop();
    const bad = await cli([
      'registry',
      '--port',
      '0',
      '--store',
      ':memory:',
      '--allow-endpoints',
      '10.0.0.0/99',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('10.0.0.0/99');
    const never = await cli(['registry', '--port', '0', '--store', ':memory:', '--default-ttl', 'none']);
    expect(never.code).toBe(2);
    expect(never.stderr).toContain('--max-ttl none');
  });

  it('tokens: reads need read, writes need write (401/403 with JSON); the sandbox token may heartbeat', async () => {
    const file = join(dir, 'tokens');
    writeFileSync(
      file,
      'reader-token-0123456789 read ci-reader\nwriter-token-0123456789 read,write deployer\n',
    );
    const r = await startRegistry(['--store', join(dir, 'auth.db'), '--token-file', file]);
    const none = await api(r.url, 'GET', '/v1/sandboxes');
    expect(none.status).toBe(401);
    expect(none.body.error).toBe('unauthorized');
    expect((await api(r.url, 'GET', '/v1/sandboxes', undefined, 'wrong-token-0123456789')).status).toBe(401);
    expect((await api(r.url, 'GET', '/v1/sandboxes', undefined, 'reader-token-0123456789')).status).toBe(200);
    const denied = await api(r.url, 'PUT', '/v1/sandboxes/x', {}, 'reader-token-0123456789');
    expect(denied.status).toBe(403);
    expect(denied.body.message).toContain('ci-reader');
    const created = await api(r.url, 'PUT', '/v1/sandboxes/x', {}, 'writer-token-0123456789');
    expect(created.status).toBe(201);
    const hb = await api(
      r.url,
      'POST',
      '/v1/sandboxes/x/heartbeat',
      { service: 'payments', http: 'http://127.0.0.1:4010' },
      created.body.sandboxToken,
    );
    expect(hb.status).toBe(200);
    expect(hb.body.overrides.payments).toEqual({ http: 'http://127.0.0.1:4010' });
    expect(
      (
        await api(
          r.url,
          'POST',
          '/v1/sandboxes/x/heartbeat',
          { service: 'payments', http: 'http://127.0.0.1:4011' },
          'reader-token-0123456789',
        )
      ).status,
    ).toBe(403);
    const cliDenied = await cli([
      'sandbox',
      'create',
      'y',
      '--registry',
      r.url,
      '--token',
      'reader-token-0123456789',
    ]);
    expect(cliDenied.code).toBe(4);
    expect(cliDenied.stderr).toContain('403');
    const watch = await fetch(`${r.url}/v1/watch`);
    expect(watch.status).toBe(401);
    await watch.body?.cancel();
    await r.proc.stop();
  });

  it('an endpoint announced by heartbeats routes while they come and stops routing when they stop', async () => {
    const r = await startRegistry(['--store', join(dir, 'heartbeat.db')]);
    const src = follow(r.url);
    await src.ready(10_000);
    await api(r.url, 'PUT', '/v1/sandboxes/live', {});
    const beat = () =>
      api(r.url, 'POST', '/v1/sandboxes/live/heartbeat', {
        service: 'orders',
        http: 'http://127.0.0.1:4020',
        ttl: 1,
      });
    expect((await beat()).status).toBe(200);
    await until(() => src.table?.resolve('orders', 'live'), 'announced rule');
    const announcedAt = src.table!.sandbox('live')!.history!.orders![0]!.from;
    await beat();
    await until(() => !src.table?.resolve('orders', 'live'), 'lease expiry', { timeoutMs: 10_000 });
    const hist = src.table!.sandbox('live')!.history!.orders!;
    expect(hist).toHaveLength(1);
    expect(hist[0]!.to).toBeGreaterThan(announcedAt);
    expect(src.table!.owner('orders', 'live', announcedAt)).toBe('live');
    expect(src.table!.owner('orders', 'live', hist[0]!.to!)).toBeUndefined();
    await r.proc.stop();
  });

  it('watch resumes from a revision with only the missed events; the SDK source survives a registry restart', async () => {
    const db = join(dir, 'resume.db');
    const r1 = await startRegistry(['--store', db]);
    await api(r1.url, 'PUT', '/v1/sandboxes/first', { overrides: svc(4030) });
    const read = async (path: string, stopAt: (t: string) => boolean) => {
      const stream = await openStream(r1.url + path);
      const text = await stream.until(stopAt);
      stream.close();
      return text;
    };
    const first = await read('/v1/watch', (t) => t.includes('event: synced'));
    expect(first).toContain('event: snapshot');
    const rev = Number(/event: synced\ndata: \{"revision":(\d+)/.exec(first)![1]);
    await api(r1.url, 'PUT', '/v1/sandboxes/second', { overrides: svc(4031) });
    await api(r1.url, 'DELETE', '/v1/sandboxes/first');
    const resumed = await read(`/v1/watch?since=${rev}`, (t) => t.includes('event: synced'));
    expect(resumed).not.toContain('event: snapshot');
    expect([...resumed.matchAll(/^event: (add|replace|remove|forget)$/gm)].map((m) => m[1])).toEqual([
      'add',
      'remove',
    ]);
    expect(resumed).toContain('"resumed":true');
    const tooNew = await read('/v1/watch?since=999999', (t) => t.includes('event: synced'));
    expect(tooNew).toContain('event: snapshot');

    const src = follow(r1.url);
    await src.ready(10_000);
    expect(src.table!.resolve('payments', 'second')?.http).toEqual(['http://127.0.0.1:4031']);
    await r1.proc.stop('SIGKILL');
    await until(() => src.status.connected === false, 'disconnect');
    expect(src.table!.resolve('payments', 'second')).toBeDefined();
    const r2 = await startRegistry(['--store', db], {}, r1.port);
    await api(r2.url, 'PUT', '/v1/sandboxes/third', { overrides: svc(4032) });
    await until(() => src.table?.resolve('payments', 'third'), 'change after restart');
    expect(src.status.reconnects).toBeGreaterThan(0);
    expect(src.table!.resolve('payments', 'second')).toBeDefined();
    await r2.proc.stop();
  });

  it('?view=routing sends sandboxes without their editing fields, in the snapshot, the live stream and a resume', async () => {
    const r = await startRegistry(['--store', join(dir, 'view.db')]);
    await api(r.url, 'PUT', '/v1/sandboxes/lean', { overrides: svc(4040), labels: { team: 'a' } });
    const lean = await openStream(`${r.url}/v1/watch?view=routing`);
    const whole = await openStream(`${r.url}/v1/watch`);
    await api(r.url, 'PUT', '/v1/sandboxes/lean', { overrides: svc(4041), labels: { team: 'a' } });
    const events = (t: string) =>
      [...t.matchAll(/^event: (\w+)\ndata: (.*)$/gm)]
        .filter((m) => m[1] !== 'heartbeat' && m[1] !== 'synced')
        .map((m) => [m[1], JSON.parse(m[2]!)] as const);
    const leanText = await lean.until((t) => t.includes('event: replace'));
    const wholeText = await whole.until((t) => t.includes('event: replace'));
    lean.close();
    whole.close();
    const [snap, change] = events(leanText);
    const [, wholeChange] = events(wholeText);
    const doc = snap![1].sandboxes[0];
    for (const d of [doc, change![1].object]) {
      expect(Object.keys(d).sort()).toEqual([
        'createdAt',
        'deletedAt',
        'expiresAt',
        'history',
        'id',
        'key',
        'labels',
        'name',
        'overrides',
        'resources',
      ]);
    }
    expect(change![1].object.overrides).toEqual(svc(4041));
    expect(change![1]).not.toHaveProperty('time');
    // Without the view, watchers get whole documents, as the dashboard needs them.
    expect(wholeChange![1].object).toMatchObject({ declared: svc(4041), status: 'ready' });
    expect(wholeChange![1]).toHaveProperty('time');
    // A resume in the routing view replays the routing frames.
    const rev = change![1].revision as number;
    const resumed = await openStream(`${r.url}/v1/watch?view=routing&since=${rev - 1}`);
    const replay = await resumed.until((t) => t.includes('event: synced'));
    resumed.close();
    expect(events(replay).map(([e, d]) => [e, Object.hasOwn(d.object, 'declared')])).toEqual([
      ['replace', false],
    ]);
    await r.proc.stop();
  });

  it('a core RouteTable from the SDK source decides by time from history and tombstones', async () => {
    const r = await startRegistry(['--store', join(dir, 'history.db')]);
    const src = follow(r.url);
    await src.ready(10_000);
    const created = (await api(r.url, 'PUT', '/v1/sandboxes/hist', { overrides: svc(4040) })).body;
    await api(r.url, 'PUT', '/v1/sandboxes/hist', {
      overrides: { ...svc(4040), orders: { http: 'http://127.0.0.1:4041' } },
    });
    const deleted = (await api(r.url, 'DELETE', '/v1/sandboxes/hist')).body.deleted;
    const t = await until(
      () => (src.table && src.table.completeUntil > deleted.deletedAt ? src.table : undefined),
      'completeUntil past the deletion',
    );
    expect(t.resolve('payments', 'hist')).toBeUndefined();
    expect(t.sandbox('hist')).toBeUndefined();
    const ordersFrom = deleted.history.orders[0].from;
    expect(t.owner('payments', 'hist', created.createdAt - 1)).toBeUndefined();
    expect(t.owner('payments', 'hist', created.createdAt)).toBe('hist');
    expect(t.owner('orders', 'hist', ordersFrom - 1)).toBeUndefined();
    expect(t.owner('orders', 'hist', ordersFrom)).toBe('hist');
    expect(t.owner('payments', 'hist', deleted.deletedAt - 1)).toBe('hist');
    expect(t.owner('payments', 'hist', deleted.deletedAt)).toBeUndefined();
    // The stream carried all of it on one connection: nothing was misparsed and retried.
    expect(src.status.reconnects).toBe(0);
    await r.proc.stop();
  });
});
