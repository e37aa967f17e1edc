// bench/chain: four services calling each other, A → B → C → D (node:http, keep-alive), in three
// variants measured in one run, rounds interleaved so the machine's noise hits all alike:
//   plain       the chain with no Branchline and no proxies (the baseline the others add to);
//   branchline  each service with origin routing from @branchline/http, a sandbox of C running
//               next to the baseline C, and every request carrying the sandbox's key: the chain
//               is A → B → C (sandbox) → D, each hop decided by the calling service;
//   nginx       the plain chain with an nginx proxy in front of each service (one process each,
//               keep-alive upstream), what a sidecar mesh's inbound proxies cost: client → nginx
//               → A → nginx → B → nginx → C → nginx → D.
// Prints each variant's latency (p50/p99) at 1 and 32 connections, the latency Branchline and the
// nginx sidecars add over the plain chain, and the ratio of the two. BENCH_CHAIN_SECONDS (default
// 2) sets each measurement's duration, BENCH_CHAIN_ROUNDS (default 5) the rounds.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { load } from '../http/load.mjs';
import {
  findNginx,
  fmt,
  freePort,
  knob,
  median,
  nginxConf,
  nginxWorkerCpu,
  printTable,
  saveResults,
  smoke,
} from '../lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const seconds = knob('BENCH_CHAIN_SECONDS', 2, 0.2);
const rounds = knob('BENCH_CHAIN_ROUNDS', 5, 1);
const KEY = 'chain-key';
const HEADERS = { baggage: `userid=alice,branchline=${KEY}` };
const NAMES = ['a', 'b', 'c', 'd'];

const children = [];
const cleanups = [];
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const f of cleanups) f();
});

/** Starts one service process; resolves with { url, cpu() } once it listens. */
async function service(variant, name, next, routes, sandbox) {
  const port = await freePort();
  const args = [join(here, 'service.mjs'), variant, name, String(port), next ?? '-'];
  if (routes) args.push(JSON.stringify(routes), ...(sandbox ? [sandbox] : []));
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: { ...process.env, BRANCHLINE_LOG_LEVEL: 'error' },
  });
  children.push(child);
  await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`service ${variant} ${name} exited (${code})`)));
  });
  const cpu = () =>
    new Promise((resolve) => {
      child.once('message', (u) => resolve(u.user + u.system));
      child.send('cpu');
    });
  return { url: `http://127.0.0.1:${port}`, port, cpu };
}

/** An nginx in front of `upstream` (one worker, keep-alive upstream connections). */
async function nginx(bin, upstream) {
  const dir = mkdtempSync(join(tmpdir(), 'branchline-chain-nginx-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'nginx.conf'),
    nginxConf(
      dir,
      `  keepalive_requests 1000000;
  upstream svc {
    server ${new URL(upstream).host};
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://svc;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
`,
      { workerConnections: 4096 },
    ),
  );
  const child = spawn(bin, ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'inherit' });
  // SIGKILL would leave the worker behind; SIGTERM makes the master stop it.
  cleanups.push(() => {
    if (child.exitCode === null) child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      await fetch(url);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { url, cpu: nginxWorkerCpu(child.pid) };
}

/** The plain chain, each service behind `fronted(url)` when given (an nginx); returns its entry. */
async function plainChain(fronted) {
  const procs = [];
  let next;
  // D first, so each service knows the address of the next one.
  for (const name of [...NAMES].reverse()) {
    const s = await service('plain', name, next);
    procs.push(s);
    next = s.url;
    if (fronted) {
      const n = await fronted(s.url);
      procs.push(n);
      next = n.url;
    }
  }
  return { url: next, procs, expected: 'a(b(c(d)))' };
}

const nginxBin = findNginx()?.bin;
const results = { seconds, rounds, loadAverageAtStart: loadavg() };
console.log(`load average at start: ${results.loadAverageAtStart.map((x) => x.toFixed(1)).join(' ')}`);

const variants = {};
variants.plain = await plainChain();
{
  // Route table: key `chain-key` sends calls to service c to c's sandbox. Services are started
  // from D backwards, so each process gets the table as it stands: the addresses of the
  // services after it (the only ones it calls) are already known.
  const state = { addresses: {}, sandboxUrl: undefined };
  const routes = () => ({
    services: { ...state.addresses },
    sandboxes: [
      { name: 'c-sandbox', key: KEY, overrides: { c: { http: state.sandboxUrl ?? 'http://127.0.0.1:9' } } },
    ],
  });
  // The sandbox of C must be known before B starts: start it first.
  const d = await service('branchline', 'd', undefined, routes());
  state.addresses.d = d.url;
  const cSandbox = await service('branchline', 'c', d.url, routes(), 'c-sandbox');
  state.sandboxUrl = cSandbox.url;
  const c = await service('branchline', 'c', d.url, routes());
  state.addresses.c = c.url;
  const b = await service('branchline', 'b', c.url, routes());
  state.addresses.b = b.url;
  const a = await service('branchline', 'a', b.url, routes());
  variants.branchline = {
    url: a.url,
    procs: [d, cSandbox, c, b, a],
    expected: 'a(b(c(d)))',
    sandboxOnly: cSandbox,
  };
}
if (nginxBin) variants.nginx = await plainChain((u) => nginx(nginxBin, u));
else console.log('\nnginx is not installed: skipping the sidecar variant (apt-get install -y nginx).');

// Check every variant answers the whole chain, and that Branchline's went through C's sandbox.
for (const [name, v] of Object.entries(variants)) {
  const res = await fetch(v.url, { headers: HEADERS });
  const body = await res.text();
  if (res.status !== 200 || body !== v.expected)
    throw new Error(`${name} chain answered ${res.status} ${body}`);
}
{
  const sb = variants.branchline.sandboxOnly;
  const before = await sb.cpu();
  await load(variants.branchline.url, { headers: HEADERS, requests: 200 });
  if ((await sb.cpu()) - before <= 0) throw new Error('the Branchline chain did not reach the sandbox of C');
}

const cpuOf = async (v) => {
  let t = 0;
  for (const p of v.procs) if (p.cpu) t += await p.cpu();
  return t;
};

const LABEL = {
  plain: 'plain chain A → B → C → D',
  branchline: 'Branchline (origin routing, C sandbox, keyed)',
  nginx: 'nginx beside each service',
};
const byConn = {};
for (const connections of [1, 32]) {
  for (const v of Object.values(variants))
    await load(v.url, { headers: HEADERS, connections, duration: smoke ? 0.1 : 1 });
  const acc = {};
  for (let r = 0; r < rounds; r++) {
    const order = Object.keys(variants);
    for (let i = 0; i < order.length; i++) {
      const name = order[(i + r) % order.length];
      const v = variants[name];
      const c0 = await cpuOf(v);
      const res = await load(v.url, { headers: HEADERS, connections, duration: seconds });
      if (res.errors) throw new Error(`${name}: ${res.errors} failed requests`);
      res.cpu = ((await cpuOf(v)) - c0) / res.requests;
      acc[name] ??= [];
      acc[name].push(res);
    }
  }
  const summary = {};
  for (const [name, runs] of Object.entries(acc))
    summary[name] = {
      rps: median(runs.map((x) => x.rps)),
      p50: median(runs.map((x) => x.p50)),
      p99: median(runs.map((x) => x.p99)),
      cpu: median(runs.map((x) => x.cpu)),
    };
  byConn[connections] = summary;
  printTable(
    `the chain, ${connections} connection(s), median of ${rounds} rounds of ${seconds} s`,
    Object.entries(summary).map(([name, s]) => ({
      variant: LABEL[name],
      'req/s': fmt(s.rps, 0),
      'p50 µs': fmt(s.p50, 0),
      'p99 µs': fmt(s.p99, 0),
      'CPU µs/req (all processes)': fmt(s.cpu, 1),
    })),
  );
}

const rows = [];
for (const connections of [1, 32]) {
  const s = byConn[connections];
  for (const p of ['p50', 'p99']) {
    const bl = s.branchline[p] - s.plain[p];
    const ng = s.nginx ? s.nginx[p] - s.plain[p] : Number.NaN;
    rows.push({
      measure: `added ${p} @${connections}`,
      'branchline µs': fmt(bl, 0),
      'nginx sidecars µs': fmt(ng, 0),
      'branchline / nginx': fmt(bl / ng, 2),
    });
  }
  const cpuBl = s.branchline.cpu - s.plain.cpu;
  const cpuNg = s.nginx ? s.nginx.cpu - s.plain.cpu : Number.NaN;
  rows.push({
    measure: `added CPU µs/req @${connections}`,
    'branchline µs': fmt(cpuBl, 1),
    'nginx sidecars µs': fmt(cpuNg, 1),
    'branchline / nginx': fmt(cpuBl / cpuNg, 2),
  });
}
printTable('added over the plain chain (variant − plain)', rows);
results.byConnections = byConn;
results.added = rows;
results.loadAverageAtEnd = loadavg();
console.log(
  `\n(load average ${results.loadAverageAtStart.map((x) => x.toFixed(1)).join(' ')} at start, ${results.loadAverageAtEnd.map((x) => x.toFixed(1)).join(' ')} at end; other jobs share this machine)`,
);
saveResults('chain', results);
process.exit(0);
