// Sandbox databases (issue #8): how long provisioning a sandbox database from a ~100 MB
// baseline takes, against `pg_dump | psql` of the same data in the same run; and the per-query
// cost of the routed pool against a plain pg pool (target: within 2%).
//
// Env: BENCH_PG_MB (default 100) baseline size; BENCH_PG_QUERIES (8000) queries per
// case for the per-query comparison; BENCH_PG_SKIP_PROVISION=1 measures queries only.

import { execSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { contextWithRoutingKey, createRuntime, withRoutingKey } from '@branchline/core';
import { activeContext, runInContext, StaticRouteSource } from '@branchline/core/transport';
import { createRoutedPool, createSandboxDatabases } from '@branchline/pg';
import pg from 'pg';
import { fmt, knob, nsPerOp, percentile, printTable, saveResults } from '../lib.mjs';

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

const median = (xs) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );
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
  // A sandbox database for the keyed case, so the table is realistic (routing is active).
  const dbs = createSandboxDatabases({ connection: PG, prefix, snapshotPrefix, catalogue, sweepGraceMs: 0 });
  const sbx = await dbs.provision({ sandbox: 'bench-route', source: baseline });
  const res = (status) => ({ db: { type: 'postgres', spec: { from: baseline }, status } });
  const routes = new StaticRouteSource({
    sandboxes: [
      { name: 'bench-route', key: 'bench-route', resources: res('ready') },
      ...Array.from({ length: 50 }, (_, i) => ({
        name: `other-${i}`,
        key: `other-${i}`,
        resources: res('ready'),
      })),
    ],
  });
  const empty = new StaticRouteSource({ sandboxes: [] });
  const cfg = { ...PG, max: 4 };
  const plain = new pg.Pool({ ...cfg, database: baseline });
  const plainSandbox = new pg.Pool({ ...cfg, database: sbx.database });
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

  const sql = 'SELECT id, item FROM orders WHERE id = $1';
  // Both sides of the keyed comparison run inside the same pre-built context, so only the
  // pool differs; the context's creation belongs to the app's middleware, not to the pool.
  const keyed = contextWithRoutingKey(activeContext(), 'bench-route');
  const cases = [
    ['plain pg.Pool (baseline)', plain, undefined],
    ['routed, no sandbox databases', routedIdle, undefined],
    ['routed, 51 sandbox DBs, no key', routed, undefined],
    ['plain pg.Pool (sandbox DB)', plainSandbox, keyed],
    ['routed, key → sandbox DB', routed, keyed],
  ];
  const refOf = (name) =>
    name.endsWith('→ sandbox DB') ? 'plain pg.Pool (sandbox DB)' : 'plain pg.Pool (baseline)';
  const expectDb = { 'plain pg.Pool (sandbox DB)': sbx.database, 'routed, key → sandbox DB': sbx.database };
  for (const [name, pool, ctx] of cases) {
    const run = () => pool.query('SELECT current_database() AS db');
    const db = (await (ctx ? runInContext(ctx, run) : run())).rows[0].db;
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
            const args = [1 + ((i * 7 + w) % 1000)];
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
        ratioP90: percentile(mine, 90) / percentile(ref, 90),
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
    `per-query latency, ${PER_CASE} queries per case, 1 and 4 in flight, interleaved; ratio vs a plain pg.Pool on the same database`,
    rows,
  );

  // The routing decision alone, without I/O: what the routed pool adds to each call.
  const decideNoKey = nsPerOp(() => routed.poolFor());
  const decideActive = await withRoutingKey('bench-route', async () => nsPerOp(() => routed.poolFor()));
  const perQueryNs = figures['plain pg.Pool (baseline)'].seq.medianUs * 1000;
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

  await Promise.all([plain.end(), plainSandbox.end(), routedIdle.end(), routed.end()]);
  await dbs.drop({ sandbox: 'bench-route', source: baseline });
  return figures;
}

let code = 0;
try {
  await cleanup();
  const size = await buildBaseline();
  const provision = process.env.BENCH_PG_SKIP_PROVISION ? undefined : await provisioning(size);
  const queries = await queryOverhead();
  const load = execSync('cat /proc/loadavg').toString().trim();
  console.log(`\nload average at the end: ${load} (other work was running; figures are under load)`);
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
