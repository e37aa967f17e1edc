// Sandbox databases on MySQL/MariaDB: how long copying a baseline into a sandbox database takes
// (SHOW CREATE TABLE + INSERT … SELECT), and the per-query cost of the routed pool against a
// plain mysql2 pool, in the same run, with the ratio. Needs MariaDB (the baseline's rows come
// from its sequence engine, `seq_1_to_N`).
//
// Env: BENCH_MYSQL_ROWS (default 200000) rows in the baseline's orders table;
// BENCH_MYSQL_QUERIES (4000) queries per case; MYSQL_HOST/MYSQL_PORT/MYSQL_USER (127.0.0.1,
// 3306, root).

import { execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { contextWithRoutingKey, createRuntime, withRoutingKey } from '@branchline/core';
import { activeContext, runInContext, StaticRouteSource } from '@branchline/core/transport';
import { createRoutedPool, createSandboxDatabases } from '@branchline/mysql';
import mysql from 'mysql2/promise';
import { fmt, knob, nsPerOp, percentile, printTable, saveResults } from '../lib.mjs';

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

const median = (xs) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

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
  const dbs = createSandboxDatabases(options);
  const sbx = await dbs.provision({ sandbox: 'bench-route', source: baseline });
  const res = { db: { type: 'mysql', spec: { from: baseline }, status: 'ready' } };
  const routes = new StaticRouteSource({
    sandboxes: [
      { name: 'bench-route', key: 'bench-route', resources: res },
      ...Array.from({ length: 50 }, (_, i) => ({ name: `other-${i}`, key: `other-${i}`, resources: res })),
    ],
  });
  const empty = new StaticRouteSource({ sandboxes: [] });
  const cfg = { ...MY, connectionLimit: 4 };
  const plain = mysql.createPool({ ...cfg, database: baseline });
  const plainSandbox = mysql.createPool({ ...cfg, database: sbx.database });
  const routedIdle = createRoutedPool({
    ...cfg,
    database: baseline,
    prefix,
    runtime: createRuntime({ routes: empty, service: 'orders' }),
  });
  const routed = createRoutedPool({
    ...cfg,
    database: baseline,
    prefix,
    sandboxMax: 4,
    runtime: createRuntime({ routes: routes, service: 'orders' }),
  });

  const sql = 'SELECT id, item FROM orders WHERE id = ?';
  // Both sides of the keyed comparison run inside the same pre-built context, so only the
  // pool differs; the context's creation belongs to the app's middleware, not to the pool.
  const keyed = contextWithRoutingKey(activeContext(), 'bench-route');
  const cases = [
    ['plain mysql2 pool (baseline)', plain, undefined],
    ['routed, no sandbox databases', routedIdle, undefined],
    ['routed, 51 sandbox DBs, no key', routed, undefined],
    ['plain mysql2 pool (sandbox DB)', plainSandbox, keyed],
    ['routed, key → sandbox DB', routed, keyed],
  ];
  const refOf = (name) =>
    name.endsWith('→ sandbox DB') ? 'plain mysql2 pool (sandbox DB)' : 'plain mysql2 pool (baseline)';
  const expectDb = {
    'plain mysql2 pool (sandbox DB)': sbx.database,
    'routed, key → sandbox DB': sbx.database,
  };
  for (const [name, pool, ctx] of cases) {
    const run = () => pool.query('SELECT DATABASE() AS db');
    const [[{ db }]] = await (ctx ? runInContext(ctx, run) : run());
    if (db !== (expectDb[name] ?? baseline)) throw new Error(`${name} queried ${db}`);
  }
  // Queries of all cases interleave one by one (rotating order), so load from other processes
  // hits every case alike; each query is timed on its own and medians are compared.
  const measure = async (width) => {
    const lat = cases.map(() => []);
    const iterations = [];
    await Promise.all(
      Array.from({ length: width }, async (_, w) => {
        for (let i = 0; i < PER_CASE / width; i++) {
          const row = new Array(cases.length);
          iterations.push(row);
          for (let k = 0; k < cases.length; k++) {
            const j = (k + i + w) % cases.length;
            const [, pool, ctx] = cases[j];
            const args = [1 + ((i * 7 + w) % ROWS)];
            const t0 = process.hrtime.bigint();
            if (ctx) await runInContext(ctx, () => pool.query(sql, args));
            else await pool.query(sql, args);
            row[j] = Number(process.hrtime.bigint() - t0) / 1000;
            lat[j].push(row[j]);
          }
        }
      }),
    );
    return { sorted: lat.map((xs) => xs.sort((a, b) => a - b)), iterations };
  };
  await measure(4); // warm-up: connections open, code hot
  const results = { seq: await measure(1), par: await measure(4) };
  const rows = [];
  const figures = {};
  cases.forEach(([name], j) => {
    const r = cases.findIndex(([n]) => n === refOf(name));
    const f = { reference: refOf(name) };
    for (const kind of ['seq', 'par']) {
      const mine = results[kind].sorted[j];
      const ref = results[kind].sorted[r];
      f[kind] = {
        medianUs: percentile(mine, 50),
        p90Us: percentile(mine, 90),
        ratioMedian: percentile(mine, 50) / percentile(ref, 50),
        // Each query against the reference query of the same iteration (run back to back),
        // which cancels the drift other processes cause; the median of those ratios.
        pairedRatio: median(results[kind].iterations.map((row) => row[j] / row[r])),
      };
    }
    figures[name] = f;
    rows.push({
      pool: name,
      'median µs (1)': fmt(f.seq.medianUs, 1),
      'ratio of medians (1)': fmt(f.seq.ratioMedian, 3),
      'paired ratio (1)': fmt(f.seq.pairedRatio, 3),
      'median µs (4)': fmt(f.par.medianUs, 1),
      'ratio of medians (4)': fmt(f.par.ratioMedian, 3),
      'paired ratio (4)': fmt(f.par.pairedRatio, 3),
    });
  });
  printTable(
    `per-query latency, ${PER_CASE} queries per case, 1 and 4 in flight, interleaved; ratio vs a plain mysql2 pool on the same database`,
    rows,
  );

  // The routing decision alone, without I/O: what the routed pool adds to each call.
  const decideNoKey = nsPerOp(() => routed.poolFor());
  const decideActive = await withRoutingKey('bench-route', async () => nsPerOp(() => routed.poolFor()));
  const perQueryNs = figures['plain mysql2 pool (baseline)'].seq.medianUs * 1000;
  printTable('routing decision alone (no I/O)', [
    {
      case: 'no key',
      ns: fmt(decideNoKey),
      'share of a query': `${fmt((decideNoKey / perQueryNs) * 100, 3)}%`,
    },
    {
      case: 'key in the active context',
      ns: fmt(decideActive),
      'share of a query': `${fmt((decideActive / perQueryNs) * 100, 3)}%`,
    },
  ]);
  figures.decisionNs = { noKey: decideNoKey, keyActive: decideActive };
  const keyedRatio = figures['routed, key → sandbox DB'].seq.pairedRatio;
  const idleRatio = figures['routed, no sandbox databases'].seq.pairedRatio;
  console.log(
    `\nrouted ÷ plain mysql2 pool (paired, 1 in flight): ${fmt(idleRatio, 3)} without sandbox databases, ${fmt(keyedRatio, 3)} with a key → sandbox DB`,
  );

  await Promise.all([plain.end(), plainSandbox.end(), routedIdle.end(), routed.end()]);
  await dbs.drop({ sandbox: 'bench-route', source: baseline });
  return figures;
}

let code = 0;
try {
  await cleanup();
  const bytes = await buildBaseline();
  const provision = await provisioning(bytes);
  const queries = await queryOverhead();
  const load = execSync('cat /proc/loadavg').toString().trim();
  console.log(`\nload average at the end: ${load} (other work was running; figures are under load)`);
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
