// @branchline/mysql plugged into a real registry: a sandbox that declares a mysql resource gets
// its own database through the sandbox lifecycle (create, progress, private outputs, delete,
// TTL expiry, sweep), against a real MariaDB.
import { createRuntime, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { createRegistryServer, type RegistryServer } from '@branchline/registry';
import { until } from '@branchline/test-utils';
import mysql, { type RowDataPacket } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRoutedPool,
  fetchSandboxDatabase,
  mysqlResourceHook,
  quoteIdent,
  sandboxDatabaseName,
} from '../src/index.js';
import { admin, cleanup, createBaseline, exists, MY, uniqueNames } from './helpers.js';

const names = uniqueNames('e');
const { baseline, prefix, adminDatabase, catalogue } = names;
const WRITE = 'write-token';
const READ = 'read-token';

let server: RegistryServer;
let url: string;

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
  await createBaseline(baseline, 20);
  server = createRegistryServer({
    store: ':memory:',
    tokens: [
      { token: WRITE, scopes: ['read', 'write'] },
      { token: READ, scopes: ['read'] },
    ],
    resourceHooks: [
      // A short grace period: a sandbox created while a sweep runs must not be swept.
      mysqlResourceHook({ connection: { ...MY }, prefix, adminDatabase, catalogue, sweepGraceMs: 5000 }),
    ],
    reapIntervalMs: 100,
    sweepIntervalMs: 500,
    retryIntervalMs: 500,
    log: () => {},
  });
  url = await server.listen(0);
});

afterAll(async () => {
  await server?.close();
  await cleanup(names);
});

describe('mysql resources through the registry', () => {
  it('gives a sandbox its own copied database with progress and private outputs, and drops it on delete', async () => {
    const created = await api('PUT', '/v1/sandboxes/pr-db', {
      overrides: { orders: { http: 'http://127.0.0.1:9' } },
      resources: { 'orders-db': { type: 'mysql', spec: { from: baseline } } },
    });
    expect(created.status).toBe(201);
    const sandboxToken = created.body.sandboxToken as string;

    const doc = await until(async () => {
      const s = (await api('GET', '/v1/sandboxes/pr-db')).body;
      const r = s.resources['orders-db'];
      if (r.status === 'failed') throw new Error(`provisioning failed: ${r.error}`);
      return r.status === 'ready' ? s : undefined;
    }, 'the database to be ready');
    const final = await until(async () => {
      const p = (await api('GET', '/v1/sandboxes/pr-db')).body.resources['orders-db'].progress;
      return p?.phase === 'ready' ? p : undefined;
    }, 'the ready progress report');
    expect(final).toMatchObject({ unit: 'tables', done: 3, total: 3 });
    // The public document never carries the connection details.
    expect(JSON.stringify(doc)).not.toContain('mysql://');

    // The sandbox's own token reads them; a read token does not.
    const outputs = await fetchSandboxDatabase('orders-db', {
      registry: url,
      sandbox: 'pr-db',
      token: sandboxToken,
    });
    await expect(
      fetchSandboxDatabase('orders-db', { registry: url, sandbox: 'pr-db', token: READ }),
    ).rejects.toThrow(/refused the connection details of pr-db\/orders-db \(HTTP 403\)/);
    const database = sandboxDatabaseName(baseline, 'pr-db', prefix);
    expect(outputs).toMatchObject({
      database,
      source: baseline,
      url: `mysql://root@127.0.0.1:3306/${database}`,
    });

    // A non-backward-compatible change in the copy leaves the baseline as it was.
    const copy = await mysql.createConnection(outputs.url);
    const [[count]] = await copy.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM orders');
    expect(Number(count?.n)).toBe(20);
    await copy.query('ALTER TABLE orders DROP COLUMN note');
    await copy.end();
    await admin(async (c) => {
      const [[row]] = await c.query<RowDataPacket[]>(
        `SELECT note FROM ${quoteIdent(baseline)}.orders WHERE id = 3`,
      );
      expect(row).toEqual({ note: 'note-3' });
    });

    // A routed pool following the registry's sandbox documents sends pr-db's queries there.
    const list = (await api('GET', '/v1/sandboxes')).body.sandboxes;
    const source = new StaticRouteSource({ sandboxes: list });
    const pool = createRoutedPool({
      ...MY,
      database: baseline,
      prefix,
      connectionLimit: 2,
      runtime: createRuntime({ routes: source, service: 'orders' }),
    });
    const where = async () => (await pool.query<RowDataPacket[]>('SELECT DATABASE() AS db'))[0][0]?.db;
    expect(await withRoutingKey('pr-db', where)).toBe(database);
    expect(await where()).toBe(baseline);

    const deleted = await api('DELETE', '/v1/sandboxes/pr-db');
    expect(deleted.status).toBe(200);
    expect(await exists(database)).toBe(false);
    source.update({ sandboxes: (await api('GET', '/v1/sandboxes')).body.sandboxes });
    expect(await withRoutingKey('pr-db', where)).toBe(baseline);
    await pool.end();
  });

  it('drops the database when the sandbox’s TTL expires', async () => {
    const resources = { db: { type: 'mysql', spec: { from: baseline } } };
    expect((await api('PUT', '/v1/sandboxes/pr-ttl', { resources, ttl: 600 })).status).toBe(201);
    const database = sandboxDatabaseName(baseline, 'pr-ttl', prefix);
    await until(
      async () => (await api('GET', '/v1/sandboxes/pr-ttl')).body.resources.db.status === 'ready',
      'the database to be ready',
    );
    expect(await exists(database)).toBe(true);
    await api('PUT', '/v1/sandboxes/pr-ttl', { resources, expiresAt: Date.now() + 300 });
    await until(async () => !(await exists(database)), 'the expired sandbox’s database to be dropped');
  });

  it('rejects an invalid source name at PUT and fails a missing source clearly, creating nothing', async () => {
    const bad = await api('PUT', '/v1/sandboxes/pr-bad', {
      resources: { db: { type: 'mysql', spec: { from: 'orders`; drop' } } },
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toContain('spec.from');
    const system = await api('PUT', '/v1/sandboxes/pr-bad', {
      resources: { db: { type: 'mysql', spec: { from: 'mysql' } } },
    });
    expect(system.status).toBe(400);
    expect(JSON.stringify(system.body)).toContain('system database');

    const missing = `${baseline}_nope`;
    await api('PUT', '/v1/sandboxes/pr-missing', {
      resources: { db: { type: 'mysql', spec: { from: missing } } },
    });
    const failed = await until(async () => {
      const r = (await api('GET', '/v1/sandboxes/pr-missing')).body.resources.db;
      return r.status === 'failed' ? r : undefined;
    }, 'the resource to fail');
    expect(failed.error).toContain(`"${missing}" does not exist`);
    expect(await exists(sandboxDatabaseName(missing, 'pr-missing', prefix))).toBe(false);
    await api('DELETE', '/v1/sandboxes/pr-missing');
  });

  it('sweeps a sandbox database nobody owns', async () => {
    const orphan = sandboxDatabaseName(baseline, 'gone-long-ago', prefix);
    await admin((c) => c.query(`CREATE DATABASE ${quoteIdent(orphan)}`));
    await until(async () => !(await exists(orphan)), 'the sweeper to drop the orphan');
  });
});
