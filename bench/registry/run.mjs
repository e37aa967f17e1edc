// Registry propagation: time from a PUT's response to every one of 1,000 watching SDK clients
// (core RegistryRouteSource instances, in 4 processes) holding the new rule, at 100 changes/s;
// and the registry's memory with 10,000 sandboxes. Compared with the closest peer's approach
// (polling every 5 s). Run: npm run bench -- registry
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmt, percentile, printTable, saveResults } from '../lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const now = () => performance.timeOrigin + performance.now();

if (process.argv[2] === 'worker') {
  const { createRegistrySource } = await import(join(root, 'packages/core/dist/index.js'));
  const [url, count] = [process.argv[3], Number(process.argv[4])];
  const times = new Map(); // revision → [time per client]
  const clients = [];
  for (let i = 0; i < count; i++) {
    const src = createRegistrySource({ url });
    let seen = -1;
    src.subscribe((table) => {
      if (seen < 0) {
        seen = table.revision;
        return;
      }
      if (table.revision <= seen) return;
      const t = now();
      for (let r = seen + 1; r <= table.revision; r++) {
        const list = times.get(r);
        if (list) list.push(t);
        else times.set(r, [t]);
      }
      seen = table.revision;
    });
    clients.push(src);
  }
  await Promise.all(clients.map((c) => c.ready(60_000)));
  process.send({ type: 'ready' });
  process.on('message', async (m) => {
    if (m.type !== 'report') return;
    await Promise.all(clients.map((c) => c.close()));
    // Exit only once the (large) report has been handed to the parent.
    process.send({ type: 'report', times: Object.fromEntries(times) }, () => process.exit(0));
  });
} else {
  await main();
}

async function freePort() {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = s.address().port;
  s.close();
  return p;
}

async function startRegistry(dir, name) {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      join(root, 'packages/cli/dist/bin.js'),
      'registry',
      '--port',
      String(port),
      '--store',
      join(dir, `${name}.db`),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, BRANCHLINE_LOG_LEVEL: 'error' } },
  );
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  while (!out.includes('listening on')) await new Promise((r) => setTimeout(r, 50));
  return { child, url: `http://127.0.0.1:${port}` };
}

async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'branchline-bench-registry-'));
  const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 1000);
  const WORKERS = 4;
  const RATE = 100;
  const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
  const SANDBOXES = 5;

  // ---- propagation ------------------------------------------------------------------------
  const reg = await startRegistry(dir, 'propagation');
  const workers = Array.from({ length: WORKERS }, () =>
    fork(fileURLToPath(import.meta.url), ['worker', reg.url, String(CLIENTS / WORKERS)], {
      stdio: 'inherit',
    }),
  );
  await Promise.all(workers.map((w) => once(w, 'message')));
  console.log(`${CLIENTS} SDK clients watching ${reg.url} from ${WORKERS} processes`);
  const putAt = new Map();
  const inflight = [];
  const total = RATE * SECONDS;
  const start = now();
  for (let j = 0; j < total; j++) {
    const due = start + (j * 1000) / RATE;
    const wait = due - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    // Open loop: each change goes out on schedule, whether or not the previous one answered.
    inflight.push(
      fetch(`${reg.url}/v1/sandboxes/s-${j % SANDBOXES}`, {
        method: 'PUT',
        body: JSON.stringify({ overrides: { svc: { http: `http://127.0.0.1:${10_000 + j}` } } }),
      }).then(async (res) => {
        const t = now();
        const body = await res.json();
        putAt.set(body.revision, t);
      }),
    );
  }
  const sendSeconds = (now() - start) / 1000;
  await Promise.all(inflight);
  console.log(`${total} changes sent`);
  const achievedRate = total / sendSeconds;
  await new Promise((r) => setTimeout(r, 1500));
  const reports = await Promise.all(
    workers.map(async (w) => {
      w.send({ type: 'report' });
      const [m] = await once(w, 'message');
      return m.times;
    }),
  );
  const perClient = [];
  const perChange = [];
  let missing = 0;
  for (const [rev, t0] of putAt) {
    let worst = 0;
    let n = 0;
    for (const rep of reports) {
      for (const t of rep[rev] ?? []) {
        const d = t - t0;
        perClient.push(d);
        worst = Math.max(worst, d);
        n++;
      }
    }
    if (n < CLIENTS) missing += CLIENTS - n;
    perChange.push(worst);
  }
  perClient.sort((a, b) => a - b);
  perChange.sort((a, b) => a - b);
  reg.child.kill('SIGTERM');
  await once(reg.child, 'exit');

  // ---- memory with 10,000 sandboxes ---------------------------------------------------------
  const mem = await startRegistry(dir, 'memory');
  await new Promise((r) => setTimeout(r, 500));
  const rssEmpty = await metric(mem.url, 'process_resident_memory_bytes');
  const heapEmpty = await metric(mem.url, 'nodejs_heap_used_bytes');
  const N = 10_000;
  const t0 = now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < N) {
        const i = next++;
        const r = await fetch(`${mem.url}/v1/sandboxes/sb-${i}`, {
          method: 'PUT',
          body: JSON.stringify({
            overrides: {
              payments: { http: `http://10.0.${i >> 8}.${i & 255}:8080` },
              orders: { grpc: `10.0.${i >> 8}.${i & 255}:50051` },
            },
            labels: { pr: String(i), repo: 'acme/shop', owner: `dev-${i % 50}` },
            ttl: '2h',
          }),
        });
        await r.arrayBuffer();
      }
    }),
  );
  const fillSeconds = (now() - t0) / 1000;
  console.log(`${N} sandboxes created in ${fmt(fillSeconds)} s`);
  const rssFull = await metric(mem.url, 'process_resident_memory_bytes');
  const heapFull = await metric(mem.url, 'nodejs_heap_used_bytes');
  const snapT = now();
  const snap = await fetch(`${mem.url}/v1/watch`);
  const reader = snap.body.getReader();
  let got = '';
  const dec = new TextDecoder();
  while (!got.slice(-4096).includes('event: synced'))
    got += dec.decode((await reader.read()).value, { stream: true });
  const snapshotMs = now() - snapT;
  const snapshotBytes = got.length;
  await reader.cancel();
  mem.child.kill('SIGTERM');
  await once(mem.child, 'exit');
  rmSync(dir, { recursive: true, force: true });

  const POLL_P99 = 5000 * 0.99;
  const p50c = percentile(perChange, 50);
  const p99c = percentile(perChange, 99);
  printTable('propagation: PUT response → new rule resolved (ms)', [
    {
      measure: 'every one of 1,000 clients (per change)',
      p50: fmt(p50c),
      p99: fmt(p99c),
      max: fmt(perChange.at(-1)),
    },
    {
      measure: 'each client (all pairs)',
      p50: fmt(percentile(perClient, 50)),
      p99: fmt(percentile(perClient, 99)),
      max: fmt(perClient.at(-1)),
    },
    { measure: 'peer: polling every 5 s (uniform)', p50: '2500.0', p99: fmt(POLL_P99), max: '5000.0' },
  ]);
  console.log(
    `\nchanges: ${total} at ${fmt(achievedRate)}/s (target ${RATE}/s); missing client observations: ${missing}`,
  );
  console.log(
    `p99 (all clients) ${fmt(p99c)} ms vs target 100 ms: ${p99c < 100 ? 'MET' : 'MISSED'} (ratio ${fmt(p99c / 100, 2)})`,
  );
  console.log(`p99 vs 5 s polling: ${fmt(POLL_P99 / p99c, 0)}× faster`);
  printTable('registry memory', [
    { sandboxes: 0, rssMiB: fmt(rssEmpty / 2 ** 20), heapMiB: fmt(heapEmpty / 2 ** 20) },
    { sandboxes: N, rssMiB: fmt(rssFull / 2 ** 20), heapMiB: fmt(heapFull / 2 ** 20) },
  ]);
  console.log(
    `\n10,000 sandboxes: +${fmt((rssFull - rssEmpty) / 2 ** 20)} MiB RSS (${fmt(rssFull / rssEmpty, 2)}× empty), ` +
      `${fmt((heapFull - heapEmpty) / N / 1024, 2)} KiB heap per sandbox; created at ${fmt(N / fillSeconds, 0)} PUT/s; ` +
      `full snapshot ${fmt(snapshotBytes / 2 ** 20)} MiB in ${fmt(snapshotMs)} ms`,
  );
  console.log('(figures taken on a shared 2-core machine under load from other work)');
  saveResults('registry', {
    clients: CLIENTS,
    workers: WORKERS,
    changes: total,
    targetRate: RATE,
    achievedRate,
    missingObservations: missing,
    allClientsMs: { p50: p50c, p99: p99c, max: perChange.at(-1) },
    perClientMs: { p50: percentile(perClient, 50), p99: percentile(perClient, 99), max: perClient.at(-1) },
    pollingPeerMs: { p50: 2500, p99: POLL_P99 },
    targetP99Ms: 100,
    memory: {
      sandboxes: N,
      rssEmpty,
      rssFull,
      heapEmpty,
      heapFull,
      fillPutsPerSecond: N / fillSeconds,
      snapshotBytes,
      snapshotMs,
    },
  });
}
