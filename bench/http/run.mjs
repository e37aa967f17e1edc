// HTTP benchmark, one run:
//  1. plain Express vs Express + Branchline, plain Fastify vs Fastify + Branchline, each with no
//     key and with a key that routes nowhere. Targets: >= 97% of plain throughput with no key,
//     >= 95% with an unrouted key.
//  2. client → baseline → forwarded to sandbox, against client → sandbox directly, the same hop
//     through a minimal relay in a node:http server (the floor) and through nginx (keep-alive
//     upstream), p50/p90/p99 at 1 and 32 connections. Targets: each forwarder's added latency is
//     at most 1.15× the floor's (p50 and p99, 1 and 32 connections), and it forwards at 32
//     connections at least nginx's throughput.
//  3. BENCH_HTTP_PARTS=instructions: callgrind counts the instructions the forwarding process
//     executes per forwarded request, Branchline's node:http forwarder vs the floor relay
//     (deterministic, unlike wall-clock figures on a shared machine).
// Servers run in their own processes; autocannon drives them from this one.
// BENCH_HTTP_SECONDS (default 5) sets each measurement's duration.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import {
  callgrindNode,
  callgrindTop,
  findNginx,
  fmt,
  freePort,
  haveValgrind,
  knob,
  median,
  nginxConf,
  nginxWorkerCpu,
  nsPerOp,
  printTable,
  saveResults,
  smoke,
} from '../lib.mjs';
import { load } from './load.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const seconds = knob('BENCH_HTTP_SECONDS', 5, 0.2);
// Each measurement's warm-up, seconds.
const WARMUP = smoke ? 0.1 : 1;
const children = [];
let nginxMaster;
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  nginxMaster?.kill('SIGTERM');
});

function start(mode, port, extra = [], nodeArgs = []) {
  const child = spawn(
    process.execPath,
    [...nodeArgs, join(here, 'servers.mjs'), mode, String(port), ...extra],
    {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
      env: { ...process.env, BRANCHLINE_LOG_LEVEL: 'error' },
    },
  );
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) {
        const url = `http://127.0.0.1:${port}`;
        cpuOf.set(url, child);
        resolve(url);
      }
    });
    child.once('exit', (code) => reject(new Error(`${mode} server exited (${code})`)));
  });
}

const cpuOf = new Map();

/** The server process's CPU time (user + system, µs); nginx's worker's from /proc. */
function cpuTime(url) {
  const child = cpuOf.get(url);
  if (!child) return Promise.resolve(Number.NaN);
  if (child.cpu) return child.cpu();
  return new Promise((resolve) => {
    child.once('message', (u) => resolve(u.user + u.system));
    child.send('cpu');
  });
}

async function cannon(url, { connections = 10, headers = {}, duration = seconds } = {}) {
  const cpu0 = await cpuTime(url);
  const r = await new Promise((resolve, reject) => {
    // autocannon stops at its next 1 s sample: a smoke run's short measurements take one sample.
    const sampling = smoke ? { sampleInt: duration * 1000 } : {};
    autocannon({ url, connections, duration, headers, pipelining: 1, ...sampling }, (err, r) => {
      if (err) return reject(err);
      if (r.non2xx || r.errors) return reject(new Error(`${url}: ${r.non2xx} non-2xx, ${r.errors} errors`));
      resolve(r);
    });
  });
  const cpu = (await cpuTime(url)) - cpu0;
  return {
    cpuPerRequest: cpu / r.requests.total,
    rps: smoke ? r.requests.total / r.duration : r.requests.average,
    p50: r.latency.p50,
    p90: r.latency.p90,
    p99: r.latency.p99,
  };
}

const KEY = { baggage: 'userid=alice,branchline=other-key' };

/**
 * Which server answered a request to `url`: the `instance` in its body (servers.mjs), so `sandbox`
 * when the request was forwarded. A forwarder that answered itself would otherwise be measured as
 * a fast hop, and a plugin that routed nothing as a cheap one.
 */
async function answeredBy(url, headers) {
  for (let i = 0; ; i++) {
    try {
      return (await (await fetch(url, { headers })).json()).instance;
    } catch (err) {
      // Express prints `ready` before it listens.
      if (i >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
async function expectAnswer(name, url, headers, instance) {
  const by = await answeredBy(url, headers);
  if (by !== instance) throw new Error(`${name}: answered by ${by}, expected ${instance}`);
}
const results = { seconds, loadAverageAtStart: loadavg(), frameworks: [], hop: [], targets: {} };

// 1. Framework overhead: alternate plain and Branchline runs to spread the machine's noise.
// Each pair runs twice: with V8's defaults, and with both processes' young generation pinned
// at 16 MB semi-spaces. In an app this small, V8 sizes its young generation by heuristics that
// a few MB more heap (what loading any library adds) moves either way, by several µs per
// request; pinned, the comparison shows the per-request work alone (see docs/http.md).
const ROUNDS = knob('BENCH_HTTP_ROUNDS', 5, 1);
const YOUNG_GEN = {
  'V8 default': [],
  'pinned 16 MB': ['--min-semi-space-size=16', '--max-semi-space-size=16'],
};
async function overhead(name, plainMode, blMode, youngGen) {
  const nodeArgs = YOUNG_GEN[youngGen];
  const [plain, bl] = await Promise.all([
    start(plainMode, await freePort(), [], nodeArgs),
    start(blMode, await freePort(), [], nodeArgs),
  ]);
  // The unrouted key stays here: both answer themselves.
  await expectAnswer(plainMode, plain, KEY, plainMode);
  await expectAnswer(blMode, bl, KEY, blMode);
  for (const [label, headers, target] of [
    ['no key', {}, 0.97],
    ['unrouted key', KEY, 0.95],
  ]) {
    await cannon(plain, { headers, duration: WARMUP });
    await cannon(bl, { headers, duration: WARMUP });
    const p = [];
    const b = [];
    const pc = [];
    const bc = [];
    for (let i = 0; i < ROUNDS; i++) {
      const rp = await cannon(plain, { headers });
      const rb = await cannon(bl, { headers });
      p.push(rp.rps);
      b.push(rb.rps);
      pc.push(rp.cpuPerRequest);
      bc.push(rb.cpuPerRequest);
    }
    const ratio = median(p.map((x, i) => b[i] / x));
    // Throughput a CPU-bound server can reach is inversely proportional to its CPU per request.
    const cpuRatio = median(pc) / median(bc);
    const row = {
      framework: name,
      'young gen': youngGen,
      request: label,
      'plain req/s': fmt(median(p), 0),
      'branchline req/s': fmt(median(b), 0),
      ratio: fmt(ratio, 3),
      'plain CPU µs/req': fmt(median(pc), 1),
      'branchline CPU µs/req': fmt(median(bc), 1),
      'CPU ratio': fmt(cpuRatio, 3),
      target: `>= ${target}`,
      ok: `${ratio >= target ? 'yes' : 'NO'} (req/s), ${cpuRatio >= target ? 'yes' : 'NO'} (CPU)`,
    };
    results.frameworks.push({ ...row, plainRuns: p, branchlineRuns: b, plainCpu: pc, branchlineCpu: bc });
    console.log(Object.values(row).join('  '));
  }
}

function nginxConfig(dir, listen, upstream) {
  const u = new URL(upstream);
  return nginxConf(
    dir,
    `  keepalive_requests 1000000;
  upstream sandbox {
    server ${u.host};
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${listen};
    location / {
      proxy_pass http://sandbox;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
`,
    { workerConnections: 4096 },
  );
}

async function startNginx(upstream) {
  const bin = findNginx()?.bin;
  if (!bin) {
    console.log(
      '\nnginx is not installed: skipping the nginx comparison. Install it with\n  apt-get update && apt-get install -y nginx\n(see bench/http/README.md); the benchmark runs it itself with its own config.',
    );
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), 'branchline-nginx-'));
  const port = await freePort();
  writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, port, upstream));
  const child = spawn(bin, ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'inherit' });
  // SIGKILL would leave nginx's worker behind; SIGTERM makes the master stop it.
  nginxMaster = child;
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const url = `http://127.0.0.1:${port}`;
  const cpu = nginxWorkerCpu(child.pid);
  if (cpu) cpuOf.set(url, { cpu });
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(url);
      return url;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nginx did not start; see ${dir}/error.log`);
}

// 2. The forwarding hop, measured with the microsecond client in load.mjs.
const FLOOR = 'node:http minimal relay (floor)';
async function hop() {
  const sandbox = await start('sandbox', await freePort());
  const forwarders = {
    'fastify + branchline': await start('fastify-bl', await freePort(), [sandbox]),
    'express + branchline': await start('express-bl', await freePort(), [sandbox]),
    'express + branchline (attached)': await start('express-at', await freePort(), [sandbox]),
    'node:http + branchline': await start('node-bl', await freePort(), [sandbox]),
  };
  // The least a relay inside a Node HTTP server can do (no Branchline, not a usable proxy): what
  // any forwarder hosted by the app's own server costs at best.
  const floor = await start('floor', await freePort(), [sandbox]);
  const nginx = await startNginx(sandbox);
  const ROUTED = { baggage: 'branchline=bench-key' };
  const paths = { direct: [sandbox, {}], ...(nginx ? { nginx: [nginx, {}] } : {}) };
  paths[FLOOR] = [floor, ROUTED];
  for (const [n, u] of Object.entries(forwarders)) paths[n] = [u, ROUTED];
  for (const [name, [url, headers]] of Object.entries(paths))
    await expectAnswer(name, url, headers, 'sandbox');
  // A Node process keeps getting cheaper per request for several seconds under load (V8 tiers
  // functions up as they get hot): a forwarder measured after 1 s spent 1.8× the CPU per request
  // it spent after 6 s. Every path is warmed this long at 32 connections before any round.
  const hopWarmup = knob('BENCH_HTTP_HOP_WARMUP', 6, 0.1);
  for (const [url, headers] of Object.values(paths))
    await load(url, { headers, connections: 32, duration: hopWarmup });
  const byConn = {};
  for (const connections of [1, 32]) {
    const acc = {};
    for (const [url, headers] of Object.values(paths))
      await load(url, { headers, connections, duration: WARMUP });
    // Rounds interleaved across paths so that the machine's noise hits every path alike.
    const rounds = knob('BENCH_HTTP_HOP_ROUNDS', 5, 1);
    for (let i = 0; i < rounds; i++) {
      for (const [name, [url, headers]] of Object.entries(paths)) {
        const cpu0 = await cpuTime(url);
        const r = await load(url, { headers, connections, duration: seconds / 2 });
        r.cpu = ((await cpuTime(url)) - cpu0) / r.requests;
        if (r.errors) throw new Error(`${name}: ${r.errors} failed requests`);
        acc[name] ??= [];
        acc[name].push(r);
      }
    }
    const rows = [];
    const summary = {};
    for (const [name, runs] of Object.entries(acc)) {
      const s = {
        rps: median(runs.map((r) => r.rps)),
        p50: median(runs.map((r) => r.p50)),
        p90: median(runs.map((r) => r.p90)),
        p99: median(runs.map((r) => r.p99)),
        cpu: median(runs.map((r) => r.cpu)),
      };
      summary[name] = s;
      rows.push({
        path:
          name === 'direct'
            ? 'client → sandbox'
            : name === 'nginx'
              ? 'client → nginx → sandbox'
              : `client → ${name} → sandbox`,
        connections,
        'req/s': fmt(s.rps, 0),
        'p50 µs': fmt(s.p50, 0),
        'p90 µs': fmt(s.p90, 0),
        'p99 µs': fmt(s.p99, 0),
        // The CPU the proxy (the sandbox itself on the direct path) spent per request.
        'CPU µs/req': fmt(s.cpu, 1),
      });
    }
    printTable(`forwarding hop, ${connections} connection(s), median of ${rounds} rounds`, rows);
    byConn[connections] = summary;
    results.hop.push(...rows);
  }
  // Targets: each Branchline forwarder's added latency within 1.15× the floor relay's (the
  // least a relay hosted by a Node HTTP server adds), and at 32 connections at least nginx's
  // throughput. nginx's added latency is shown next to them for scale.
  const checks = [];
  for (const name of Object.keys(forwarders)) {
    for (const connections of [1, 32]) {
      const s = byConn[connections];
      for (const p of ['p50', 'p99']) {
        const ours = s[name][p] - s.direct[p];
        const floorAdds = s[FLOOR][p] - s.direct[p];
        const ratio = ours / floorAdds;
        checks.push({
          forwarder: name,
          measure: `added ${p} @${connections}`,
          'branchline µs': fmt(ours, 0),
          'floor µs': fmt(floorAdds, 0),
          'nginx µs': s.nginx ? fmt(s.nginx[p] - s.direct[p], 0) : '-',
          ratio: fmt(ratio, 2),
          target: '<= 1.15 × floor',
          ok: floorAdds > 0 && ratio <= 1.15 ? 'yes' : 'NO',
        });
      }
    }
    if (nginx) {
      const tput = byConn[32][name].rps / byConn[32].nginx.rps;
      checks.push({
        forwarder: name,
        measure: 'req/s @32 vs nginx',
        'branchline µs': `${fmt(byConn[32][name].rps, 0)} req/s`,
        'floor µs': `${fmt(byConn[32][FLOOR].rps, 0)} req/s`,
        'nginx µs': `${fmt(byConn[32].nginx.rps, 0)} req/s`,
        ratio: fmt(tput, 2),
        target: '>= 1.0 × nginx',
        ok: tput >= 1 ? 'yes' : 'NO',
      });
    }
  }
  printTable(
    "targets: added latency (path − direct) vs the floor relay's, throughput at 32 connections vs nginx",
    checks,
  );
  results.targets.hop = checks;
  results.hopSummary = byConn;
}

// 3. What routing costs per request inside the process, without sockets (less sensitive to load).
async function inProcess() {
  const { branchline } = await import('@branchline/express');
  const mw = branchline({
    service: 'svc',
    routes: {
      sandboxes: [{ name: 'o', key: 'other-key', overrides: { other: { http: 'http://127.0.0.1:9' } } }],
    },
  });
  const base = ['Host', 'svc:8080', 'User-Agent', 'bench', 'Accept', '*/*'];
  const noKey = { rawHeaders: base };
  const keyed = { rawHeaders: [...base, 'Baggage', 'userid=alice,branchline=other-key'] };
  const next = () => {};
  const rows = [
    {
      request: 'no key',
      'ns per request': fmt(
        nsPerOp(() => mw(noKey, {}, next)),
        0,
      ),
    },
    {
      request: 'unrouted key',
      'ns per request': fmt(
        nsPerOp(() => mw(keyed, {}, next)),
        0,
      ),
    },
  ];
  printTable('the Express middleware alone, in process (ns per request)', rows);
  results.inProcess = rows;
  await mw.close();
}

// 4. Instructions per forwarded request (callgrind): the forwarding process alone under valgrind,
// warmed up, its counters zeroed, then a fixed number of sequential requests on one kept-alive
// connection. Counts every thread of the process (the event loop, V8's GC and compiler threads).
async function instructions() {
  if (!haveValgrind()) {
    console.log('\nvalgrind is not installed: skipping instruction counts (apt-get install -y valgrind).');
    return;
  }
  const warm = knob('BENCH_HTTP_CG_WARMUP', 16000, 200);
  const n = knob('BENCH_HTTP_CG_REQUESTS', 2000, 100);
  const connections = knob('BENCH_HTTP_CG_CONNECTIONS', 1);
  const modes = (process.env.BENCH_HTTP_CG_MODES ?? 'floor,node-bl').split(',');
  const label = {
    floor: FLOOR,
    'node-bl': 'node:http + branchline',
    'fastify-bl': 'fastify + branchline',
    'express-bl': 'express + branchline',
    'express-at': 'express + branchline (attached)',
  };
  const sandbox = await start('sandbox', await freePort());
  const ROUTED = { baggage: 'branchline=bench-key' };
  const rounds = knob('BENCH_HTTP_CG_ROUNDS', 3, 1);
  const per = {};
  const roundsOf = {};
  const tops = {};
  for (const mode of modes) {
    const port = await freePort();
    const cg = await callgrindNode([join(here, 'servers.mjs'), mode, String(port), sandbox], /ready/, {
      env: { ...process.env, BRANCHLINE_LOG_LEVEL: 'error' },
    });
    try {
      const url = `http://127.0.0.1:${port}`;
      // Express prints `ready` before it listens: wait until the port answers.
      for (let i = 0; i < 100 && (await load(url, { headers: ROUTED, requests: 1 })).errors; i++)
        await new Promise((r) => setTimeout(r, 100));
      await expectAnswer(mode, url, ROUTED, 'sandbox');
      const w = await load(url, { headers: ROUTED, connections, requests: warm });
      if (w.errors) throw new Error(`${mode}: ${w.errors} failed requests`);
      // Rounds of `n` requests, each counted alone; the median round is the figure (a round
      // that a background optimization or a GC cycle lands in costs more).
      const counts = [];
      let file;
      for (let i = 0; i < rounds; i++) {
        cg.zero();
        const r = await load(url, { headers: ROUTED, connections, requests: n });
        if (r.errors || r.requests !== n)
          throw new Error(`${mode}: ${r.errors} failed, ${r.requests} of ${n} answered`);
        const d = cg.instructions();
        counts.push(d.instructions / n);
        if (d.instructions / n === median(counts)) file = d.file;
      }
      per[mode] = median(counts);
      roundsOf[mode] = counts;
      tops[mode] = callgrindTop(file, 12);
    } finally {
      cg.stop();
    }
  }
  const floorIr = per.floor;
  const rows = modes.map((mode) => ({
    process: label[mode] ?? mode,
    'instructions/request': fmt(per[mode], 0),
    rounds: roundsOf[mode].map((x) => fmt(x / 1000, 1)).join(' / ') + ' k',
    'vs floor': floorIr ? fmt(per[mode] / floorIr, 3) : '-',
    // The least round of each: the steady state, without a round a JIT compile or GC landed in.
    'least round vs floor': floorIr ? fmt(Math.min(...roundsOf[mode]) / Math.min(...roundsOf.floor), 3) : '-',
    target: mode === 'floor' ? '-' : '<= 1.15',
    ok: mode === 'floor' || !floorIr ? '-' : per[mode] / floorIr <= 1.15 ? 'yes' : 'NO',
  }));
  printTable(
    `instructions per forwarded request (callgrind, forwarding process only, median of ${rounds} rounds of ${n} requests on ${connections} connection(s), after ${warm} warm-up)`,
    rows,
  );
  for (const mode of modes)
    printTable(
      `${label[mode] ?? mode}: top functions by own instructions (JIT-compiled JavaScript is not named by valgrind and is left out)`,
      tops[mode].map((t) => ({
        'per request': fmt(t.instructions / n, 0),
        share: `${fmt(t.share * 100, 1)} %`,
        function: t.fn.slice(0, 110),
      })),
    );
  results.instructions = {
    requests: n,
    rounds: roundsOf,
    warmup: warm,
    connections,
    perRequest: per,
    rows,
    top: tops,
  };
}

// BENCH_HTTP_PARTS=hop runs only the forwarding hop (frameworks, inprocess, hop by default;
// `instructions` adds the callgrind counts).
const parts = new Set((process.env.BENCH_HTTP_PARTS ?? 'frameworks,inprocess,hop').split(','));
if (parts.has('frameworks')) {
  console.log(
    `autocannon, ${seconds}s per measurement; framework overhead (median of ${ROUNDS} alternating rounds, 10 connections):`,
  );
  for (const youngGen of Object.keys(YOUNG_GEN)) {
    await overhead('express 5', 'express', 'express-bl', youngGen);
    await overhead('fastify 5', 'fastify', 'fastify-bl', youngGen);
  }
  printTable(
    'throughput vs plain (ratio = branchline / plain req/s; CPU ratio = plain / branchline CPU per request)',
    results.frameworks.map(({ plainRuns, branchlineRuns, plainCpu, branchlineCpu, ...r }) => r),
  );
}
if (parts.has('inprocess')) await inProcess();
if (parts.has('hop')) await hop();
if (parts.has('instructions')) await instructions();
results.loadAverageAtEnd = loadavg();
console.log(
  `\n(load average ${results.loadAverageAtStart.map((x) => x.toFixed(1)).join(' ')} at start, ${results.loadAverageAtEnd.map((x) => x.toFixed(1)).join(' ')} at end; other jobs share this machine)`,
);
saveResults('http', results);
process.exit(0);
