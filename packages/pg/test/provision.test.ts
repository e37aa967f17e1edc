import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  postgresResourceHook,
  type ResourceContext,
  type ResourceProgress,
  SandboxDatabaseError,
  sandboxDatabaseName,
} from '../src/index.js';
import {
  admin,
  catalogueRows,
  cleanup,
  createBaseline,
  databasesLike,
  options,
  PG,
  uniqueNames,
  withClient,
} from './helpers.js';

const names = uniqueNames('p');
const hook = postgresResourceHook(options(names));

function ctx(
  sandbox: string,
  spec: Record<string, unknown>,
  progress: ResourceProgress[] = [],
): ResourceContext {
  return {
    sandbox: { name: sandbox, key: sandbox, labels: {} },
    resource: { name: 'orders-db', type: 'postgres', spec },
    report: (p) => progress.push(p),
    signal: new AbortController().signal,
  };
}

// The baseline stays "in active use" for the whole file: an open session and a transaction.
let baselineUser: pg.Client;

beforeAll(async () => {
  await createBaseline(names.baseline);
  baselineUser = new pg.Client({ ...PG, database: names.baseline });
  baselineUser.on('error', () => {});
  await baselineUser.connect();
  await baselineUser.query('BEGIN');
  await baselineUser.query('SELECT count(*) FROM orders');
});

afterAll(async () => {
  await baselineUser?.end().catch(() => {});
  await cleanup(names);
});

describe('postgres resource hook', () => {
  it('clones the baseline while it is in use, reports progress until ready, and returns connection details', async () => {
    const progress: ResourceProgress[] = [];
    const out = await hook.provision(ctx('sb-one', { from: names.baseline }, progress));
    expect(out.database).toBe(sandboxDatabaseName(names.baseline, 'sb-one', names.prefix));
    expect(out.url).toBe(`postgres://postgres@127.0.0.1:5432/${out.database}`);
    expect(out).toMatchObject({ host: '127.0.0.1', port: 5432, user: 'postgres', source: names.baseline });

    // The baseline had an open session, so the snapshot was streamed with pg_dump, table by table.
    const tables = progress.filter((p) => p.unit === 'tables');
    expect(tables.at(-1)).toMatchObject({ phase: 'snapshot', done: 2, total: 2 });
    expect(progress.some((p) => p.phase === 'cloning' && p.unit === 'bytes' && (p.total ?? 0) > 0)).toBe(
      true,
    );
    expect(progress.at(-1)?.phase).toBe('ready');

    const copied = await withClient(out.database, (c) =>
      c.query('SELECT count(*)::int AS n, max(note) AS m FROM orders'),
    );
    expect(copied.rows[0]).toEqual({ n: 50, m: 'note-9' });

    // Nobody may connect to the snapshot: that keeps it usable as a template.
    const snap = await admin((c) =>
      c.query('SELECT datallowconn FROM pg_database WHERE datname = $1', [out.snapshot]),
    );
    expect(snap.rows[0]).toEqual({ datallowconn: false });
    expect(await catalogueRows(names)).toEqual([{ database: out.database, state: 'ready' }]);

    // Provisioning again (a registry retry) returns the same database untouched.
    await withClient(out.database, (c) => c.query("INSERT INTO customers VALUES (99, 'kept')"));
    const again = await hook.provision(ctx('sb-one', { from: names.baseline }));
    expect(again.database).toBe(out.database);
    const kept = await withClient(out.database, (c) => c.query('SELECT name FROM customers WHERE id = 99'));
    expect(kept.rows).toEqual([{ name: 'kept' }]);
  });

  it('lets a sandbox drop a column the baseline reads while the baseline keeps working', async () => {
    const out = await hook.provision(ctx('sb-migrate', { from: names.baseline }));
    await withClient(out.database, (c) => c.query('ALTER TABLE orders DROP COLUMN note'));

    const baseline = await baselineUser.query('SELECT id, item, note FROM orders WHERE id = 7');
    expect(baseline.rows).toEqual([{ id: 7, item: 'item-7', note: 'note-7' }]);
    const fresh = await withClient(names.baseline, (c) => c.query('SELECT note FROM orders WHERE id = 8'));
    expect(fresh.rows).toEqual([{ note: 'note-8' }]);
    await expect(withClient(out.database, (c) => c.query('SELECT note FROM orders'))).rejects.toThrow(
      /column "note" does not exist/,
    );
  });

  it('drops the database on deprovision, terminating its open connections, and can be retried', async () => {
    const out = await hook.provision(ctx('sb-drop', { from: names.baseline }));
    const holder = new pg.Client({ ...PG, database: out.database });
    holder.on('error', () => {});
    await holder.connect();
    await hook.deprovision({ ...ctx('sb-drop', { from: names.baseline }), outputs: out });
    expect(await databasesLike(out.database)).toEqual([]);
    await hook.deprovision({ ...ctx('sb-drop', { from: names.baseline }), outputs: out });
    expect((await catalogueRows(names)).map((r) => r.database)).not.toContain(out.database);
    await expect(holder.query('SELECT 1')).rejects.toThrow();
    await holder.end().catch(() => {});
  });

  it('refreshing the snapshot gives new sandboxes new data and leaves existing sandbox databases alone', async () => {
    const before = await hook.provision(ctx('sb-before', { from: names.baseline }));
    await withClient(names.baseline, (c) =>
      c.query("INSERT INTO orders VALUES (1000, 'late', 'added later')"),
    );
    const snap = await hook.databases.snapshot(names.baseline);
    expect(snap.method).toBe('dump');
    const after = await hook.provision(ctx('sb-after', { from: names.baseline }));
    const find = (db: string) => withClient(db, (c) => c.query('SELECT item FROM orders WHERE id = 1000'));
    expect((await find(after.database)).rows).toEqual([{ item: 'late' }]);
    expect((await find(before.database)).rows).toEqual([]);
  });

  it('clones made while the snapshot is being refreshed all succeed with complete data', async () => {
    const sandboxes = ['sb-race-1', 'sb-race-2', 'sb-race-3'];
    const expected = await withClient(names.baseline, (c) =>
      c.query(
        'SELECT count(*)::int AS orders, (SELECT count(*)::int FROM customers) AS customers FROM orders',
      ),
    );
    const [snap, ...outs] = await Promise.all([
      hook.databases.snapshot(names.baseline),
      ...sandboxes.map((sb) => hook.provision(ctx(sb, { from: names.baseline }))),
    ]);
    expect(snap?.method).toBe('dump');
    for (const out of outs) {
      const r = await withClient((out as { database: string }).database, (c) =>
        c.query(
          'SELECT count(*)::int AS orders, (SELECT count(*)::int FROM customers) AS customers FROM orders',
        ),
      );
      expect(r.rows[0]).toEqual(expected.rows[0]);
    }
    const leftovers = (await databasesLike(names.snapshotPrefix)).filter((d) => d.endsWith('__next'));
    expect(leftovers).toEqual([]);
  });

  it('takes the snapshot with CREATE DATABASE … TEMPLATE when nobody uses the baseline', async () => {
    const idle = `${names.baseline}_idle`;
    await createBaseline(idle, 3);
    try {
      const snap = await hook.databases.snapshot(idle);
      expect(snap.method).toBe('template');
      const out = await hook.provision(ctx('sb-idle', { from: idle }));
      const r = await withClient(out.database, (c) => c.query('SELECT count(*)::int AS n FROM orders'));
      expect(r.rows[0]).toEqual({ n: 3 });
      await hook.deprovision({ ...ctx('sb-idle', { from: idle }), outputs: out });
      await hook.databases.dropSnapshot(idle);
      expect(await databasesLike(snap.database)).toEqual([]);
    } finally {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS "${idle}" WITH (FORCE)`));
    }
  });

  it('rejects invalid names and a missing source with a clear error and creates nothing', async () => {
    const dbsBefore = [
      ...(await databasesLike(names.prefix)),
      ...(await databasesLike(names.snapshotPrefix)),
    ];
    const rowsBefore = await catalogueRows(names);

    expect(() => hook.validate({ from: 'orders; DROP DATABASE x' })).toThrow(
      /spec\.from="orders; DROP DATABASE x"/,
    );
    expect(() => hook.validate({})).toThrow(/spec\.from must name the baseline database/);
    expect(() => hook.validate({ from: 'orders', services: 'orders' })).toThrow(/spec\.services/);
    expect(() => hook.validate({ from: `${names.prefix}x__y` })).toThrow(/manages/);
    await expect(hook.provision(ctx('Bad_Name', { from: names.baseline }))).rejects.toThrow(
      /sandbox name "Bad_Name" is not a sandbox name/,
    );
    const missing = `${names.baseline}_missing`;
    const err = await hook.provision(ctx('sb-missing', { from: missing })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxDatabaseError);
    expect((err as SandboxDatabaseError).code).toBe('missing-source');
    expect((err as Error).message).toContain(`"${missing}" does not exist on 127.0.0.1:5432`);
    expect((err as Error).message).toContain(names.baseline);

    expect([...(await databasesLike(names.prefix)), ...(await databasesLike(names.snapshotPrefix))]).toEqual(
      dbsBefore,
    );
    expect(await catalogueRows(names)).toEqual(rowsBefore);
  });

  it('leaves no database behind after 100 create/delete cycles', { timeout: 180_000 }, async () => {
    const small = `${names.baseline}_small`;
    await createBaseline(small, 5);
    try {
      // Four sandboxes at a time, as a busy registry would: clones share the snapshot lock.
      const worker = async (w: number) => {
        for (let i = w; i < 100; i += 4) {
          const c = ctx(`cycle-${i}`, { from: small });
          const out = await hook.provision(c);
          await hook.deprovision({ ...c, outputs: out });
        }
      };
      await Promise.all([0, 1, 2, 3].map(worker));
      const left = (await databasesLike(names.prefix)).filter((d) => d.includes('cycle-'));
      expect(left).toEqual([]);
      expect((await catalogueRows(names)).filter((r) => r.database.includes('cycle-'))).toEqual([]);
    } finally {
      await hook.databases.dropSnapshot(small);
      await admin((c) => c.query(`DROP DATABASE IF EXISTS "${small}" WITH (FORCE)`));
    }
  });
});
