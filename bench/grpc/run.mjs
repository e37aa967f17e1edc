// bench/grpc: what Branchline costs a gRPC service.
//  1. Unary calls per second: plain grpc-js vs a Branchline server (createRoutedServer) and client
//     (createClientInterceptor), for calls without a key and with a key no rule routes here.
//  2. The latency one forwarding hop adds: client → sandbox directly, vs client → Branchline
//     baseline → sandbox, vs a bare node:http2 relay, vs client → nginx `grpc_pass` → sandbox
//     (p50/p99), and the CPU each proxy process spends per call.
//  3. BENCH_GRPC_PARTS=instructions (not in the default run): callgrind counts the instructions the
//     forwarding process executes per forwarded call, Branchline's baseline vs the node:http2
//     relay (deterministic where wall-clock figures on a shared machine are not).
// Targets: Branchline's hop adds at most 1.15× what the node:http2 relay's adds (p50 and p99),
// and costs at most 1.15× its instructions per call. nginx's hop is shown for scale.
// Servers run in child processes; the load comes from this process. Results: bench/results/grpc.json.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withRoutingKey } from '@branchline/core';
import { createClientInterceptor } from '@branchline/grpc';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
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
  percentile,
  printTable,
  saveResults,
  smoke,
} from '../lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const def = protoLoader.loadSync(join(here, 'bench.proto'), { longs: Number, defaults: true });
const Bench = grpc.loadPackageDefinition(def).branchline.bench.Bench;
const creds = grpc.credentials.createInsecure();
const quick = process.env.BENCH_QUICK === '1';
// Sizes: BENCH_SMOKE=1 (lib.mjs) the least, BENCH_QUICK=1 short, else the full run.
const size = (full, short, least) => (smoke ? least : quick ? short : full);
// BENCH_GRPC_FLOOR=1 adds the lower-bound paths of frame-relay.mjs to the latency table.
const floor = process.env.BENCH_GRPC_FLOOR === '1';
const children = [];

function cleanup() {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
}
process.on('exit', cleanup);

function start(cmd, args, readyPattern, ipc = false) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc'] : [])] });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    const onData = (d) => {
      out += d;
      const m = out.match(readyPattern);
      if (m) resolve({ child, match: m });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${cmd} ${args.join(' ')} exited (${code}):\n${out}`)));
  });
}

async function startServers(role, ...args) {
  const { child, match } = await start(
    process.execPath,
    [join(here, 'servers.mjs'), role, ...args],
    /ready (.*)\n/,
    true,
  );
  const addrs = JSON.parse(match[1]);
  /** The server process's CPU time so far, µs (user + system). */
  addrs.cpu = () =>
    new Promise((resolve) => {
      child.once('message', (m) => resolve(m.cpu.user + m.cpu.system));
      child.send('cpu');
    });
  return addrs;
}

function call(client, n) {
  return new Promise((resolve, reject) =>
    client.call({ text: 'x', n }, (err, reply) => (err ? reject(err) : resolve(reply))),
  );
}

async function ready(client) {
  await new Promise((resolve, reject) =>
    client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())),
  );
}

/**
 * Calls per second with `concurrency` callers, each making sequential unary calls, and the CPU
 * time (client + server process) each call cost. On a machine other work is loading, wall-clock
 * rates swing with the neighbours; CPU per call is the steadier measure of what a call costs.
 */
async function callsPerSecond(client, ms, concurrency, key, serverCpu) {
  let done = 0;
  const cpu0 = process.cpuUsage();
  const s0 = await serverCpu();
  const until = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < until) {
      await call(client, done);
      done++;
    }
  };
  const t0 = performance.now();
  const run = () => Promise.all(Array.from({ length: concurrency }, worker));
  await (key ? withRoutingKey(key, run) : run());
  const rate = done / ((performance.now() - t0) / 1000);
  const c = process.cpuUsage(cpu0);
  const s1 = await serverCpu();
  return { rate, cpuMicrosPerCall: (c.user + c.system + s1 - s0) / done };
}

/** Latencies (µs) of `n` sequential unary calls. */
async function latencies(client, n, key) {
  const out = [];
  const run = async () => {
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      await call(client, i);
      out.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  };
  await (key ? withRoutingKey(key, run) : run());
  return out;
}

async function startNginx(bin, sandboxAddr) {
  const dir = mkdtempSync(join(tmpdir(), 'branchline-bench-grpc-nginx-'));
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    nginxConf(
      dir,
      `  upstream sandbox {
    server ${sandboxAddr};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} http2;
    location / { grpc_pass grpc://sandbox; }
  }
`,
      { errorLevel: 'warn' },
    ),
  );
  const child = spawn(bin, ['-p', dir, '-c', conf, '-e', `${dir}/error.log`], { stdio: 'ignore' });
  children.push(child);
  const stop = () => {
    if (child.exitCode === null) child.kill('SIGQUIT');
    rmSync(dir, { recursive: true, force: true });
  };
  return { addr: `127.0.0.1:${port}`, stop, cpu: nginxWorkerCpu(child.pid) };
}

// ---------------------------------------------------------------------------------------------

// BENCH_GRPC_PARTS: throughput, hop (the default) and instructions.
const parts = new Set((process.env.BENCH_GRPC_PARTS ?? 'throughput,hop').split(','));
const results = {
  loadNote: 'taken on a shared 2-core machine while other test suites ran',
  loadAverageAtStart: loadavg(),
};

// 1. Throughput.
if (parts.has('throughput')) {
  const addrs = await startServers('throughput');
  const plain = new Bench(addrs.plain, creds);
  const bl = new Bench(addrs.branchline, creds, { interceptors: [createClientInterceptor()] });
  await Promise.all([ready(plain), ready(bl)]);
  const ms = size(2000, 500, 100);
  const concurrency = 32;
  const configs = [
    ['plain grpc-js', () => callsPerSecond(plain, ms, concurrency, undefined, addrs.cpu)],
    ['branchline, no key', () => callsPerSecond(bl, ms, concurrency, undefined, addrs.cpu)],
    ['branchline, unrouted key', () => callsPerSecond(bl, ms, concurrency, 'pr-2', addrs.cpu)],
  ];
  // Warm-up: grpc-js needs a few thousand calls before its hot paths are optimized.
  for (const [, fn] of configs) await fn();
  if (!smoke) for (const [, fn] of configs) await fn();
  const samples = configs.map(() => []);
  const rounds = size(7, 2, 1);
  for (let r = 0; r < rounds; r++) {
    // Rotate the order each round so a slow moment does not always hit the same config.
    for (let i = 0; i < configs.length; i++) {
      const j = (i + r) % configs.length;
      samples[j].push(await configs[j][1]());
    }
  }
  const rate = (i) => median(samples[i].map((x) => x.rate));
  const cpu = (i) => median(samples[i].map((x) => x.cpuMicrosPerCall));
  const plainRate = rate(0);
  const rows = configs.map(([name], i) => ({
    config: name,
    'calls/s (median)': fmt(rate(i), 0),
    'vs plain': fmt(rate(i) / plainRate, 3),
    'CPU µs/call': fmt(cpu(i)),
    'capacity vs plain': fmt(cpu(0) / cpu(i), 3),
  }));
  printTable(`unary calls per second, ${concurrency} concurrent callers, ${rounds} rounds of ${ms} ms`, rows);
  results.throughput = {
    concurrency,
    roundMs: ms,
    rounds,
    samples: Object.fromEntries(configs.map(([name], i) => [name, samples[i]])),
    callsPerSecond: Object.fromEntries(configs.map(([name], i) => [name, rate(i)])),
    cpuMicrosPerCall: Object.fromEntries(configs.map(([name], i) => [name, cpu(i)])),
    ratioNoKey: rate(1) / plainRate,
    ratioUnroutedKey: rate(2) / plainRate,
    capacityRatioNoKey: cpu(0) / cpu(1),
    capacityRatioUnroutedKey: cpu(0) / cpu(2),
    target: 0.95,
  };
  plain.close();
  bl.close();
}

// 2. Forwarding hop latency. Every path gets the same client (Branchline's client interceptor)
// and the same key, so the bytes on the wire match and the hop is all that differs: direct to
// the sandbox; through the Branchline baseline, which forwards the key to the sandbox; through a
// minimal relay written on node:http2 (the floor for any hop done by a Node process); through
// nginx's grpc_pass. One call at a time on one connection per path; hop = path minus direct.
if (parts.has('hop')) {
  const { sandbox } = await startServers('sandbox');
  const baseline = await startServers('baseline', sandbox);
  const relay = await startServers('relay', sandbox);
  const nginx = findNginx();
  let proxy;
  if (nginx) proxy = await startNginx(nginx.bin, sandbox);
  else
    console.log(
      '\nnginx not found: skipping the nginx grpc_pass comparison. Install it with\n  apt-get update && apt-get install -y nginx',
    );
  const client = (addr) => new Bench(addr, creds, { interceptors: [createClientInterceptor()] });
  // [name, client, proxy CPU reader, is a hop]; nginx stays last.
  const targets = [
    ['direct', client(sandbox), undefined, false],
    ['branchline forward', client(baseline.baseline), baseline.cpu, true],
    ['node:http2 relay (floor)', client(relay.relay), relay.cpu, true],
  ];
  if (floor) {
    // Lower bounds (bench/grpc/frame-relay.mjs): a relay with a hand-written outgoing side, and
    // the node:http2 server half alone (it answers itself: CPU only, it is not a hop).
    const frames = await startServers('frames', sandbox);
    const answer = await startServers('answer');
    targets.push(['raw-frame relay (optimistic bound)', client(frames.frames), frames.cpu, true]);
    targets.push(['node:http2 server answering itself', client(answer.answer), answer.cpu, false]);
  }
  if (proxy) targets.push(['nginx grpc_pass', client(proxy.addr), proxy.cpu, true]);
  await Promise.all(targets.map(([, c]) => ready(c)));
  const check = await withRoutingKey('pr-1', () => call(targets[1][1], 0));
  if (check.text !== 'sandbox') throw new Error(`the baseline did not forward (answered by ${check.text})`);
  const perRound = size(1000, 200, 20);
  const rounds = size(6, 2, 1);
  for (const [, c] of targets) await latencies(c, size(2000, 300, 20), 'pr-1'); // warm-up
  const lat = targets.map(() => []);
  const cpu = targets.map(() => 0);
  for (let r = 0; r < rounds; r++)
    for (let i = 0; i < targets.length; i++) {
      const j = (i + r) % targets.length;
      const proxyCpu = targets[j][2];
      const c0 = proxyCpu ? await proxyCpu() : 0;
      lat[j].push(...(await latencies(targets[j][1], perRound, 'pr-1')));
      if (proxyCpu) cpu[j] += (await proxyCpu()) - c0;
    }
  const stats = lat.map((xs, i) => {
    const s = [...xs].sort((a, b) => a - b);
    return { p50: percentile(s, 50), p99: percentile(s, 99), proxyCpuMicrosPerCall: cpu[i] / xs.length };
  });
  const d = stats[0];
  const hop = stats.map((s) => ({ p50: s.p50 - d.p50, p99: s.p99 - d.p99 }));
  const ng = proxy ? hop[targets.length - 1] : undefined;
  const rows = targets.map(([name, , , isHop], i) => ({
    path: name,
    'p50 µs': fmt(stats[i].p50),
    'p99 µs': fmt(stats[i].p99),
    'hop p50 µs': isHop ? fmt(hop[i].p50) : '-',
    'hop p99 µs': isHop ? fmt(hop[i].p99) : '-',
    'hop vs nginx p50/p99':
      isHop && ng ? `${fmt(hop[i].p50 / ng.p50, 2)} / ${fmt(hop[i].p99 / ng.p99, 2)}` : '-',
    'proxy CPU µs/call': i === 0 ? '-' : fmt(stats[i].proxyCpuMicrosPerCall),
  }));
  printTable(`sequential unary latency, ${rounds * perRound} calls per path`, rows);
  results.forwarding = {
    calls: rounds * perRound,
    latencyMicros: Object.fromEntries(targets.map(([name], i) => [name, stats[i]])),
    hopMicros: {
      branchline: hop[1],
      nodeHttp2Relay: hop[2],
      ...(floor ? { rawFrameRelay: hop[3] } : {}),
      ...(ng ? { nginx: ng } : {}),
    },
    nginx: nginx ? nginx.version : 'not installed (apt-get install -y nginx)',
    target: 1.5,
  };
  {
    const f = results.forwarding;
    f.floorTarget = 1.15;
    f.vsFloorP50 = hop[1].p50 / hop[2].p50;
    f.vsFloorP99 = hop[1].p99 / hop[2].p99;
    const ok = (r) => (hop[2].p50 > 0 && r <= 1.15 ? 'yes' : 'NO');
    printTable("target: Branchline's hop vs the node:http2 relay's (added latency = path − direct)", [
      {
        measure: 'added p50 @1',
        'branchline µs': fmt(hop[1].p50),
        'relay µs': fmt(hop[2].p50),
        ratio: fmt(f.vsFloorP50, 2),
        target: '<= 1.15',
        ok: ok(f.vsFloorP50),
      },
      {
        measure: 'added p99 @1',
        'branchline µs': fmt(hop[1].p99),
        'relay µs': fmt(hop[2].p99),
        ratio: fmt(f.vsFloorP99, 2),
        target: '<= 1.15',
        ok: ok(f.vsFloorP99),
      },
    ]);
  }
  if (ng) {
    const f = results.forwarding;
    f.hopRatioP50 = hop[1].p50 / ng.p50;
    f.hopRatioP99 = hop[1].p99 / ng.p99;
    f.floorRatioP50 = hop[2].p50 / ng.p50;
    f.floorRatioP99 = hop[2].p99 / ng.p99;
    console.log(
      `\nforwarding hop vs nginx hop (for scale): p50 ${fmt(f.hopRatioP50, 2)}×, p99 ${fmt(f.hopRatioP99, 2)}×; ` +
        `a bare node:http2 relay: p50 ${fmt(f.floorRatioP50, 2)}×, p99 ${fmt(f.floorRatioP99, 2)}×`,
    );
  }
  for (const [, c] of targets) c.close();
  proxy?.stop();
}

// 3. Instructions per forwarded call (callgrind): the forwarding process alone under valgrind,
// warmed up, counters zeroed, then rounds of a fixed number of sequential calls.
if (parts.has('instructions')) {
  if (!haveValgrind()) console.log('\nvalgrind is not installed: skipping instruction counts.');
  else {
    const warm = knob('BENCH_GRPC_CG_WARMUP', 6000, 100);
    const n = knob('BENCH_GRPC_CG_CALLS', 2000, 50);
    const rounds = knob('BENCH_GRPC_CG_ROUNDS', 5, 1);
    const { sandbox } = await startServers('sandbox');
    const per = {};
    const roundsOf = {};
    const tops = {};
    const labels = { relay: 'node:http2 relay (floor)', baseline: 'branchline forward' };
    for (const role of ['relay', 'baseline']) {
      const cg = await callgrindNode([join(here, 'servers.mjs'), role, sandbox], /ready (.*)\n/);
      const c = new Bench(JSON.parse(cg.match[1])[role], creds, {
        interceptors: [createClientInterceptor()],
      });
      try {
        await ready(c);
        await latencies(c, warm, 'pr-1');
        const counts = [];
        let file;
        for (let i = 0; i < rounds; i++) {
          cg.zero();
          await latencies(c, n, 'pr-1');
          const d = cg.instructions();
          counts.push(d.instructions / n);
          if (d.instructions / n === median(counts)) file = d.file;
        }
        per[role] = median(counts);
        roundsOf[role] = counts;
        tops[role] = callgrindTop(file, 12);
      } finally {
        c.close();
        cg.stop();
      }
    }
    const ratio = per.baseline / per.relay;
    printTable(
      `instructions per forwarded call (callgrind, forwarding process only, median of ${rounds} rounds of ${n} sequential calls, after ${warm} warm-up)`,
      ['relay', 'baseline'].map((role) => ({
        process: labels[role],
        'instructions/call': fmt(per[role], 0),
        rounds: `${roundsOf[role].map((x) => fmt(x / 1000, 1)).join(' / ')} k`,
        'vs relay': fmt(per[role] / per.relay, 3),
        // The least round of each: the steady state, without a round a JIT compile or GC landed in.
        'least round vs relay': fmt(Math.min(...roundsOf[role]) / Math.min(...roundsOf.relay), 3),
        target: role === 'relay' ? '-' : '<= 1.15',
        ok: role === 'relay' ? '-' : ratio <= 1.15 ? 'yes' : 'NO',
      })),
    );
    for (const role of ['relay', 'baseline'])
      printTable(
        `${labels[role]}: top functions by own instructions (JIT-compiled JavaScript is not named by valgrind and is left out)`,
        tops[role].map((t) => ({
          'per call': fmt(t.instructions / n, 0),
          share: `${fmt(t.share * 100, 1)} %`,
          function: t.fn.slice(0, 110),
        })),
      );
    results.instructions = {
      calls: n,
      warmup: warm,
      rounds: roundsOf,
      perCall: per,
      ratio,
      target: 1.15,
      top: tops,
    };
  }
}

const t = results.throughput;
if (t) {
  console.log(
    `\nthroughput vs plain: no key ${fmt(t.ratioNoKey * 100, 1)}%, unrouted key ${fmt(t.ratioUnroutedKey * 100, 1)}% (target ≥ 95%)`,
  );
  console.log(
    `capacity vs plain (CPU per call): no key ${fmt(t.capacityRatioNoKey * 100, 1)}%, unrouted key ${fmt(t.capacityRatioUnroutedKey * 100, 1)}%`,
  );
}
results.loadAverageAtEnd = loadavg();
console.log(
  `(${results.loadNote}; load average ${results.loadAverageAtStart.map((x) => x.toFixed(1)).join(' ')} at start, ${results.loadAverageAtEnd.map((x) => x.toFixed(1)).join(' ')} at end)`,
);
saveResults('grpc', results);
cleanup();
process.exit(0);
