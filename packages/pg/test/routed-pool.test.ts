import { createRuntime, type SandboxSpec, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRoutedPool, createSandboxDatabases, type RoutedPool } from '../src/index.js';
import { admin, cleanup, createBaseline, options, PG, uniqueNames, withClient } from './helpers.js';

const names = uniqueNames('r');
const dbs = createSandboxDatabases(options(names));
let dbA: string;
let dbB: string;

function sandbox(name: string, extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return { name, key: name, createdAt: 1, ...extra };
}
const ordersDb = (extra: Record<string, unknown> = {}) => ({
  db: { type: 'postgres', spec: { from: names.baseline }, status: 'ready', ...extra },
});

async function connectionsTo(database: string): Promise<number> {
  const r = await admin((c) =>
    c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [database]),
  );
  return r.rows[0]?.n ?? 0;
}

const pools: RoutedPool[] = [];
function routed(source: StaticRouteSource, extra: Parameters<typeof createRoutedPool>[0] = {}): RoutedPool {
  const pool = createRoutedPool({
    ...PG,
    database: names.baseline,
    max: 3,
    prefix: names.prefix,
    runtime: createRuntime({ routes: source, service: 'orders' }),
    ...extra,
  });
  pools.push(pool);
  return pool;
}

const currentDb = async (pool: RoutedPool) =>
  (await pool.query<{ db: string }>('SELECT current_database() AS db')).rows[0]?.db;

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
  it('sends each query to the database of the active key’s sandbox, and to the baseline otherwise', async () => {
    const source = new StaticRouteSource({
      sandboxes: [
        sandbox('sb-a', { resources: ordersDb(), labels: { team: 'x' } }),
        sandbox('sb-b', { resources: ordersDb() }),
        sandbox('sb-nodb', { overrides: { orders: { http: 'http://127.0.0.1:1' } } }),
      ],
      groups: [{ name: 'grp', key: 'grp-x', match: { labels: { team: 'x' } } }],
    });
    const pool = routed(source);
    expect(await currentDb(pool)).toBe(names.baseline);
    expect(await withRoutingKey('sb-a', () => currentDb(pool))).toBe(dbA);
    expect(await withRoutingKey('sb-b', () => currentDb(pool))).toBe(dbB);
    expect(await withRoutingKey('sb-nodb', () => currentDb(pool))).toBe(names.baseline);
    expect(await withRoutingKey('unknown-key', () => currentDb(pool))).toBe(names.baseline);
    expect(await withRoutingKey('grp-x', () => currentDb(pool))).toBe(dbA);

    // Interleaved keys in concurrent flows never cross.
    const seen = await Promise.all(
      Array.from({ length: 30 }, (_, i) => {
        const key = ['sb-a', 'sb-b', undefined][i % 3];
        return withRoutingKey(key, async () => ({ key, db: await currentDb(pool) }));
      }),
    );
    for (const { key, db } of seen)
      expect(db).toBe(key === 'sb-a' ? dbA : key === 'sb-b' ? dbB : names.baseline);

    // A write with a key lands only in that sandbox's database.
    await withRoutingKey('sb-b', () => pool.query("INSERT INTO customers VALUES (500, 'only-in-b')"));
    const inB = await withClient(dbB, (c) => c.query('SELECT name FROM customers WHERE id = 500'));
    const inBase = await withClient(names.baseline, (c) =>
      c.query('SELECT name FROM customers WHERE id = 500'),
    );
    expect(inB.rows).toEqual([{ name: 'only-in-b' }]);
    expect(inBase.rows).toEqual([]);
    expect(Object.keys(pool.stats().sandboxes).sort()).toEqual([dbA, dbB].sort());
  });

  it('keeps a transaction on one connection of the sandbox database, whatever key is active later', async () => {
    const pool = routed(new StaticRouteSource({ sandboxes: [sandbox('sb-a', { resources: ordersDb() })] }));
    const client = await withRoutingKey('sb-a', () => pool.connect());
    try {
      await client.query('BEGIN');
      const pid1 = (await client.query('SELECT pg_backend_pid() AS p')).rows[0].p;
      await client.query("INSERT INTO customers VALUES (600, 'tx')");
      // Another flow without a key must not see the uncommitted row nor steal the connection.
      const outside = await pool.query('SELECT count(*)::int AS n FROM customers WHERE id = 600');
      expect(outside.rows[0]).toEqual({ n: 0 });
      const pid2 = (await withRoutingKey(undefined, () => client.query('SELECT pg_backend_pid() AS p')))
        .rows[0].p;
      expect(pid2).toBe(pid1);
      expect((await client.query('SELECT current_database() AS db')).rows[0].db).toBe(dbA);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const committed = await withClient(dbA, (c) => c.query('SELECT name FROM customers WHERE id = 600'));
    expect(committed.rows).toEqual([{ name: 'tx' }]);
  });

  it('closes a sandbox’s pool when the sandbox leaves the route table, and routes its key to the baseline', async () => {
    const source = new StaticRouteSource({ sandboxes: [sandbox('sb-b', { resources: ordersDb() })] });
    const pool = routed(source, { idleTimeoutMillis: 60_000 });
    await withRoutingKey('sb-b', () => Promise.all([currentDb(pool), currentDb(pool)]));
    expect(pool.stats().sandboxes[dbB]?.total).toBeGreaterThan(0);
    const before = await connectionsTo(dbB);
    expect(before).toBeGreaterThan(0);

    source.update({ sandboxes: [] });
    expect(pool.stats().sandboxes).toEqual({});
    expect(await withRoutingKey('sb-b', () => currentDb(pool))).toBe(names.baseline);
    await until(async () => (await connectionsTo(dbB)) === 0, 'the sandbox pool’s connections to close');
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

  it('routes only the services a resource names, and matches resources by source database', async () => {
    const source = new StaticRouteSource({
      sandboxes: [
        sandbox('sb-a', {
          resources: { db: { type: 'postgres', spec: { from: names.baseline, services: ['billing'] } } },
        }),
        sandbox('sb-b', { resources: { other: { type: 'postgres', spec: { from: 'some_other_db' } } } }),
      ],
    });
    const orders = routed(source);
    const billing = routed(source, { runtime: createRuntime({ routes: source, service: 'billing' }) });
    expect(await withRoutingKey('sb-a', () => currentDb(orders))).toBe(names.baseline);
    expect(await withRoutingKey('sb-a', () => currentDb(billing))).toBe(dbA);
    expect(await withRoutingKey('sb-b', () => currentDb(billing))).toBe(names.baseline);
  });

  it('makes a sandbox workload use its own database for every query, with or without a key', async () => {
    const source = new StaticRouteSource({
      sandboxes: [sandbox('sb-a', { resources: ordersDb() }), sandbox('sb-b', { resources: ordersDb() })],
    });
    const pool = routed(source, { sandbox: 'sb-b' });
    expect(await currentDb(pool)).toBe(dbB);
    expect(await withRoutingKey('sb-a', () => currentDb(pool))).toBe(dbB);
    const client = await pool.connect();
    expect((await client.query('SELECT current_database() AS db')).rows[0].db).toBe(dbB);
    client.release();
  });

  it('makes a sandbox workload wait for the first route table instead of querying the baseline', async () => {
    const source = new StaticRouteSource();
    const pool = routed(source, { sandbox: 'sb-b' });
    const early = currentDb(pool);
    const client = pool.connect();
    source.update({ sandboxes: [sandbox('sb-b', { resources: ordersDb() })] });
    expect(await early).toBe(dbB);
    const c = await client;
    expect((await c.query('SELECT current_database() AS db')).rows[0].db).toBe(dbB);
    c.release();
  });

  it('survives its sandbox database being dropped under idle connections', async () => {
    const tmp = await dbs.provision({ sandbox: 'sb-tmp', source: names.baseline });
    const source = new StaticRouteSource({ sandboxes: [sandbox('sb-tmp', { resources: ordersDb() })] });
    const pool = routed(source, { idleTimeoutMillis: 60_000 });
    const errors: unknown[] = [];
    pool.on('error', (err) => errors.push(err));
    expect(await withRoutingKey('sb-tmp', () => currentDb(pool))).toBe(tmp.database);
    await dbs.drop({ sandbox: 'sb-tmp', source: names.baseline });
    await until(async () => errors.length > 0, 'the idle connection error to be reported');
    source.update({ sandboxes: [] });
    expect(await withRoutingKey('sb-tmp', () => currentDb(pool))).toBe(names.baseline);
  });
});
