// Small shared helpers for the benchmarks: timing loops, percentiles, tables, result files, and
// for the benchmarks that compare a forwarding hop with nginx (http, grpc): ports, nginx, medians.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export let sink = 0;

/**
 * BENCH_SMOKE=1: run every part once at the smallest sizes, to prove the benchmark still works
 * (test/bench-smoke.test.ts). The figures mean nothing then, and no results file is written.
 */
export const smoke = process.env.BENCH_SMOKE === '1';

/** A numeric size knob: env `name` when set, else `smokeValue` under BENCH_SMOKE=1, else `value`. */
export function knob(name, value, smokeValue = value) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return smoke ? smokeValue : value;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw}: expected a number >= 0`);
  return n;
}

/** Nanoseconds per call of `fn`: median of `rounds` timed rounds after a warm-up. */
export function nsPerOp(fn, { iterations = 200_000, rounds = 7 } = {}) {
  if (smoke) {
    iterations = Math.min(iterations, 1000);
    rounds = 1;
  }
  for (let i = 0; i < iterations; i++) if (fn(i)) sink++;
  const samples = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) if (fn(i)) sink++;
    samples.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** `percentile` of numbers in any order (a sorted copy; `xs` is left as it is). */
export function percentileOf(xs, p) {
  return percentile(
    [...xs].sort((a, b) => a - b),
    p,
  );
}

export function fmt(n, digits = 1) {
  return Number.isFinite(n) ? n.toFixed(digits) : String(n);
}

/** Prints rows as an aligned table. */
export function printTable(title, rows) {
  console.log(`\n${title}`);
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (vals) => vals.map((v, i) => String(v).padEnd(widths[i])).join('  ');
  console.log(line(cols));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(cols.map((c) => r[c])));
}

/** Writes bench/results/<name>.json with the machine's facts alongside the figures. */
export function saveResults(name, data) {
  if (smoke) {
    console.log(`\nsmoke run (BENCH_SMOKE=1): ${name} results not saved`);
    return;
  }
  const file = join(here, 'results', `${name}.json`);
  mkdirSync(dirname(file), { recursive: true });
  const doc = {
    name,
    date: new Date().toISOString(),
    node: process.version,
    cpus: globalThis.navigator?.hardwareConcurrency ?? 0,
    ...data,
  };
  writeFileSync(file, `${JSON.stringify(doc, null, 2)}\n`);
  console.log(`\nresults saved to ${file}`);
}

// ---- shared by the benchmarks that start servers and compare against nginx (http, grpc) ----

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort() {
  const srv = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * A complete nginx.conf for a benchmark: one worker in the foreground, every path (pid, logs,
 * temp files) inside `dir`, no access log. `http` is the rest of the `http { }` block.
 */
export function nginxConf(dir, http, { workerConnections = 1024, errorLevel = 'error' } = {}) {
  return `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log ${errorLevel};
events { worker_connections ${workerConnections}; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${http}}
`;
}

/** Debian's nginx binary and its version line, or undefined when it is not installed. */
export function findNginx() {
  for (const bin of ['nginx', '/usr/sbin/nginx']) {
    const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
    if (r.status === 0) return { bin, version: (r.stderr || r.stdout).trim() };
  }
  return undefined;
}

/**
 * CPU time (µs) of nginx's worker process, from /proc (Linux; 10 ms ticks, fine over thousands
 * of requests). Undefined elsewhere: tables then show no CPU for nginx.
 */
export function nginxWorkerCpu(masterPid) {
  const ticks = (pid) => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return { ppid: Number(f[1]), cpu: Number(f[11]) + Number(f[12]) };
  };
  const worker = () => {
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        if (ticks(name).ppid === masterPid) return name;
      } catch {}
    }
    return undefined;
  };
  if (!existsSync('/proc/self/stat')) return undefined;
  return async () => {
    for (let i = 0; i < 50; i++) {
      const pid = worker();
      if (pid) return (ticks(pid).cpu * 1e6) / 100; // USER_HZ is 100 on Linux
      await new Promise((r) => setTimeout(r, 20));
    }
    return Number.NaN;
  };
}

// ---- instruction counts (callgrind): deterministic where wall-clock figures are not ----

/** Whether valgrind is installed (the instruction-count modes need it). */
export function haveValgrind() {
  return spawnSync('valgrind', ['--version'], { encoding: 'utf8' }).status === 0;
}

/**
 * Runs `node <args>` under callgrind with collection off until `zero()`: the caller warms the
 * server up, calls `zero()`, drives a fixed number of requests, then `instructions()` dumps the
 * counters and returns the instructions executed since `zero()` (all threads: the main thread,
 * V8's GC and compiler threads). `ready` matches the server's ready line on stdout; the match
 * is returned. Node's JIT writes code at run time, hence --smc-check=all-non-file.
 */
export async function callgrindNode(args, ready, { env = process.env, dir } = {}) {
  const { spawn } = await import('node:child_process');
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const out = dir ?? mkdtempSync(join(tmpdir(), 'branchline-callgrind-'));
  const child = spawn(
    'valgrind',
    [
      '--tool=callgrind',
      '--smc-check=all-non-file',
      `--callgrind-out-file=${out}/callgrind.out.%p`,
      process.execPath,
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  process.on('exit', () => child.kill('SIGKILL'));
  let text = '';
  let errText = '';
  child.stderr.on('data', (d) => {
    errText += d;
  });
  const match = await new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      text += d;
      const m = text.match(ready);
      if (m) resolve(m);
    });
    child.once('exit', (code) =>
      reject(new Error(`valgrind ${args.join(' ')} exited (${code}):\n${errText}`)),
    );
  });
  const control = (flag) => {
    const r = spawnSync('callgrind_control', [flag, String(child.pid)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`callgrind_control ${flag} failed: ${r.stderr || r.stdout}`);
  };
  let dumps = 0;
  return {
    match,
    pid: child.pid,
    dir: out,
    zero: () => control('-z'),
    /** Dumps the counters; returns { instructions, file }. */
    instructions() {
      control('-d');
      dumps++;
      const file = join(out, `callgrind.out.${child.pid}.${dumps}`);
      const m =
        /^totals: (\d+)/m.exec(readFileSync(file, 'utf8')) ??
        /^summary: (\d+)/m.exec(readFileSync(file, 'utf8'));
      return { instructions: Number(m[1]), file };
    },
    /** Stops valgrind; removes the dumps unless the caller chose the directory. */
    stop() {
      child.kill('SIGKILL');
      if (dir === undefined) rmSync(out, { recursive: true, force: true });
    },
  };
}

/**
 * The top `n` functions of a callgrind dump by exclusive instructions (callgrind_annotate), as
 * `{ share, instructions, fn }`. JIT-compiled JavaScript shows as addresses (`0x…`): valgrind
 * cannot name it; V8's builtins and Node's C++ are named.
 */
export function callgrindTop(file, n = 15) {
  const r = spawnSync('callgrind_annotate', ['--threshold=100', file], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) return [];
  const rows = [];
  let total = 0;
  for (const line of r.stdout.split('\n')) {
    const t =
      /^\s*([\d,]+)\s+\(100\.0%\)\s+PROGRAM TOTALS/.exec(line) ?? /^\s*([\d,]+)\s+PROGRAM TOTALS/.exec(line);
    if (t) total = Number(t[1].replaceAll(',', ''));
    const m = /^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)\s*$/.exec(line);
    if (!m || line.includes('PROGRAM TOTALS') || !m[2].includes(':')) continue;
    // Frames that only enclose others (JIT-compiled code, which valgrind cannot name, is
    // counted against them): not a cost of their own.
    if (
      /\(below main\)|libc-start|:main |NodeMainInstance::Run|SpinEventLoop|node::Start|:clone |start_thread|ld-linux/.test(
        m[2],
      )
    )
      continue;
    rows.push({
      instructions: Number(m[1].replaceAll(',', '')),
      fn: m[2].replace(/^\?\?\?:/, '').replace(/ \[.*\]$/, ''),
    });
    if (rows.length >= n) break;
  }
  return rows.map((x) => ({ ...x, share: total ? x.instructions / total : Number.NaN }));
}

/**
 * Runs each measurement in `runs` ({ name: async (input) => sample }) once per round, rotating
 * the order every round so no variant always runs first, and takes each variant's ratio to
 * `reference` within the round (which cancels drift between rounds). A sample is a number, or
 * anything `value` turns into one. `prepare(round)`, when given, runs before each round and its
 * result is every run's `input` (e.g. the backlogs the round drains). Returns the samples and
 * the ratios per name, each sorted ascending by value, and the samples round by round.
 */
export async function interleavedRounds(runs, rounds, reference, { prepare, value = (x) => x } = {}) {
  const names = Object.keys(runs);
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const ratios = Object.fromEntries(names.filter((n) => n !== reference).map((n) => [n, []]));
  const byRound = [];
  for (let r = 0; r < rounds; r++) {
    const input = prepare ? await prepare(r) : undefined;
    const round = {};
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length];
      round[name] = await runs[name](input);
      samples[name].push(round[name]);
    }
    for (const n of Object.keys(ratios)) ratios[n].push(value(round[n]) / value(round[reference]));
    byRound.push(round);
  }
  for (const xs of Object.values(samples)) xs.sort((a, b) => value(a) - value(b));
  for (const xs of Object.values(ratios)) xs.sort((a, b) => a - b);
  return { samples, ratios, rounds: byRound };
}

// ---- consumer throughput: draining a backlog, plain client against Branchline's (amqp, bullmq, sqs) ----

/**
 * Counts `total` processed items; measures from the first to the last, so connection and set-up
 * time is left out for every scenario alike, and the client's CPU time over that span.
 * `finished` resolves to { rate (items/s), cpuUsPerItem }.
 */
export function throughputCounter(total) {
  let n = 0;
  let t0;
  let cpu0;
  let done;
  const finished = new Promise((r) => {
    done = r;
  });
  return {
    tick() {
      if (n === 0) {
        t0 = process.hrtime.bigint();
        cpu0 = process.cpuUsage();
      }
      if (++n === total) {
        const cpu = process.cpuUsage(cpu0);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        done({ rate: (total - 1) / seconds, cpuUsPerItem: (cpu.user + cpu.system) / total });
      }
    },
    finished,
  };
}

/**
 * Backlog rounds over `scenarios` ({ name: { fill(queue), drain(queue, filled) } }): each round
 * first fills every scenario's queue (a fresh one, named by `queueName(scenario, n)`; `fill`
 * returns what `drain` needs besides the name), then drains them back to back in a rotating
 * order, so the samples of one round are taken close together and load drift shows up in every
 * scenario alike. A drain returns at least `{ rate }`; ratios are taken per round against
 * `reference`'s sample of that round.
 */
export function drainRounds(scenarios, { rounds, reference, queueName }) {
  const names = Object.keys(scenarios);
  let seq = 0;
  const prepare = async () => {
    const queues = {};
    for (const n of names) {
      const queue = queueName(n, ++seq);
      queues[n] = { queue, filled: await scenarios[n].fill(queue) };
    }
    return queues;
  };
  const runs = Object.fromEntries(
    names.map((n) => [n, (queues) => scenarios[n].drain(queues[n].queue, queues[n].filled)]),
  );
  return interleavedRounds(runs, rounds, reference, { prepare, value: (x) => x.rate });
}

/**
 * The figures of `drainRounds`'s result per scenario — median rate, median of the per-round
 * ratios to the reference, median client CPU per item, the samples in round order — and the
 * table rows that show them (`unit`: "msg", "job").
 */
export function throughputSummary({ ratios, rounds }, reference, unit) {
  const names = Object.keys(rounds[0]);
  const figures = {};
  const rows = [];
  for (const name of names) {
    const samples = rounds.map((r) => r[name]);
    const f = {
      rate: median(samples.map((x) => x.rate)),
      ratio: name === reference ? 1 : median(ratios[name]),
      cpuUsPerItem: median(samples.map((x) => x.cpuUsPerItem)),
      samples,
    };
    figures[name] = f;
    rows.push({
      scenario: name,
      [`${unit}s/s (median)`]: fmt(f.rate, 0),
      samples: samples.map((x) => fmt(x.rate, 0)).join(' '),
      [`vs ${reference} (median of per-round ratios)`]: `${fmt(f.ratio * 100, 1)}%`,
      [`client CPU µs/${unit}`]: fmt(f.cpuUsPerItem, 1),
    });
  }
  return { figures, rows };
}

// ---- routed database pools against plain driver pools (pg, mysql) ----

/**
 * Per-query latency of a routed pool against the driver's plain pool, in one run. `driver`:
 *   label      the plain pool in the table, e.g. "pg.Pool"
 *   type       the resource type of its sandbox databases ("postgres", "mysql")
 *   source     the baseline database; `sandboxDatabases` provisions the sandbox one from it
 *   plainPool(database), routedPool(options)  pools of 4 connections
 *   currentDatabase(pool)  the database a query on `pool` reaches
 *   query(pool, i, w)      the timed query (i: iteration, w: in-flight lane)
 *   end(pool)
 * Queries of all cases interleave one by one (rotating order), so load from other processes
 * hits every case alike; each query is timed on its own. Prints the tables and ratios; returns
 * the figures by case, and the routing decision's own cost (`decisionNs`).
 */
export async function routedPoolOverhead(driver, { perCase, sandboxDatabases }) {
  const { contextWithRoutingKey, createRuntime, withRoutingKey } = await import('@branchline/core');
  const { activeContext, runInContext, StaticRouteSource } = await import('@branchline/core/transport');
  const { source } = driver;
  // A sandbox database for the keyed case, so the table is realistic (routing is active).
  const sbx = await sandboxDatabases.provision({ sandbox: 'bench-route', source });
  const res = { db: { type: driver.type, spec: { from: source }, status: 'ready' } };
  const routes = new StaticRouteSource({
    sandboxes: [
      { name: 'bench-route', key: 'bench-route', resources: res },
      ...Array.from({ length: 50 }, (_, i) => ({ name: `other-${i}`, key: `other-${i}`, resources: res })),
    ],
  });
  const empty = new StaticRouteSource({ sandboxes: [] });
  const plain = driver.plainPool(source);
  const plainSandbox = driver.plainPool(sbx.database);
  const routedIdle = driver.routedPool({ runtime: createRuntime({ routes: empty, service: 'orders' }) });
  const routed = driver.routedPool({
    sandboxMax: 4,
    runtime: createRuntime({ routes, service: 'orders' }),
  });

  // Both sides of the keyed comparison run inside the same pre-built context, so only the
  // pool differs; the context's creation belongs to the app's middleware, not to the pool.
  const keyed = contextWithRoutingKey(activeContext(), 'bench-route');
  const plainName = `plain ${driver.label} (baseline)`;
  const plainSandboxName = `plain ${driver.label} (sandbox DB)`;
  const keyedName = 'routed, key → sandbox DB';
  const cases = [
    [plainName, plain, undefined, source],
    ['routed, no sandbox databases', routedIdle, undefined, source],
    ['routed, 51 sandbox DBs, no key', routed, undefined, source],
    [plainSandboxName, plainSandbox, keyed, sbx.database],
    [keyedName, routed, keyed, sbx.database],
  ];
  const refOf = (name) => (name.endsWith('→ sandbox DB') ? plainSandboxName : plainName);
  for (const [name, pool, ctx, expected] of cases) {
    const db = await (ctx
      ? runInContext(ctx, () => driver.currentDatabase(pool))
      : driver.currentDatabase(pool));
    if (db !== expected) throw new Error(`${name} queried ${db}`);
  }
  const measure = async (width) => {
    const lat = cases.map(() => []);
    const iterations = [];
    await Promise.all(
      Array.from({ length: width }, async (_, w) => {
        for (let i = 0; i < perCase / width; i++) {
          const row = new Array(cases.length);
          iterations.push(row);
          for (let k = 0; k < cases.length; k++) {
            const j = (k + i + w) % cases.length;
            const [, pool, ctx] = cases[j];
            const t0 = process.hrtime.bigint();
            if (ctx) await runInContext(ctx, () => driver.query(pool, i, w));
            else await driver.query(pool, i, w);
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
        pairedRatio: percentileOf(
          results[kind].iterations.map((row) => row[j] / row[r]),
          50,
        ),
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
    `per-query latency, ${perCase} queries per case, 1 and 4 in flight, interleaved; ratio vs a plain ${driver.label} on the same database`,
    rows,
  );

  // The routing decision alone, without I/O: what the routed pool adds to each call.
  const decideNoKey = nsPerOp(() => routed.poolFor());
  const decideActive = await withRoutingKey('bench-route', async () => nsPerOp(() => routed.poolFor()));
  const perQueryNs = figures[plainName].seq.medianUs * 1000;
  const share = (ns) => `${fmt((ns / perQueryNs) * 100, 3)}%`;
  printTable('routing decision alone (no I/O)', [
    { case: 'no key', ns: fmt(decideNoKey), 'share of a query': share(decideNoKey) },
    { case: 'key in the active context', ns: fmt(decideActive), 'share of a query': share(decideActive) },
  ]);
  figures.decisionNs = { noKey: decideNoKey, keyActive: decideActive };
  console.log(
    `
routed ÷ plain ${driver.label} (paired, 1 in flight): ${fmt(figures['routed, no sandbox databases'].seq.pairedRatio, 3)} without sandbox databases, ${fmt(figures[keyedName].seq.pairedRatio, 3)} with a key → sandbox DB`,
  );

  await Promise.all([plain, plainSandbox, routedIdle, routed].map((p) => driver.end(p)));
  await sandboxDatabases.drop({ sandbox: 'bench-route', source });
  return figures;
}

/** The 1, 5 and 15 minute load averages, printed: figures taken under load say so. */
export function reportLoad() {
  const load = readFileSync('/proc/loadavg', 'utf8').trim();
  console.log(`
load average at the end: ${load} (other work was running; figures are under load)`);
  return load;
}
