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
 * Runs each measurement in `runs` ({ name: async () => number }) once per round, rotating the
 * order every round so no variant always runs first, and takes each variant's ratio to
 * `reference` within the round (which cancels drift between rounds). Returns the samples and the
 * ratios per name, each sorted ascending.
 */
export async function interleavedRounds(runs, rounds, reference) {
  const names = Object.keys(runs);
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const ratios = Object.fromEntries(names.filter((n) => n !== reference).map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    const round = {};
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length];
      round[name] = await runs[name]();
      samples[name].push(round[name]);
    }
    for (const n of Object.keys(ratios)) ratios[n].push(round[n] / round[reference]);
  }
  for (const xs of [...Object.values(samples), ...Object.values(ratios)]) xs.sort((a, b) => a - b);
  return { samples, ratios };
}
