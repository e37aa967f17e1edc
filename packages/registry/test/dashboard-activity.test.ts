import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  activityReporterStats,
  type BranchlineLogger,
  configureActivityReporter,
  flushActivity,
  setLogger,
} from '@branchline/core';
import { recordActivity } from '@branchline/core/transport';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ActivityLog } from '../src/activity.js';
import { createRegistryServer, type RegistryServer } from '../src/index.js';

const WRITE = 'activity-write-token-0123456789';
const READ = 'activity-read-token-0123456789';
const REPORT = 'activity-report-token-0123456789';
const REPORT_ONLY = 'activity-reportonly-token-0123456789';

let dir: string;
let registry: RegistryServer;
let url: string;

async function call(
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

interface SnapshotJson {
  windowMs: number;
  sandboxes: Record<
    string,
    {
      total: Record<string, number>;
      services: Record<string, Record<string, number>>;
      series: number[];
    }
  >;
}

async function activity(query = ''): Promise<SnapshotJson> {
  const r = await call('GET', `/v1/activity${query}`, READ);
  expect(r.status).toBe(200);
  return r.json as unknown as SnapshotJson;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'branchline-activity-'));
  registry = createRegistryServer({
    store: join(dir, 'registry.db'),
    tokens: [
      { token: WRITE, scopes: ['write'], name: 'sdk' },
      { token: READ, scopes: ['read'], name: 'dashboard' },
      { token: REPORT, scopes: ['read', 'report'], name: 'service' },
      { token: REPORT_ONLY, scopes: ['report'], name: 'reporter' },
    ],
    log: () => {},
  });
  url = await registry.listen(0);
});

afterAll(async () => {
  configureActivityReporter(false);
  await registry?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

afterEach(() => {
  configureActivityReporter(false);
  setLogger(undefined);
});

describe('POST /v1/activity and GET /v1/activity', () => {
  it('accepts a report with a report or write token and says which scope is missing', async () => {
    const entries = [{ sandbox: 'auth-a', service: 'payments', kind: 'forwarded', count: 1 }];
    expect((await call('POST', '/v1/activity', undefined, { entries })).status).toBe(401);
    const denied = await call('POST', '/v1/activity', READ, { entries });
    expect(denied.status).toBe(403);
    expect(denied.json.message).toMatch(/needs "report"/);
    const ok = await call('POST', '/v1/activity', WRITE, { entries });
    expect(ok.status).toBe(202);
    expect(ok.json).toEqual({ accepted: 1, dropped: 0 });
    const reported = await call('POST', '/v1/activity', REPORT, { entries });
    expect(reported.status).toBe(202);
    expect((await call('POST', '/v1/activity', REPORT_ONLY, { entries })).status).toBe(202);
    expect((await activity()).sandboxes['auth-a']?.services.payments?.forwarded).toBe(3);
    expect((await call('GET', '/v1/activity')).status).toBe(401);
  });

  it('a report token changes nothing else: writes are 403, and reads need read', async () => {
    const put = await call('PUT', '/v1/sandboxes/report-a', REPORT, {
      overrides: { payments: { http: 'http://127.0.0.1:4100' } },
    });
    expect(put.status).toBe(403);
    expect(put.json.message).toMatch(/has scopes \[read, report\]; this request needs "write"/);
    expect((await call('GET', '/v1/sandboxes', REPORT)).status).toBe(200);
    const blind = await call('GET', '/v1/activity', REPORT_ONLY);
    expect(blind.status).toBe(403);
    expect(blind.json.message).toMatch(/needs "read"/);
    expect((await call('DELETE', '/v1/sandboxes/report-a', REPORT_ONLY)).status).toBe(403);
  });

  it('rejects a malformed entry with a 400 that names the field', async () => {
    const r = await call('POST', '/v1/activity', WRITE, [
      { sandbox: 'bad-a', service: 'payments', kind: 'forwarded', count: 1 },
      { sandbox: 'bad-a', service: 'payments', kind: 'teleported', count: 1 },
    ]);
    expect(r.status).toBe(400);
    expect(r.json.message).toMatch(/^entries\.1\.kind: /);
    expect((await activity()).sandboxes['bad-a']).toBeUndefined();
  });

  it('adds up counts per sandbox, service and kind, and filters by ?sandbox=', async () => {
    const at = Date.now();
    await call('POST', '/v1/activity', WRITE, {
      entries: [
        { sandbox: 'sum-a', service: 'payments', kind: 'forwarded', count: 5, at },
        { sandbox: 'sum-a', service: 'payments', kind: 'forwarded', count: 2, at },
        { sandbox: 'sum-a', service: 'shipping', kind: 'consumed', count: 4, at },
        { sandbox: 'sum-b', service: 'orders', kind: 'routed', count: 1, at },
      ],
    });
    const all = await activity();
    expect(all.sandboxes['sum-a']!.total).toEqual({ forwarded: 7, consumed: 4, routed: 0 });
    expect(all.sandboxes['sum-a']!.services).toEqual({
      payments: { forwarded: 7, consumed: 0, routed: 0 },
      shipping: { forwarded: 0, consumed: 4, routed: 0 },
    });
    expect(all.sandboxes['sum-a']!.series.reduce((a, b) => a + b, 0)).toBe(11);
    const one = await activity('?sandbox=sum-b');
    expect(Object.keys(one.sandboxes)).toEqual(['sum-b']);
  });
});

describe('ActivityLog (the rolling window)', () => {
  const entry = (count: number, at?: number) => ({
    sandbox: 'win',
    service: 'payments',
    kind: 'forwarded',
    count,
    at,
  });

  it('forgets counts once they leave the window', () => {
    const log = new ActivityLog({ windowMs: 60_000, bucketMs: 10_000 });
    const t0 = 1_000_000;
    log.report([entry(3)], t0);
    log.report([entry(4)], t0 + 30_000);
    expect(log.snapshot(t0 + 30_000).sandboxes.win!.total.forwarded).toBe(7);
    expect(log.snapshot(t0 + 65_000).sandboxes.win!.total.forwarded).toBe(4);
    expect(log.snapshot(t0 + 100_000).sandboxes.win).toBeUndefined();
  });

  it('counts a report stamped outside the window (a skewed clock) as now', () => {
    const log = new ActivityLog({ windowMs: 60_000, bucketMs: 10_000 });
    const now = 5_000_000;
    log.report([entry(2, now + 3_600_000), entry(5, now - 3_600_000)], now);
    const snap = log.snapshot(now);
    expect(snap.sandboxes.win!.total.forwarded).toBe(7);
    expect(snap.sandboxes.win!.series.at(-1)).toBe(7);
  });

  it('drops reports for more sandboxes than it tracks instead of growing without bound', () => {
    const log = new ActivityLog({ maxSandboxes: 2 });
    const r = log.report(
      ['a', 'b', 'c'].map((sandbox) => ({ sandbox, service: 's', kind: 'routed', count: 1 })),
      1000,
    );
    expect(r).toEqual({ accepted: 2, dropped: 1 });
    expect(Object.keys(log.snapshot(1000).sandboxes)).toEqual(['a', 'b']);
  });
});

describe('the SDK activity reporter (recordActivity in @branchline/core)', () => {
  function captureWarnings(): string[] {
    const warnings: string[] = [];
    const log: BranchlineLogger = {
      debug: () => {},
      info: () => {},
      warn: (msg) => warnings.push(msg),
      error: (msg) => warnings.push(msg),
    };
    setLogger(log);
    return warnings;
  }

  it('sends batched counts to the registry on its timer', async () => {
    configureActivityReporter({ registry: url, token: WRITE, intervalMs: 50 });
    for (let i = 0; i < 40; i++) recordActivity('sdk-timer', 'payments', 'forwarded');
    recordActivity('sdk-timer', 'shipping', 'consumed', 3);
    await expect
      .poll(async () => (await activity('?sandbox=sdk-timer')).sandboxes['sdk-timer']?.total, {
        timeout: 10_000,
      })
      .toEqual({ forwarded: 40, consumed: 3, routed: 0 });
    expect(activityReporterStats()).toMatchObject({ active: true, sent: 43, dropped: 0 });
  });

  it('reads BRANCHLINE_REGISTRY and BRANCHLINE_TOKEN when not configured in code', async () => {
    process.env.BRANCHLINE_REGISTRY = url;
    process.env.BRANCHLINE_TOKEN = WRITE;
    try {
      configureActivityReporter(undefined);
      recordActivity('sdk-env', 'orders', 'routed', 2);
      await flushActivity();
      expect((await activity('?sandbox=sdk-env')).sandboxes['sdk-env']!.total.routed).toBe(2);
    } finally {
      delete process.env.BRANCHLINE_REGISTRY;
      delete process.env.BRANCHLINE_TOKEN;
    }
  });

  it('does nothing without a registry, and ignores baseline traffic (no sandbox)', async () => {
    configureActivityReporter(undefined);
    recordActivity('sdk-off', 'payments', 'forwarded');
    expect(activityReporterStats().active).toBe(false);
    configureActivityReporter({ registry: url, token: WRITE });
    recordActivity(undefined, 'payments', 'forwarded');
    recordActivity('sdk-none', undefined, 'forwarded');
    await flushActivity();
    expect(activityReporterStats().sent).toBe(0);
  });

  it('drops the counts and warns once when the token may not write, without throwing', async () => {
    const warnings = captureWarnings();
    configureActivityReporter({ registry: url, token: READ });
    recordActivity('sdk-denied', 'payments', 'forwarded', 5);
    await flushActivity();
    recordActivity('sdk-denied', 'payments', 'forwarded', 2);
    await flushActivity();
    expect(activityReporterStats()).toMatchObject({ sent: 0, dropped: 7, failures: 2 });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/refused an activity report \(403 .*report scope/);
    expect((await activity()).sandboxes['sdk-denied']).toBeUndefined();
  });

  it('drops the counts and says where it tried when the registry is unreachable', async () => {
    const warnings = captureWarnings();
    const closed = createRegistryServer({ store: ':memory:', log: () => {} });
    const deadUrl = await closed.listen(0);
    await closed.close();
    configureActivityReporter({ registry: deadUrl, token: WRITE, requestTimeoutMs: 2000 });
    recordActivity('sdk-down', 'payments', 'forwarded', 3);
    await flushActivity();
    expect(activityReporterStats()).toMatchObject({ sent: 0, dropped: 3 });
    expect(warnings.join('\n')).toContain(
      `cannot send activity to the registry at ${new URL(deadUrl).origin}`,
    );
  });

  it('rejects a registry option that is not an http(s) URL, naming it', () => {
    expect(() => configureActivityReporter({ registry: 'branchline:7070' })).toThrow(
      /option registry="branchline:7070" must be an http\(s\) URL/,
    );
  });
});

describe('GET / (the dashboard page)', () => {
  it('serves one HTML page whose Content-Security-Policy allows exactly its inline script and style', async () => {
    const res = await fetch(`${url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    const csp = /http-equiv="Content-Security-Policy" content="([^"]+)"/.exec(html)?.[1] ?? '';
    const script = /<script>([\s\S]*)<\/script>/.exec(html)![1]!;
    const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1]!;
    const sha = (s: string) => createHash('sha256').update(s).digest('base64');
    expect(csp).toContain(`script-src 'sha256-${sha(script)}'`);
    expect(csp).toContain(`style-src 'sha256-${sha(style)}'`);
    expect(csp).toContain("connect-src 'self'");
  });
});
