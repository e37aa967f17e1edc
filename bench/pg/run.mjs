// Sandbox databases (issue #8): how long provisioning a sandbox database from a ~100 MB
// baseline takes, against `pg_dump | psql` of the same data in the same run; and the per-query
// cost of the routed pool against a plain pg pool (target: within 2%).
//
// Env: BENCH_PG_MB (default 100) baseline size; BENCH_PG_QUERIES (8000) queries per
// case for the per-query comparison; BENCH_PG_SKIP_PROVISION=1 measures queries only.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRoutedPool, createSandboxDatabases } from '@branchline/pg';
import pg from 'pg';
import { fmt, knob, percentileOf, printTable, reportLoad, routedPoolOverhead, saveResults } from '../lib.mjs';

const PG = { host: '127.0.0.1', port: 5432, user: 'postgres' };
const MB = knob('BENCH_PG_MB', 100, 10);
const PER_CASE = knob('BENCH_PG_QUERIES', 8000, 40);
const id = randomBytes(3).toString('hex');
const baseline = `blbench_orders_${id}`;
const prefix = `blbench${id}_`;
const snapshotPrefix = `blbenchs${id}_`;
const catalogue = `blbench_catalogue_${id}`;
const dumpTarget = `blbench_dump_${id}`;

async function admin(fn, database = 'postgres') {
  const c = new pg.Client({ ...PG, database });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => {});
  }
}

const median = (xs) => percentileOf(xs, 50);
const mb = (bytes) => bytes / 1024 / 1024;

async function cleanup() {
  await admin(async (c) => {
    const r = await c.query(
      'SELECT datname FROM pg_database WHERE starts_with(datname, $1) OR starts_with(datname, $2) OR datname = ANY($3)',
      [prefix, snapshotPrefix, [baseline, dumpTarget]],
    );
    for (const { datname } of r.rows) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    await c.query(`DROP TABLE IF EXISTS "${catalogue}"`);
  });
}

async function buildBaseline() {
  const t0 = performance.now();
  await admin((c) => c.query(`CREATE DATABASE "${baseline}"`));
  // ~135 bytes a row with its index share; rows scale with BENCH_PG_MB.
  const rows = Math.round(((MB - 8) * 1024 * 1024) / 135);
  await admin(async (c) => {
    await c.query(`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL)`);
    await c.query(
      `CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, item text NOT NULL,
         note text, amount numeric(10,2) NOT NULL, created_at timestamptz NOT NULL)`,
    );
    await c.query(
      `INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 10000) g`,
    );
    await c.query(
      `INSERT INTO orders SELECT g, 1 + g % 10000, 'item-' || (g % 997), md5(g::text) || repeat('n', 20),
         (g % 10000) / 100.0, now() - (g || ' seconds')::interval FROM generate_series(1, $1::int) g`,
      [rows],
    );
    await c.query('CREATE INDEX orders_customer ON orders (customer_id)');
    await c.query('VACUUM ANALYZE');
  }, baseline);
  const size = await admin(
    async (c) => (await c.query('SELECT pg_database_size($1)::float8 AS b', [baseline])).rows[0].b,
  );
  console.log(`built ${baseline}: ${fmt(mb(size))} MB in ${fmt((performance.now() - t0) / 1000)} s`);
  return size;
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, {
      env: { ...process.env, PGHOST: PG.host, PGPORT: String(PG.port), PGUSER: PG.user },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}: ${err}`))));
  });
}

async function dumpAndPsql() {
  await admin((c) => c.query(`DROP DATABASE IF EXISTS "${dumpTarget}"`));
  const t0 = performance.now();
  await admin((c) => c.query(`CREATE DATABASE "${dumpTarget}"`));
  await run('bash', [
    '-o',
    'pipefail',
    '-c',
    `pg_dump --dbname=${baseline} | psql -q -v ON_ERROR_STOP=1 --dbname=${dumpTarget}`,
  ]);
  const ms = performance.now() - t0;
  await admin((c) => c.query(`DROP DATABASE "${dumpTarget}" WITH (FORCE)`));
  return ms;
}

async function provisioning(size) {
  // The baseline is "in use": an open session the whole time.
  const user = new pg.Client({ ...PG, database: baseline });
  await user.connect();
  await user.query('SELECT count(*) FROM customers');
  const base = { connection: PG, prefix, snapshotPrefix, catalogue, sweepGraceMs: 0 };
  const auto = createSandboxDatabases(base);
  const rows = [];
  const figures = {};

  const snap = await auto.snapshot(baseline);
  figures.snapshotMs = snap.ms;
  figures.snapshotMethod = snap.method;
  rows.push({
    step: `snapshot of the baseline in use (${snap.method}, once per refresh)`,
    'median ms': fmt(snap.ms, 0),
    runs: 1,
  });

  for (const strategy of ['file_copy', 'wal_log']) {
    const dbs = createSandboxDatabases({ ...base, cloneStrategy: strategy });
    const times = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await dbs.provision({ sandbox: `bench-${strategy.replace('_', '-')}-${i}`, source: baseline });
      times.push(performance.now() - t0);
    }
    for (let i = 0; i < 3; i++)
      await dbs.drop({ sandbox: `bench-${strategy.replace('_', '-')}-${i}`, source: baseline });
    figures[`provision_${strategy}_ms`] = median(times);
    rows.push({
      step: `provision sandbox DB (clone, STRATEGY ${strategy.toUpperCase()})`,
      'median ms': fmt(median(times), 0),
      runs: times.length,
    });
  }

  const dumps = [];
  for (let i = 0; i < 2; i++) dumps.push(await dumpAndPsql());
  figures.pgDumpPsqlMs = median(dumps);
  rows.push({
    step: 'pg_dump | psql of the same data',
    'median ms': fmt(median(dumps), 0),
    runs: dumps.length,
  });
  await user.end();

  const best = Math.min(figures.provision_file_copy_ms, figures.provision_wal_log_ms);
  figures.autoStrategy = size >= 64 * 1024 * 1024 ? 'file_copy' : 'wal_log';
  figures.autoProvisionMs = figures[`provision_${figures.autoStrategy}_ms`];
  figures.speedupVsDump = figures.pgDumpPsqlMs / figures.autoProvisionMs;
  figures.speedupVsDumpBestStrategy = figures.pgDumpPsqlMs / best;
  printTable(`provisioning from a ${fmt(mb(size))} MB baseline (in use)`, rows);
  console.log(
    `\npg_dump|psql / provision (auto = ${figures.autoStrategy}): ${fmt(figures.speedupVsDump, 1)}x faster to provision`,
  );
  return figures;
}

async function queryOverhead() {
  const cfg = { ...PG, max: 4 };
  const sql = 'SELECT id, item FROM orders WHERE id = $1';
  return routedPoolOverhead(
    {
      label: 'pg.Pool',
      type: 'postgres',
      source: baseline,
      plainPool: (database) => new pg.Pool({ ...cfg, database }),
      routedPool: (options) => createRoutedPool({ ...cfg, database: baseline, prefix, ...options }),
      currentDatabase: async (pool) => (await pool.query('SELECT current_database() AS db')).rows[0].db,
      query: (pool, i, w) => pool.query(sql, [1 + ((i * 7 + w) % 1000)]),
      end: (pool) => pool.end(),
    },
    {
      perCase: PER_CASE,
      sandboxDatabases: createSandboxDatabases({
        connection: PG,
        prefix,
        snapshotPrefix,
        catalogue,
        sweepGraceMs: 0,
      }),
    },
  );
}

let code = 0;
try {
  await cleanup();
  const size = await buildBaseline();
  const provision = process.env.BENCH_PG_SKIP_PROVISION ? undefined : await provisioning(size);
  const queries = await queryOverhead();
  const load = reportLoad();
  saveResults('pg', {
    baselineBytes: size,
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
