// Sandbox databases on MySQL/MariaDB: how long copying a baseline into a sandbox database takes
// (SHOW CREATE TABLE + INSERT … SELECT), and the per-query cost of the routed pool against a
// plain mysql2 pool, in the same run, with the ratio. Needs MariaDB (the baseline's rows come
// from its sequence engine, `seq_1_to_N`).
//
// Env: BENCH_MYSQL_ROWS (default 200000) rows in the baseline's orders table;
// BENCH_MYSQL_QUERIES (4000) queries per case; MYSQL_HOST/MYSQL_PORT/MYSQL_USER (127.0.0.1,
// 3306, root).

import { randomBytes } from 'node:crypto';
import { createRoutedPool, createSandboxDatabases } from '@branchline/mysql';
import mysql from 'mysql2/promise';
import { fmt, knob, percentileOf, printTable, reportLoad, routedPoolOverhead, saveResults } from '../lib.mjs';

const MY = {
  host: process.env.MYSQL_HOST ?? '127.0.0.1',
  port: Number(process.env.MYSQL_PORT ?? 3306),
  user: process.env.MYSQL_USER ?? 'root',
};
const ROWS = knob('BENCH_MYSQL_ROWS', 200_000, 1000);
const PER_CASE = knob('BENCH_MYSQL_QUERIES', 4000, 40);
const id = randomBytes(3).toString('hex');
const baseline = `blbench_orders_${id}`;
const prefix = `blbench${id}_`;
const adminDatabase = `blbench_admin_${id}`;
const options = { connection: MY, prefix, adminDatabase, sweepGraceMs: 0 };

const median = (xs) => percentileOf(xs, 50);

async function admin(fn) {
  const c = await mysql.createConnection({ ...MY, multipleStatements: true });
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => c.destroy());
  }
}

async function cleanup() {
  await admin(async (c) => {
    const [dbs] = await c.query(
      'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE LEFT(SCHEMA_NAME, ?) = ? OR SCHEMA_NAME IN (?, ?)',
      [prefix.length, prefix, baseline, adminDatabase],
    );
    for (const { name } of dbs) await c.query(`DROP DATABASE IF EXISTS \`${name}\``);
  });
}

async function buildBaseline() {
  await admin(async (c) => {
    await c.query(`CREATE DATABASE \`${baseline}\``);
    await c.query(`USE \`${baseline}\``);
    await c.query(`
      CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL);
      CREATE TABLE orders (
        id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, item VARCHAR(100) NOT NULL,
        cents INT NOT NULL, note TEXT, KEY idx_item (item), KEY idx_customer (customer_id)
      );
      INSERT INTO customers SELECT seq, CONCAT('customer-', seq) FROM seq_1_to_1000;
    `);
    // MariaDB's sequence engine (seq_1_to_N) generates the rows server-side.
    await c.query(
      `INSERT INTO orders (customer_id, item, cents, note)
       SELECT 1 + seq % 1000, CONCAT('item-', seq % 5000), seq % 100000, REPEAT('x', 100) FROM seq_1_to_${ROWS}`,
    );
  });
  // Fresh table statistics, so information_schema tells the real size.
  await admin((c) => c.query(`ANALYZE TABLE \`${baseline}\`.orders, \`${baseline}\`.customers`));
  const [[{ bytes }]] = await admin((c) =>
    c.query(
      'SELECT SUM(DATA_LENGTH + INDEX_LENGTH) AS bytes FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
      [baseline],
    ),
  );
  return Number(bytes);
}

async function provisioning(bytes) {
  const dbs = createSandboxDatabases(options);
  const times = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await dbs.provision({ sandbox: `bench-clone-${i}`, source: baseline });
    times.push(performance.now() - t0);
    await dbs.drop({ sandbox: `bench-clone-${i}`, source: baseline });
  }
  const figures = { provisionMs: median(times), runs: times.map((t) => Math.round(t)) };
  printTable(
    `provisioning a sandbox database from a ${fmt(bytes / 1024 / 1024)} MB baseline (${ROWS} orders)`,
    [
      {
        step: 'SHOW CREATE TABLE + INSERT … SELECT',
        'median ms': fmt(figures.provisionMs, 0),
        runs: times.length,
      },
    ],
  );
  return figures;
}

async function queryOverhead() {
  const cfg = { ...MY, connectionLimit: 4 };
  const sql = 'SELECT id, item FROM orders WHERE id = ?';
  return routedPoolOverhead(
    {
      label: 'mysql2 pool',
      type: 'mysql',
      source: baseline,
      plainPool: (database) => mysql.createPool({ ...cfg, database }),
      routedPool: (options) => createRoutedPool({ ...cfg, database: baseline, prefix, ...options }),
      currentDatabase: async (pool) => (await pool.query('SELECT DATABASE() AS db'))[0][0].db,
      query: (pool, i, w) => pool.query(sql, [1 + ((i * 7 + w) % ROWS)]),
      end: (pool) => pool.end(),
    },
    { perCase: PER_CASE, sandboxDatabases: createSandboxDatabases(options) },
  );
}

let code = 0;
try {
  await cleanup();
  const bytes = await buildBaseline();
  const provision = await provisioning(bytes);
  const queries = await queryOverhead();
  const load = reportLoad();
  saveResults('mysql', {
    baselineBytes: bytes,
    rows: ROWS,
    provision,
    queries,
    loadavg: load,
    queriesPerCase: PER_CASE,
  });
} catch (err) {
  console.error(err);
  code = 1;
} finally {
  await cleanup().catch((e) => console.error('cleanup failed', e));
}
process.exit(code);
