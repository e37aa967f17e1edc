import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createSandboxDatabases, type SandboxDatabasesOptions } from '../src/index.js';

export const PG = { host: '127.0.0.1', port: 5432, user: 'postgres' } as const;

/** Unique names per test file, so parallel test files and other suites never collide. */
export function uniqueNames(tag: string) {
  const id = randomBytes(3).toString('hex');
  return {
    id,
    prefix: `blt${tag}${id}_`,
    snapshotPrefix: `bls${tag}${id}_`,
    catalogue: `blt_catalogue_${tag}${id}`,
    baseline: `blt_base_${tag}${id}`,
  };
}

export function options(
  names: ReturnType<typeof uniqueNames>,
  extra: SandboxDatabasesOptions = {},
): SandboxDatabasesOptions {
  return {
    connection: { ...PG },
    prefix: names.prefix,
    snapshotPrefix: names.snapshotPrefix,
    catalogue: names.catalogue,
    sweepGraceMs: 0,
    ...extra,
  };
}

export async function withClient<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ ...PG, database });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

export const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient('postgres', fn);

/** Databases whose names start with `prefix`. */
export async function databasesLike(prefix: string): Promise<string[]> {
  return admin(async (c) => {
    const r = await c.query<{ datname: string }>(
      'SELECT datname FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname',
      [prefix],
    );
    return r.rows.map((x) => x.datname);
  });
}

export async function catalogueRows(
  names: ReturnType<typeof uniqueNames>,
): Promise<{ database: string; state: string }[]> {
  return admin(async (c) => {
    const exists = await c.query('SELECT to_regclass($1) AS t', [names.catalogue]);
    if (!exists.rows[0]?.t) return [];
    const r = await c.query<{ database: string; state: string }>(
      `SELECT database, state FROM "${names.catalogue}" ORDER BY database`,
    );
    return r.rows;
  });
}

/** A small baseline database with an `orders` table the baseline code reads (`note` included). */
export async function createBaseline(name: string, rows = 50): Promise<void> {
  await admin((c) => c.query(`CREATE DATABASE "${name}"`));
  await withClient(name, async (c) => {
    await c.query('CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, note text)');
    await c.query('CREATE TABLE customers (id int PRIMARY KEY, name text)');
    await c.query(
      "INSERT INTO orders SELECT g, 'item-' || g, 'note-' || g FROM generate_series(1, $1::int) g",
      [rows],
    );
    await c.query("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 5) g");
  });
}

/** Drops everything a test file created (sandbox databases, snapshots, baseline, catalogue). */
export async function cleanup(names: ReturnType<typeof uniqueNames>): Promise<void> {
  await admin(async (c) => {
    const r = await c.query<{ datname: string }>(
      'SELECT datname FROM pg_database WHERE starts_with(datname, $1) OR starts_with(datname, $2) OR datname = $3',
      [names.prefix, names.snapshotPrefix, names.baseline],
    );
    for (const { datname } of r.rows) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    await c.query(`DROP TABLE IF EXISTS "${names.catalogue}"`);
  });
}

export { createSandboxDatabases };
