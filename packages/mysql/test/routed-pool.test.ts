import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createRuntime, type SandboxSpec, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { branchline } from '@branchline/express';
import { until } from '@branchline/test-utils';
import express from 'express';
import type { RowDataPacket } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRoutedPool, createSandboxDatabases, type RoutedPool } from '../src/index.js';
import { cleanup, createBaseline, MY, options, rows, uniqueNames } from './helpers.js';

const names = uniqueNames('r');
const dbs = createSandboxDatabases(options(names));
let dbA: string;
let dbB: string;

function sandbox(name: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return { name, key: name, createdAt: 1, ...extra };
}
const ordersDb = (extra: Record<string, unknown> = {}) => ({
  db: { type: 'mysql', spec: { from: names.baseline }, status: 'ready', ...extra },
});

async function sessionsOn(database: string): Promise<number> {
  const r = await rows<{ n: number }>(
    undefined,
    'SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ?',
    [database],
  );
  return Number(r[0]?.n ?? 0);
}

const pools: RoutedPool[] = [];
function routed(source: StaticRouteSource, extra: Parameters<typeof createRoutedPool>[0] = {}): RoutedPool {
  const pool = createRoutedPool({
    ...MY,
    database: names.baseline,
    connectionLimit: 3,
    prefix: names.prefix,
    runtime: createRuntime({ routes: source, service: 'orders' }),
    ...extra,
  });
  pools.push(pool);
  return pool;
}

const currentDb = async (pool: RoutedPool) =>
  (await pool.query<RowDataPacket[]>('SELECT DATABASE() AS db'))[0][0]?.db as string;

beforeAll(async () => {
  await createBaseline(names.baseline, 10);
  dbA = (await dbs.provision({ sandbox: 'sb-a', source: names.baseline })).database;
  dbB = (await dbs.provision({ sandbox: 'sb-b', source: names.baseline })).database;
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
});

afterAll(() => cleanup(names));

describe('routed pool', () => {
  it('serves each HTTP request from the database of its key’s sandbox, and the baseline otherwise', async () => {
    const source = new StaticRouteSource({
      sandboxes: [
        sandbox('sb-a', { resources: ordersDb() }),
        sandbox('sb-b', { resources: ordersDb() }),
        sandbox('sb-nodb', { overrides: { billing: { http: 'http://127.0.0.1:1' } } }),
      ],
    });
    const runtime = createRuntime({ routes: source, service: 'orders' });
    const pool = routed(source, { runtime });
    const app = express();
    const routing = branchline({ runtime });
    app.use(routing);
    app.get('/customers/:id', async (req, res) => {
      const [found] = await pool.execute<RowDataPacket[]>(
        'SELECT name, DATABASE() AS db FROM customers WHERE id = ?',
        [Number(req.params.id)],
      );
      res.json(found[0] ?? null);
    });
    app.post('/customers/:id', async (req, res) => {
      await pool.query('INSERT INTO customers (id, name) VALUES (?, ?)', [
        Number(req.params.id),
        'only-here',
      ]);
      res.status(201).end();
    });
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const call = async (method: string, path: string, key?: string) => {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: key ? { baggage: `branchline=${key}` } : {},
      });
      // biome-ignore lint/suspicious/noExplicitAny: the app's JSON answers, read loosely in a test
      return { status: res.status, body: (method === 'GET' ? await res.json() : undefined) as any };
    };
    try {
      expect((await call('GET', '/customers/1')).body).toEqual({ name: 'ada', db: names.baseline });
      expect((await call('GET', '/customers/1', 'sb-a')).body).toEqual({ name: 'ada', db: dbA });
      expect((await call('GET', '/customers/1', 'sb-b')).body).toEqual({ name: 'ada', db: dbB });
      expect((await call('GET', '/customers/1', 'sb-nodb')).body).toEqual({
        name: 'ada',
        db: names.baseline,
      });
      expect((await call('GET', '/customers/1', 'unknown')).body).toEqual({
        name: 'ada',
        db: names.baseline,
      });

      // A write with a key lands only in that sandbox's database.
      expect((await call('POST', '/customers/500', 'sb-b')).status).toBe(201);
      expect((await call('GET', '/customers/500', 'sb-b')).body).toEqual({ name: 'only-here', db: dbB });
      expect((await call('GET', '/customers/500')).body).toBeNull();
      expect((await call('GET', '/customers/500', 'sb-a')).body).toBeNull();
      expect(await rows(names.baseline, 'SELECT * FROM customers WHERE id = 500')).toEqual([]);

      // Concurrent requests with interleaved keys never cross.
      const keys = Array.from({ length: 30 }, (_, i) => ['sb-a', 'sb-b', undefined][i % 3]);
      const seen = await Promise.all(keys.map((k) => call('GET', '/customers/2', k)));
      expect(seen.map((r) => r.body.db)).toEqual(
        keys.map((k) => (k === 'sb-a' ? dbA : k === 'sb-b' ? dbB : names.baseline)),
      );
      expect(Object.keys(pool.stats().sandboxes).sort()).toEqual([dbA, dbB].sort());
    } finally {
      server.closeAllConnections();
      server.close();
      await routing.close();
    }
  });

  it('keeps a transaction on one connection of the sandbox database, whatever key is active later', async () => {
    const pool = routed(new StaticRouteSource({ sandboxes: [sandbox('sb-a', { resources: ordersDb() })] }));
    const conn = await withRoutingKey('sb-a', () => pool.getConnection());
    try {
      await conn.beginTransaction();
      const [[t1]] = await conn.query<RowDataPacket[]>('SELECT CONNECTION_ID() AS id, DATABASE() AS db');
      await conn.query("INSERT INTO customers VALUES (600, 'tx')");
      // Another flow with the same key must not see the uncommitted row.
      const outside = await withRoutingKey('sb-a', () =>
        pool.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM customers WHERE id = 600'),
      );
      expect(Number(outside[0][0]?.n)).toBe(0);
      const [[t2]] = await withRoutingKey(undefined, () =>
        conn.query<RowDataPacket[]>('SELECT CONNECTION_ID() AS id, DATABASE() AS db'),
      );
      expect(t2).toEqual(t1);
      expect(t1?.db).toBe(dbA);
      await conn.commit();
    } finally {
      conn.release();
    }
    expect(await rows(dbA, 'SELECT name FROM customers WHERE id = 600')).toEqual([{ name: 'tx' }]);
  });

  it('closes a sandbox’s pool when the sandbox leaves the route table, and routes its key to the baseline', async () => {
    const source = new StaticRouteSource({ sandboxes: [sandbox('sb-b', { resources: ordersDb() })] });
    const pool = routed(source);
    await withRoutingKey('sb-b', () => Promise.all([currentDb(pool), currentDb(pool)]));
    expect(pool.stats().sandboxes[dbB]?.total).toBeGreaterThan(0);
    expect(await sessionsOn(dbB)).toBeGreaterThan(0);

    source.update({ sandboxes: [] });
    expect(pool.stats().sandboxes).toEqual({});
    expect(await withRoutingKey('sb-b', () => currentDb(pool))).toBe(names.baseline);
    await until(async () => (await sessionsOn(dbB)) === 0, 'the sandbox pool’s connections to close');
  });

  it('routes to the baseline while the sandbox database is not ready, and stops routing when it is being deleted', async () => {
    const source = new StaticRouteSource({
      sandboxes: [sandbox('sb-a', { resources: ordersDb({ status: 'provisioning' }) })],
    });
    const pool = routed(source);
    expect(await withRoutingKey('sb-a', () => currentDb(pool))).toBe(names.baseline);
    source.update({ sandboxes: [sandbox('sb-a', { resources: ordersDb({ status: 'ready' }) })] });
    expect(await withRoutingKey('sb-a', () => currentDb(pool))).toBe(dbA);
    source.update({ sandboxes: [sandbox('sb-a', { resources: ordersDb({ status: 'deleting' }) })] });
    expect(await withRoutingKey('sb-a', () => currentDb(pool))).toBe(names.baseline);
    expect(pool.stats().sandboxes).toEqual({});
  });

  it('routes only the services a resource names, and matches resources by type and source database', async () => {
    const source = new StaticRouteSource({
      sandboxes: [
        sandbox('sb-a', {
          resources: { db: { type: 'mysql', spec: { from: names.baseline, services: ['billing'] } } },
        }),
        sandbox('sb-b', { resources: { other: { type: 'mysql', spec: { from: 'some_other_db' } } } }),
        sandbox('sb-c', { resources: { pg: { type: 'postgres', spec: { from: names.baseline } } } }),
      ],
    });
    const orders = routed(source);
    const billing = routed(source, { runtime: createRuntime({ routes: source, service: 'billing' }) });
    expect(await withRoutingKey('sb-a', () => currentDb(orders))).toBe(names.baseline);
    expect(await withRoutingKey('sb-a', () => currentDb(billing))).toBe(dbA);
    expect(await withRoutingKey('sb-b', () => currentDb(billing))).toBe(names.baseline);
    expect(await withRoutingKey('sb-c', () => currentDb(billing))).toBe(names.baseline);
  });

  it('makes a sandbox workload use its own database for every query, waiting for the first route table', async () => {
    const source = new StaticRouteSource();
    const pool = routed(source, { sandbox: 'sb-b', uri: `mysql://root@127.0.0.1:3306/${names.baseline}` });
    const early = currentDb(pool);
    const conn = pool.getConnection();
    source.update({
      sandboxes: [sandbox('sb-a', { resources: ordersDb() }), sandbox('sb-b', { resources: ordersDb() })],
    });
    expect(await early).toBe(dbB);
    const c = await conn;
    expect((await c.query<RowDataPacket[]>('SELECT DATABASE() AS db'))[0][0]?.db).toBe(dbB);
    c.release();
    expect(await withRoutingKey('sb-a', () => currentDb(pool))).toBe(dbB);
  });

  it('survives its sandbox database being dropped under idle connections', async () => {
    const tmp = await dbs.provision({ sandbox: 'sb-tmp', source: names.baseline });
    const source = new StaticRouteSource({ sandboxes: [sandbox('sb-tmp', { resources: ordersDb() })] });
    const pool = routed(source);
    const errors: unknown[] = [];
    pool.on('error', (err) => errors.push(err));
    expect(await withRoutingKey('sb-tmp', () => currentDb(pool))).toBe(tmp.database);
    await dbs.drop({ sandbox: 'sb-tmp', source: names.baseline });
    await until(() => errors.length > 0, 'the ended connection to be reported');
    source.update({ sandboxes: [] });
    expect(await withRoutingKey('sb-tmp', () => currentDb(pool))).toBe(names.baseline);
  });

  it('rejects options it cannot use', () => {
    const source = new StaticRouteSource();
    expect(() => routed(source, { database: undefined })).toThrow(/needs the baseline database name/);
    expect(() => routed(source, { sandboxMax: 0 })).toThrow(/sandboxMax=0/);
    expect(() => routed(source, { prefix: 'X' })).toThrow(/option prefix="X"/);
  });
});
