import { randomBytes } from 'node:crypto';
import mysql, { type Connection, type RowDataPacket } from 'mysql2/promise';
import { createSandboxDatabases, type SandboxDatabasesOptions } from '../src/index.js';

export const MY = { host: '127.0.0.1', port: 3306, user: 'root' } as const;

/** Unique names per test file, so parallel test files and other suites never collide. */
export function uniqueNames(tag: string) {
  const id = randomBytes(3).toString('hex');
  return {
    id,
    prefix: `blt${tag}${id}_`,
    adminDatabase: `blt_admin_${tag}${id}`,
    catalogue: `blt_catalogue_${tag}${id}`,
    baseline: `blt_base_${tag}${id}`,
  };
}

export type Names = ReturnType<typeof uniqueNames>;

export function options(names: Names, extra: SandboxDatabasesOptions = {}): SandboxDatabasesOptions {
  return {
    connection: { ...MY },
    prefix: names.prefix,
    adminDatabase: names.adminDatabase,
    catalogue: names.catalogue,
    sweepGraceMs: 0,
    ...extra,
  };
}

export async function withConnection<T>(
  database: string | undefined,
  fn: (c: Connection) => Promise<T>,
): Promise<T> {
  const c = await mysql.createConnection({ ...MY, database, multipleStatements: true });
  c.on('error', () => {});
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => c.destroy());
  }
}

export const admin = <T>(fn: (c: Connection) => Promise<T>) => withConnection(undefined, fn);

export async function rows<T = RowDataPacket>(database: string | undefined, sql: string, values?: unknown[]) {
  return withConnection(database, async (c) => (await c.query<RowDataPacket[]>(sql, values))[0] as T[]);
}

/** Databases whose names start with `prefix`. */
export async function databasesLike(prefix: string): Promise<string[]> {
  const r = await rows<{ name: string }>(
    undefined,
    'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE LEFT(SCHEMA_NAME, ?) = ? ORDER BY SCHEMA_NAME',
    [prefix.length, prefix],
  );
  return r.map((x) => x.name);
}

export async function exists(database: string): Promise<boolean> {
  const r = await rows(undefined, 'SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [
    database,
  ]);
  return r.length === 1;
}

export async function catalogueRows(names: Names): Promise<{ database: string; state: string }[]> {
  const t = await rows(
    undefined,
    'SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?',
    [names.adminDatabase, names.catalogue],
  );
  if (t.length === 0) return [];
  return rows(
    undefined,
    `SELECT \`database\`, state FROM \`${names.adminDatabase}\`.\`${names.catalogue}\` ORDER BY \`database\``,
  );
}

/**
 * A baseline database with what a copy must carry: an AUTO_INCREMENT table whose counter is
 * ahead of its rows, secondary and unique indexes, a foreign key, a generated column, a view on
 * a view, a trigger, and a MariaDB sequence.
 */
export async function createBaseline(name: string, orders = 50): Promise<void> {
  await admin((c) => c.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`));
  await withConnection(name, async (c) => {
    await c.query(`
      CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, UNIQUE KEY uq_name (name));
      CREATE TABLE orders (
        id INT AUTO_INCREMENT PRIMARY KEY,
        customer_id INT NOT NULL,
        item VARCHAR(100) NOT NULL,
        cents INT NOT NULL,
        note TEXT NULL,
        euros DECIMAL(10, 2) AS (cents / 100) STORED,
        KEY idx_item (item),
        CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
      ) ENGINE = InnoDB;
      CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL);
      CREATE VIEW big_orders AS SELECT id, item, cents FROM orders WHERE cents >= 1000;
      CREATE VIEW big_order_count AS SELECT COUNT(*) AS n FROM big_orders;
      CREATE SEQUENCE invoice_no START WITH 1000;
    `);
    await c.query("INSERT INTO customers VALUES (1, 'ada'), (2, 'grace'), (3, 'linus')");
    for (let i = 1; i <= orders; i++)
      await c.query('INSERT INTO orders (customer_id, item, cents, note) VALUES (?, ?, ?, ?)', [
        (i % 3) + 1,
        `item-${i}`,
        i * 100,
        `note-${i}`,
      ]);
    // The counter runs ahead of the rows: a copy must not hand out these ids again.
    await c.query('INSERT INTO orders (customer_id, item, cents) VALUES (1, ?, 1)', ['removed']);
    await c.query('DELETE FROM orders WHERE item = ?', ['removed']);
    await c.query('SELECT NEXTVAL(invoice_no), NEXTVAL(invoice_no)');
    await c.query(
      'CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (order_id) VALUES (NEW.id)',
    );
  });
}

/** Drops everything a test file created (sandbox databases, baselines and their variants, catalogue database). */
export async function cleanup(names: Names): Promise<void> {
  const all = [
    ...(await databasesLike(names.prefix)),
    ...(await databasesLike(names.baseline)),
    names.adminDatabase,
  ];
  await admin(async (c) => {
    for (const d of all) await c.query(`DROP DATABASE IF EXISTS \`${d}\``);
  });
}

export { createSandboxDatabases };
