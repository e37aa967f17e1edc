// The registry's fan-out cost apart from SDK client work: 1,000 watchers that only read (one
// child process, raw sockets), PUTs at a fixed rate for 6 s (env below), registry CPU per change
// from its /metrics. Run: node bench/registry/fanout.mjs [flushMs=20] [changesPerSecond=100]
// (BENCH_BUILD=<dir> as in run.mjs runs another build; older builds ignore flushMs).
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { knob } from '../lib.mjs';
import { startRegistry } from './registry-process.mjs';

// BENCH_FANOUT_WATCHERS (default 1000) watchers, BENCH_FANOUT_SECONDS (6) of changes.
const WATCHERS = knob('BENCH_FANOUT_WATCHERS', 1000, 20);
const SECONDS = knob('BENCH_FANOUT_SECONDS', 6, 1);
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

if (process.argv[2] === 'drain') {
  const port = Number(process.argv[3]);
  for (let i = 0; i < WATCHERS; i++) {
    const s = connect(port, '127.0.0.1', () => s.write('GET /v1/watch HTTP/1.1\r\nHost: registry\r\n\r\n'));
    s.on('data', () => {});
    s.on('error', () => {});
  }
} else {
  const flush = Number(process.argv[2] ?? 20);
  const rate = Number(process.argv[3] ?? 100);
  const build = process.env.BENCH_BUILD ? join(root, process.env.BENCH_BUILD) : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'branchline-fanout-'));
  const reg = await startRegistry({
    root,
    build,
    store: join(dir, 'registry.db'),
    flushMs: flush,
    stderr: 'ignore',
  });
  const { url, metric } = reg;
  const drain = fork(fileURLToPath(import.meta.url), ['drain', new URL(url).port]);
  while ((await metric('branchline_registry_watchers')) < WATCHERS)
    await new Promise((r) => setTimeout(r, 100));
  const cpu0 = await metric('process_cpu_seconds_total');
  const load0 = loadavg()[0];
  const total = Math.round(rate * SECONDS);
  const start = performance.now();
  const answered = [];
  const inflight = [];
  for (let j = 0; j < total; j++) {
    const wait = start + (j * 1000) / rate - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const sent = performance.now();
    inflight.push(
      fetch(`${url}/v1/sandboxes/s-${j % 5}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ overrides: { svc: { http: `http://127.0.0.1:${10_000 + j}` } } }),
      }).then(async (r) => {
        await r.arrayBuffer();
        answered.push(performance.now() - sent);
      }),
    );
  }
  await Promise.all(inflight);
  const cpu = (await metric('process_cpu_seconds_total')) - cpu0;
  answered.sort((a, b) => a - b);
  console.log(
    `${build ? process.env.BENCH_BUILD : 'this build'}, flush ${flush} ms, ${rate} changes/s, ${WATCHERS} watchers: ` +
      `registry CPU ${((cpu * 1000) / total).toFixed(2)} ms per change (${((cpu * 1e6) / total / WATCHERS).toFixed(1)} µs per watcher); ` +
      `PUT answered in p50 ${answered[Math.floor(total / 2)].toFixed(1)} ms, p99 ${answered[Math.floor(total * 0.99)].toFixed(1)} ms; ` +
      `load average ${load0.toFixed(1)}→${loadavg()[0].toFixed(1)}`,
  );
  drain.kill();
  reg.child.kill();
  await once(reg.child, 'exit');
  rmSync(dir, { recursive: true, force: true });
}
