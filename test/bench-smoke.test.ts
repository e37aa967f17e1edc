// Every benchmark in bench/ runs once at its smallest sizes (BENCH_SMOKE=1, see bench/lib.mjs),
// so a change that breaks one fails `npm test` instead of waiting for the next measurement.
// Each must exit 0 and print its result table or ratio line; no figure is checked (a smoke run's
// figures mean nothing). The brokers and databases come from this project's services
// (test/vitest.config.ts). Parts that need nginx are checked for their "skipped" line when it is
// not installed; the callgrind parts take minutes even at the least size, so they run only with
// BENCH_SMOKE_CALLGRIND=1 (and valgrind installed).

import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, type ExpectStatic, it } from 'vitest';
import { startNode } from './helpers/processes.js';

const bench = (path: string) => fileURLToPath(new URL(`../bench/${path}`, import.meta.url));
const installed = (bin: string, arg: string) => {
  for (const b of [bin, `/usr/sbin/${bin}`])
    if (spawnSync(b, [arg], { stdio: 'ignore' }).status === 0) return true;
  return false;
};
const nginx = installed('nginx', '-v');
const callgrind = process.env.BENCH_SMOKE_CALLGRIND === '1' && installed('valgrind', '--version');
/** The nginx row of a table when nginx is installed, else the benchmark's line saying it skipped it. */
const nginxPart = (row: RegExp) => (nginx ? row : /nginx (is not installed|not found)/);

interface Smoke {
  /** What to run: a benchmark's name (bench/run.mjs runs it), or a script under bench/ and its args. */
  run: string | [script: string, ...args: string[]];
  env?: Record<string, string>;
  /** Lines the output must contain: its tables' rows and its ratio line. */
  expect: RegExp[];
  /** Only a guard against a hung run: a benchmark is not a timed test. */
  timeoutMs?: number;
  /** It mostly waits on a broker or database: it runs side by side with the others that do. */
  waits?: boolean;
}

const smokes: Record<string, Smoke> = {
  core: {
    run: 'core',
    expect: [/^baggage: 10 members\s+[\d.]+\s+[\d.]+\s+[\d.]+/m, /^table < 20 MB heap\s+/m],
  },
  amqp: {
    waits: true,
    run: 'amqp',
    expect: [
      /^selective-half-split\s+\d+\s+\d+\s+[\d.]+%/m,
      /selective-all \/ plain = \d+\.\d{3} \(target >= 0\.90\)/,
    ],
  },
  bullmq: {
    waits: true,
    run: 'bullmq',
    expect: [/^selective-tenth\s+\d+/m, /ratio selective-all \/ plain: \d+\.\d{3}/],
  },
  sqs: { waits: true, run: 'sqs', expect: [/^selective-half\s+\d+/m, /selective-all \/ raw = \d+\.\d{3}/] },
  kafka: {
    waits: true,
    run: 'kafka',
    expect: [
      /^eachBatch\s+half skipped\s+\d+\s+\d+\s+\d+\.\d{3}\s+150\/300/m,
      /^instrumented, key in context\s+\d+/m,
      /worst consumer ratio \d+\.\d{3}/,
    ],
  },
  nats: {
    waits: true,
    run: 'nats',
    expect: [
      /^half skipped\s+\d+\s+\d+\s+\d+\.\d{3}\s+150\/300/m,
      /selective\/raw, all for baseline: \d+\.\d{3}/,
    ],
  },
  pg: {
    waits: true,
    run: 'pg',
    expect: [
      /pg_dump\|psql \/ provision \(auto = \w+\): [\d.]+x/,
      /^routed, key → sandbox DB\s+[\d.]+\s+[\d.]+/m,
    ],
  },
  mysql: {
    waits: true,
    run: 'mysql',
    expect: [/routed ÷ plain mysql2 pool \(paired, 1 in flight\): \d+\.\d{3}/],
  },
  registry: {
    waits: true,
    run: 'registry',
    // missing 0: every client saw every change.
    expect: [/^20\s+20 \(sent [\d.]+\)(\s+[\d.]+){4}\s+0\s/m, /^200 sandboxes: \+[\d.-]+ MiB RSS/m],
  },
  'registry/fanout.mjs': {
    waits: true,
    run: ['registry/fanout.mjs'],
    expect: [/registry CPU [\d.]+ ms per change/],
  },
  http: {
    run: 'http',
    env: { BENCH_HTTP_PARTS: `frameworks,inprocess,hop${callgrind ? ',instructions' : ''}` },
    expect: [
      /^express 5\s+V8 default\s+unrouted key\s+\d+\s+\d+\s+\d+\.\d{3}/m,
      /^fastify 5\s+pinned 16 MB\s+unrouted key\s+\d+\s+\d+\s+\d+\.\d{3}/m,
      /^unrouted key\s+\d+/m,
      /^client → fastify \+ branchline → sandbox\s+32\s+\d+/m,
      nginxPart(/^client → nginx → sandbox\s+32\s+\d+/m),
      ...(callgrind ? [/^node:http \+ branchline\s+\d+\s+/m] : []),
    ],
    timeoutMs: callgrind ? 240_000 : 120_000,
  },
  grpc: {
    run: 'grpc',
    env: {
      BENCH_GRPC_FLOOR: '1',
      BENCH_GRPC_PARTS: `throughput,hop${callgrind ? ',instructions' : ''}`,
    },
    expect: [
      /^branchline, unrouted key\s+\d+\s+\d+\.\d{3}/m,
      /^branchline forward\s+[\d.]+\s+[\d.]+/m,
      /^raw-frame relay \(optimistic bound\)\s+[\d.]+/m,
      nginxPart(/^nginx grpc_pass\s+[\d.]+/m),
      /throughput vs plain: no key [\d.]+%/,
      ...(callgrind ? [/^branchline forward\s+\d+\s+[\d.]+ k/m] : []),
    ],
    timeoutMs: callgrind ? 300_000 : 120_000,
  },
  'grpc/own-cost.mjs': { run: ['grpc/own-cost.mjs'], expect: [/server, unrouted key\s+\d+ ns/] },
  'grpc/profile-hop.mjs': {
    run: ['grpc/profile-hop.mjs', 'baseline', '50'],
    expect: [/^branchline\s+[\d.]+\s+[\d.]+ %/m],
  },
  chain: {
    run: 'chain',
    expect: [
      /^Branchline \(origin routing, C sandbox, keyed\)\s+\d+\s+\d+/m,
      nginxPart(/^nginx beside each service\s+\d+/m),
      /^added p99 @32\s+-?\d+/m,
    ],
  },
};

async function runSmoke(smoke: Smoke, expect: ExpectStatic): Promise<void> {
  const [script, ...args] = typeof smoke.run === 'string' ? ['run.mjs', smoke.run] : smoke.run;
  const p = startNode(bench(script), args, { BENCH_SMOKE: '1', NO_COLOR: '1', ...smoke.env });
  // 'close', not 'exit': the output is complete only once its pipes closed.
  const [code] = await once(p.child, 'close');
  const out = p.output();
  expect(code, out).toBe(0);
  for (const line of smoke.expect) expect(out).toMatch(line);
  // The run knew it was a smoke run: it left bench/results/ alone.
  if (typeof smoke.run === 'string') expect(out).toContain(`${smoke.run} results not saved`);
}

// The broker and database benchmarks mostly wait on their servers: they run side by side. The
// ones that load the CPU with servers and load generators of their own run one at a time after.
const entries = Object.entries(smokes);
describe.concurrent('benchmarks on brokers and databases (BENCH_SMOKE=1)', () => {
  for (const [name, smoke] of entries.filter(([, s]) => s.waits))
    it(`${name} runs to the end`, { timeout: smoke.timeoutMs ?? 90_000 }, ({ expect }) =>
      runSmoke(smoke, expect),
    );
});
describe('benchmarks with their own servers (BENCH_SMOKE=1)', () => {
  for (const [name, smoke] of entries.filter(([, s]) => !s.waits))
    it(`${name} runs to the end`, { timeout: smoke.timeoutMs ?? 90_000 }, ({ expect }) =>
      runSmoke(smoke, expect),
    );
});
