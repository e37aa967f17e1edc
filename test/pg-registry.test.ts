// @branchline/pg plugged into the registry: a sandbox that declares a postgres resource gets
// its own database through the sandbox lifecycle (create, progress, private outputs, delete,
// TTL expiry, sweep), against a real registry and a real PostgreSQL.
import { createHmac, randomUUID } from 'node:crypto';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import {
  createRoutedPool,
  fetchSandboxDatabase,
  postgresResourceHook,
  sandboxDatabaseName,
} from '@branchline/pg';
import { createRegistryServer, type RegistryServer } from '@branchline/registry';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admin, cleanup, PG, uniqueNames, withClient } from '../packages/pg/test/helpers.js';

const names = uniqueNames('e');
const { baseline, prefix, snapshotPrefix, catalogue } = names;

const WRITE = 'write-token';
const READ = 'read-token';

async function exists(database: string): Promise<boolean> {
  return admin(
    async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [database])).rowCount === 1,
  );
}

async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let server: RegistryServer;
let url: string;
let baselineUser: pg.Client;

async function api(method: string, path: string, body?: unknown, token = WRITE) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: the registry's JSON documents, read loosely in a test
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

beforeAll(async () => {
  await admin((c) => c.query(`CREATE DATABASE "${baseline}"`));
  await withClient(baseline, async (c) => {
    await c.query('CREATE TABLE orders (id int PRIMARY KEY, item text, note text)');
    await c.query("INSERT INTO orders SELECT g, 'item-' || g, 'note-' || g FROM generate_series(1, 20) g");
  });
  // The baseline is in use the whole time.
  baselineUser = new pg.Client({ ...PG, database: baseline });
  baselineUser.on('error', () => {});
  await baselineUser.connect();
  server = createRegistryServer({
    store: ':memory:',
    tokens: [
      { token: WRITE, scopes: ['read', 'write'] },
      { token: READ, scopes: ['read'] },
    ],
    resourceHooks: [
      // A short grace period: a sandbox created while a sweep runs must not be swept.
      postgresResourceHook({ connection: PG, prefix, snapshotPrefix, catalogue, sweepGraceMs: 5000 }),
    ],
    githubWebhookSecret: 'hook-secret',
    reapIntervalMs: 100,
    sweepIntervalMs: 500,
    retryIntervalMs: 500,
    log: () => {},
  });
  url = await server.listen(0);
});

afterAll(async () => {
  await server?.close();
  await baselineUser?.end().catch(() => {});
  await cleanup(names);
});

describe('postgres resources through the registry', () => {
  it('gives a sandbox its own seeded database with progress and private outputs, and drops it on delete', async () => {
    const created = await api('PUT', '/v1/sandboxes/pr-db', {
      overrides: { orders: { http: 'http://127.0.0.1:9' } },
      resources: { 'orders-db': { type: 'postgres', spec: { from: baseline } } },
    });
    expect(created.status).toBe(201);
    const sandboxToken = created.body.sandboxToken as string;

    const phases = new Set<string>();
    const doc = await eventually('the database to be ready', async () => {
      const s = (await api('GET', '/v1/sandboxes/pr-db')).body;
      const r = s.resources['orders-db'];
      if (r.progress?.phase) phases.add(r.progress.phase);
      if (r.status === 'failed') throw new Error(`provisioning failed: ${r.error}`);
      return r.status === 'ready' ? s : undefined;
    });
    // Progress reached the registry (stored throttled, so the last report lands a moment later).
    const final = await eventually('the ready progress report', async () => {
      const p = (await api('GET', '/v1/sandboxes/pr-db')).body.resources['orders-db'].progress;
      if (p?.phase) phases.add(p.phase);
      return p?.phase === 'ready' ? p : undefined;
    });
    expect(final).toMatchObject({ unit: 'bytes' });
    expect(final.total).toBeGreaterThan(0);
    expect([...phases].some((p) => p === 'snapshot' || p === 'cloning')).toBe(true);
    // The public document never carries the connection details.
    expect(JSON.stringify(doc)).not.toContain('postgres://');

    // A sandbox workload reads them with its own token.
    const outputs = await fetchSandboxDatabase('orders-db', {
      registry: url,
      sandbox: 'pr-db',
      token: sandboxToken,
    });
    await expect(
      fetchSandboxDatabase('orders-db', { registry: url, sandbox: 'pr-db', token: READ }),
    ).rejects.toThrow(/refused the connection details of pr-db\/orders-db \(HTTP 403\)/);
    expect(outputs.database).toBe(sandboxDatabaseName(baseline, 'pr-db', prefix));
    const copy = new pg.Client({ connectionString: outputs.url });
    await copy.connect();
    expect((await copy.query('SELECT count(*)::int AS n FROM orders')).rows[0]).toEqual({ n: 20 });
    await copy.query('ALTER TABLE orders DROP COLUMN note');
    await copy.end();
    expect((await baselineUser.query('SELECT note FROM orders WHERE id = 3')).rows).toEqual([
      { note: 'note-3' },
    ]);

    // A routed pool following the registry's sandbox documents sends pr-db's queries there.
    const list = (await api('GET', '/v1/sandboxes')).body.sandboxes;
    const source = new StaticRouteSource({ sandboxes: list });
    const pool = createRoutedPool({
      ...PG,
      database: baseline,
      prefix,
      max: 2,
      runtime: createRuntime({ routes: source, service: 'orders' }),
    });
    const where = async () => (await pool.query('SELECT current_database() AS db')).rows[0]?.db;
    expect(await withRoutingKey('pr-db', where)).toBe(outputs.database);
    expect(await where()).toBe(baseline);

    const deleted = await api('DELETE', '/v1/sandboxes/pr-db');
    expect(deleted.status).toBe(200);
    expect(await exists(outputs.database)).toBe(false);
    source.update({ sandboxes: (await api('GET', '/v1/sandboxes')).body.sandboxes });
    expect(await withRoutingKey('pr-db', where)).toBe(baseline);
    await pool.end();
  });

  it('drops the database when the sandbox’s TTL expires', async () => {
    const r = await api('PUT', '/v1/sandboxes/pr-ttl', {
      resources: { db: { type: 'postgres', spec: { from: baseline } } },
      ttl: 600,
    });
    expect(r.status).toBe(201);
    const database = sandboxDatabaseName(baseline, 'pr-ttl', prefix);
    await eventually('the database to exist', async () => ((await exists(database)) ? true : undefined));
    await api('PUT', '/v1/sandboxes/pr-ttl', {
      resources: { db: { type: 'postgres', spec: { from: baseline } } },
      expiresAt: Date.now() + 300,
    });
    await eventually('the expired sandbox’s database to be dropped', async () =>
      (await exists(database)) ? undefined : true,
    );
  });

  it('drops the database when the sandbox’s pull request is closed', async () => {
    await api('PUT', '/v1/sandboxes/pr-77', {
      labels: { pr: '77' },
      resources: { db: { type: 'postgres', spec: { from: baseline } } },
    });
    const database = sandboxDatabaseName(baseline, 'pr-77', prefix);
    await eventually('the database to be ready', async () =>
      (await api('GET', '/v1/sandboxes/pr-77')).body.resources.db.status === 'ready' ? true : undefined,
    );
    expect(await exists(database)).toBe(true);
    const payload = JSON.stringify({
      action: 'closed',
      number: 77,
      pull_request: { number: 77, merged: true },
    });
    const res = await fetch(`${url}/v1/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'pull_request',
        'x-github-delivery': randomUUID(),
        'x-hub-signature-256': `sha256=${createHmac('sha256', 'hook-secret').update(payload).digest('hex')}`,
      },
      body: payload,
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { deleted: string[] }).deleted).toEqual(['pr-77']);
    await eventually('the closed PR’s database to be dropped', async () =>
      (await exists(database)) ? undefined : true,
    );
  });

  it('rejects an invalid source name at PUT and fails a missing source clearly, creating nothing', async () => {
    const bad = await api('PUT', '/v1/sandboxes/pr-bad', {
      resources: { db: { type: 'postgres', spec: { from: 'orders; drop' } } },
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toContain('spec.from');

    const missing = `${baseline}_nope`;
    await api('PUT', '/v1/sandboxes/pr-missing', {
      resources: { db: { type: 'postgres', spec: { from: missing } } },
    });
    const failed = await eventually('the resource to fail', async () => {
      const r = (await api('GET', '/v1/sandboxes/pr-missing')).body.resources.db;
      return r.status === 'failed' ? r : undefined;
    });
    expect(failed.error).toContain(`"${missing}" does not exist`);
    expect(await exists(sandboxDatabaseName(missing, 'pr-missing', prefix))).toBe(false);
    await api('DELETE', '/v1/sandboxes/pr-missing');
  });

  it('sweeps a sandbox database nobody owns', async () => {
    const orphan = sandboxDatabaseName(baseline, 'gone-long-ago', prefix);
    await admin((c) => c.query(`CREATE DATABASE "${orphan}"`));
    await eventually('the sweeper to drop the orphan', async () =>
      (await exists(orphan)) ? undefined : true,
    );
  });
});
