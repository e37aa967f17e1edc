import type { ResourceProgress } from '@branchline/core/transport';
import type { RowDataPacket } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  MAX_IDENTIFIER_LENGTH,
  mysqlResourceHook,
  parseSandboxDatabaseName,
  quoteIdent,
  retarget,
  SandboxDatabaseError,
  sandboxDatabaseName,
  stripDefiner,
} from '../src/index.js';
import {
  admin,
  catalogueRows,
  cleanup,
  createBaseline,
  createSandboxDatabases,
  databasesLike,
  exists,
  options,
  rows,
  uniqueNames,
  withConnection,
} from './helpers.js';

const names = uniqueNames('p');
const dbs = createSandboxDatabases(options(names));

beforeAll(() => createBaseline(names.baseline, 40));
afterAll(() => cleanup(names));

const showCreate = async (db: string, table: string) =>
  String((await rows(db, `SHOW CREATE TABLE ${quoteIdent(table)}`))[0]?.['Create Table']);

describe('provision', () => {
  it('copies tables with their rows, indexes, foreign keys, AUTO_INCREMENT counter, views, trigger and sequence', async () => {
    const progress: ResourceProgress[] = [];
    const out = await dbs.provision({
      sandbox: 'pr-1',
      source: names.baseline,
      resource: 'orders-db',
      report: (p) => progress.push(p),
    });
    const db = sandboxDatabaseName(names.baseline, 'pr-1', names.prefix);
    expect(out).toMatchObject({
      database: db,
      host: '127.0.0.1',
      port: 3306,
      user: 'root',
      source: names.baseline,
    });
    expect(out.url).toBe(`mysql://root@127.0.0.1:3306/${db}`);

    // Rows: the same content, generated column included.
    const q = 'SELECT id, customer_id, item, cents, note, euros FROM orders ORDER BY id';
    expect(await rows(db, q)).toEqual(await rows(names.baseline, q));
    expect(await rows(db, 'SELECT * FROM customers ORDER BY id')).toHaveLength(3);
    // Structure: indexes, unique key, foreign key, generated column, charset, and the counter.
    for (const t of ['orders', 'customers', 'audit'])
      expect(await showCreate(db, t)).toBe(await showCreate(names.baseline, t));
    expect(await showCreate(db, 'orders')).toMatch(/AUTO_INCREMENT=42/);
    const [schema] = await rows(
      undefined,
      'SELECT DEFAULT_COLLATION_NAME AS co FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [db],
    );
    expect(schema?.co).toBe('utf8mb4_unicode_ci');

    await withConnection(db, async (c) => {
      // A new row continues after the baseline's counter, and the copied trigger fires in the copy.
      await c.query("INSERT INTO orders (customer_id, item, cents) VALUES (1, 'new', 5000)");
      const [[row]] = await c.query<RowDataPacket[]>("SELECT id FROM orders WHERE item = 'new'");
      expect(row).toEqual({ id: 42 });
      const [audit] = await c.query<RowDataPacket[]>('SELECT order_id FROM audit');
      expect(audit).toEqual([{ order_id: 42 }]);
      // The foreign key is enforced again after the copy.
      await expect(
        c.query("INSERT INTO orders (customer_id, item, cents) VALUES (99, 'x', 1)"),
      ).rejects.toThrow(/foreign key constraint fails/);
      // Views read the copy, not the baseline (a view on a view included).
      const [[count]] = await c.query<RowDataPacket[]>('SELECT n FROM big_order_count');
      expect(count).toEqual({ n: 32 });
      const [[v]] = await c.query<RowDataPacket[]>(
        'SELECT VIEW_DEFINITION AS d FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
        [db, 'big_orders'],
      );
      expect(String(v?.d)).not.toContain(`\`${names.baseline}\`.`);
      expect(String(v?.d)).toContain(`\`${db}\`.`);
      // The sequence never hands out a value the baseline already did (like a dump, it continues
      // after the baseline's cached range).
      const [[seq]] = await c.query<RowDataPacket[]>('SELECT NEXTVAL(invoice_no) AS n');
      expect(Number(seq?.n)).toBeGreaterThan(1001);
    });
    // The baseline saw none of it.
    expect(await rows(names.baseline, "SELECT id FROM orders WHERE item = 'new'")).toEqual([]);
    expect(await rows(names.baseline, 'SELECT * FROM audit')).toEqual([]);

    expect(progress[0]).toMatchObject({ phase: 'cloning', done: 0, total: 3, unit: 'tables' });
    expect(progress.at(-1)).toMatchObject({ phase: 'ready', done: 3, total: 3 });
    expect(progress.filter((p) => p.phase === 'cloning').map((p) => p.done)).toEqual([0, 1, 2, 3]);
    expect(await catalogueRows(names)).toEqual([{ database: db, state: 'ready' }]);

    // Provisioning again returns the ready database untouched.
    await withConnection(db, (c) => c.query("INSERT INTO customers VALUES (9, 'kept')"));
    await dbs.provision({ sandbox: 'pr-1', source: names.baseline });
    expect(await rows(db, 'SELECT name FROM customers WHERE id = 9')).toEqual([{ name: 'kept' }]);

    await dbs.drop({ sandbox: 'pr-1', source: names.baseline });
    expect(await exists(db)).toBe(false);
    expect(await catalogueRows(names)).toEqual([]);
    await dbs.drop({ sandbox: 'pr-1', source: names.baseline }); // idempotent
  });

  it('drops a database that is in use, ending its sessions', async () => {
    const out = await dbs.provision({ sandbox: 'pr-busy', source: names.baseline });
    const held = await withConnection(out.database, async (c) => {
      await c.query('START TRANSACTION');
      await c.query('SELECT * FROM orders FOR UPDATE');
      await dbs.drop({ sandbox: 'pr-busy', source: names.baseline });
      return c.query('SELECT 1').then(
        () => 'alive',
        (err: Error) => err.message,
      );
    });
    expect(held).not.toBe('alive');
    expect(await exists(out.database)).toBe(false);
  });

  it('rejects an unknown source with the databases that exist, creating nothing', async () => {
    const missing = `${names.baseline}_nope`;
    const err = await dbs.provision({ sandbox: 'pr-2', source: missing }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxDatabaseError);
    expect((err as SandboxDatabaseError).code).toBe('missing-source');
    expect((err as Error).message).toContain(`"${missing}" does not exist on 127.0.0.1:3306`);
    expect((err as Error).message).toContain(names.baseline);
    expect(await databasesLike(names.prefix)).toEqual([]);
  });

  it('rejects invalid names and managed or system sources before touching the server', async () => {
    await expect(dbs.provision({ sandbox: 'pr-3', source: 'orders`; DROP DATABASE x; --' })).rejects.toThrow(
      /spec\.from="orders`; DROP DATABASE x; --" is not a database name/,
    );
    await expect(dbs.provision({ sandbox: 'Bad_Name', source: names.baseline })).rejects.toThrow(
      /sandbox name "Bad_Name" is not a sandbox name/,
    );
    await expect(dbs.provision({ sandbox: 'pr-3', source: 'x'.repeat(65) })).rejects.toThrow(/at most 64/);
    await expect(dbs.provision({ sandbox: 'pr-3', source: 'mysql' })).rejects.toThrow(/system database/);
    await expect(dbs.provision({ sandbox: 'pr-3', source: `${names.prefix}pr-1__x` })).rejects.toThrow(
      /a database Branchline manages/,
    );
    const limited = createSandboxDatabases(options(names, { allowSources: ['orders'] }));
    await expect(limited.provision({ sandbox: 'pr-3', source: names.baseline })).rejects.toThrow(
      /allowed sources are orders/,
    );
    expect(() => createSandboxDatabases({ prefix: 'x' })).toThrow(/option prefix="x"/);
    expect(() => createSandboxDatabases({ connection: 'postgres://db' })).toThrow(/mysql:\/\//);
    const hook = mysqlResourceHook(options(names));
    expect(() => hook.validate({ from: 'a b' })).toThrow(/spec\.from/);
    expect(() => hook.validate({ spec: { from: names.baseline, services: 'orders' } })).toThrow(
      /spec\.services must be a list/,
    );
    expect(() => hook.validate({ from: names.baseline })).not.toThrow();
    expect(await databasesLike(names.prefix)).toEqual([]);
  });

  it('fails a copy it cannot make with a clear error and leaves nothing behind', async () => {
    // A view on another database's table that no longer exists cannot be copied.
    const broken = `${names.baseline}_broken`;
    const other = `${names.baseline}_other`;
    await admin(async (c) => {
      await c.query(`CREATE DATABASE ${quoteIdent(broken)}`);
      await c.query(`CREATE DATABASE ${quoteIdent(other)}`);
      await c.query(`CREATE TABLE ${quoteIdent(other)}.t (id INT)`);
      await c.query(`CREATE VIEW ${quoteIdent(broken)}.v AS SELECT id FROM ${quoteIdent(other)}.t`);
      await c.query(`DROP DATABASE ${quoteIdent(other)}`);
    });
    try {
      const err = await dbs.provision({ sandbox: 'pr-4', source: broken }).catch((e: unknown) => e);
      expect((err as SandboxDatabaseError).code).toBe('clone-failed');
      expect((err as Error).message).toMatch(/could not (copy the views v|create .* from)/);
      expect(await databasesLike(names.prefix)).toEqual([]);
      expect(await catalogueRows(names)).toEqual([]);
    } finally {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(broken)}`));
    }
  });
});

describe('abort', () => {
  it('stops a copy in flight when the signal aborts (sandbox deleted while provisioning) and leaves nothing', async () => {
    const big = `${names.baseline}_big`;
    try {
      await admin(async (c) => {
        await c.query(`CREATE DATABASE ${quoteIdent(big)}`);
        await c.query(`CREATE TABLE ${quoteIdent(big)}.rows_a (id INT PRIMARY KEY, pad VARCHAR(200))`);
        await c.query(
          `INSERT INTO ${quoteIdent(big)}.rows_a SELECT seq, REPEAT('x', 200) FROM ${quoteIdent(big)}.seq_1_to_400000`,
        );
      });
      const abort = new AbortController();
      const started = performance.now();
      const err = await dbs
        .provision({
          sandbox: 'pr-abort',
          source: big,
          signal: abort.signal,
          // The copy of the first table starts right after this report.
          report: (p) => {
            if (p.phase === 'cloning' && p.done === 0)
              setTimeout(() => abort.abort(new Error('deleted')), 50);
          },
        })
        .catch((e: unknown) => e);
      // The abort's reason, not a finished copy nor a server error in its place.
      expect((err as Error).message).toBe('deleted');
      expect(performance.now() - started).toBeLessThan(20_000);
      expect(await databasesLike(names.prefix)).toEqual([]);
      expect(await catalogueRows(names)).toEqual([]);
    } finally {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(big)}`));
    }
  });
});

describe('names', () => {
  it('builds names of at most 64 characters that name their owner', () => {
    expect(sandboxDatabaseName('orders', 'pr-42')).toBe('bl_sb_pr-42__orders');
    expect(parseSandboxDatabaseName('bl_sb_pr-42__orders')).toBe('pr-42');
    const long = sandboxDatabaseName('o'.repeat(64), 'pr-42');
    expect(long.length).toBeLessThanOrEqual(MAX_IDENTIFIER_LENGTH);
    expect(parseSandboxDatabaseName(long)).toBe('pr-42');
    const longer = sandboxDatabaseName('o'.repeat(64), 's'.repeat(63));
    expect(longer.length).toBeLessThanOrEqual(MAX_IDENTIFIER_LENGTH);
    expect(longer).not.toBe(sandboxDatabaseName('p'.repeat(64), 's'.repeat(63)));
    expect(quoteIdent('a`b')).toBe('`a``b`');
    expect(() => quoteIdent('x'.repeat(65))).toThrow(/not an identifier/);
  });

  it('rewrites definers and source references of view and trigger definitions', () => {
    const sql =
      'CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select `src`.`t`.`id` AS `id` from `src`.`t`';
    expect(retarget(stripDefiner(sql), 'src', 'bl_sb_x__src')).toBe(
      'CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select `bl_sb_x__src`.`t`.`id` AS `id` from `bl_sb_x__src`.`t`',
    );
    expect(stripDefiner("CREATE DEFINER='app'@'%' TRIGGER t")).toBe('CREATE TRIGGER t');
  });
});

describe('sweep', () => {
  it('drops orphans and interrupted deletions, keeps live sandboxes and young entries', async () => {
    const live = await dbs.provision({ sandbox: 'sb-live', source: names.baseline });
    const dead = await dbs.provision({ sandbox: 'sb-dead', source: names.baseline });
    // A database whose catalogue entry was lost, and an entry whose database is gone.
    const orphan = sandboxDatabaseName(names.baseline, 'sb-orphan', names.prefix);
    await admin((c) => c.query(`CREATE DATABASE ${quoteIdent(orphan)}`));
    const ghost = sandboxDatabaseName(names.baseline, 'sb-ghost', names.prefix);
    await admin((c) =>
      c.query(
        `INSERT INTO ${quoteIdent(names.adminDatabase)}.${quoteIdent(names.catalogue)} (\`database\`, sandbox, source, state) VALUES (?, 'sb-ghost', ?, 'deleting')`,
        [ghost, names.baseline],
      ),
    );
    // Not ours: another prefix is never touched.
    const foreign = `${names.baseline}_keep`;
    await admin((c) => c.query(`CREATE DATABASE ${quoteIdent(foreign)}`));
    try {
      const graceful = createSandboxDatabases(options(names, { sweepGraceMs: 60_000 }));
      const young = await graceful.sweep(['sb-live']);
      expect(young.dropped).toEqual([orphan]);
      expect(young.forgotten).toEqual([ghost]);
      expect(young.kept.sort()).toEqual([dead.database, live.database].sort());

      const result = await dbs.sweep(['sb-live']);
      expect(result.dropped).toEqual([dead.database]);
      expect(result.kept).toEqual([live.database]);
      expect(await databasesLike(names.prefix)).toEqual([live.database]);
      expect(await exists(foreign)).toBe(true);
      expect(await exists(names.baseline)).toBe(true);
      expect(await catalogueRows(names)).toEqual([{ database: live.database, state: 'ready' }]);
    } finally {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(foreign)}`));
    }
  });
});
