// Throughput of a plain BullMQ Worker vs Branchline's selective worker, same Redis, same run:
// each scenario drains a backlog of N jobs already in its queue (concurrency 50).
//   plain            bullmq Worker with an empty processor, on the same keyed jobs as
//                    selective-all (added through instrumentQueue, so both read the same options)
//   selective-all    createSelectiveWorker (baseline) with everything on: every job carries a
//                    routing key that no sandbox owns, so each one is parsed, decided against the
//                    route table at its time, and processed in the key's context
//   selective-tenth  the same baseline worker plus a sandbox worker in this process; one job in ten
//                    belongs to the sandbox: the baseline moves it (adds it to the sandbox queue,
//                    then completes the original) and the sandbox worker processes it. Rate = N /
//                    time until all N were processed by one of the two
// Needs Redis on 127.0.0.1:6379. Everything lives under a key prefix of its own, removed at the end.
// Env: BENCH_BULLMQ_JOBS (default 5000) jobs per sample; BENCH_BULLMQ_ROUNDS (5) rounds.
import { createSelectiveWorker, instrumentQueue } from '@branchline/bullmq';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import {
  drainRounds,
  fmt,
  knob,
  printTable,
  saveResults,
  throughputCounter,
  throughputSummary,
} from '../lib.mjs';

const N = knob('BENCH_BULLMQ_JOBS', 5_000, 500);
const ROUNDS = knob('BENCH_BULLMQ_ROUNDS', 5, 1);
// Jobs are added in batches of BATCH, each batch under one key: ten batches at least, so one
// batch in ten can be the sandbox's.
const BATCH = Math.max(1, Math.min(500, Math.floor(N / 10)));
const CONCURRENCY = 50;
const SERVICE = 'orders';
const connection = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const prefix = `bl-bench-bullmq-${Date.now().toString(36)}`;

const routes = new StaticRouteSource({
  // No history: the table is complete until now, sandbox 'sb' owns key 'sb' since 0.
  completeUntil: Number.MAX_SAFE_INTEGER,
  sandboxes: [
    { name: 'sb', key: 'sb', createdAt: 0, overrides: { [SERVICE]: { http: 'http://127.0.0.1:1' } } },
  ],
});
const runtime = createRuntime({ service: SERVICE, routes: routes });
const data = { order: 42, items: ['a', 'b', 'c'], note: 'x'.repeat(200) };

/** Fills `queue` with N jobs; `keyOf(i)` is the routing key of job i (or undefined). */
async function fill(name, keyOf) {
  const q = instrumentQueue(new Queue(name, { connection, prefix }));
  for (let i = 0; i < N; i += BATCH) {
    const key = keyOf(i);
    const jobs = Array.from({ length: Math.min(BATCH, N - i) }, (_, j) => ({
      name: 'order',
      data: { ...data, i: i + j },
    }));
    await withRoutingKey(key, () => q.addBulk(jobs));
  }
  await q.close();
}

const scenarios = {
  plain: {
    fill: (q) => fill(q, () => 'nobody'),
    async drain(queue) {
      const count = throughputCounter(N);
      const w = new Worker(
        queue,
        async () => {
          count.tick();
        },
        { connection, prefix, concurrency: CONCURRENCY },
      );
      const result = await count.finished;
      await w.close();
      return result;
    },
  },
  'selective-all': selective(0),
  'selective-tenth': selective(10),
};

function selective(every) {
  return {
    // Keys are per batch: with every=10, batches 0, 10, 20… (1 in 10 jobs) are the sandbox's.
    fill: (q) => fill(q, (i) => (every > 0 ? ((i / BATCH) % every === 0 ? 'sb' : undefined) : 'nobody')),
    async drain(queue) {
      const count = throughputCounter(N);
      const common = {
        queue,
        connection,
        prefix,
        service: SERVICE,
        routes,
        runtime,
        workerOptions: { concurrency: CONCURRENCY },
        processor: async () => {
          count.tick();
        },
      };
      const sandbox = every > 0 ? createSelectiveWorker({ ...common, sandbox: 'sb' }) : undefined;
      if (sandbox) await sandbox.ready();
      const baseline = createSelectiveWorker({ ...common, sandbox: null });
      const result = await count.finished;
      await baseline.close();
      await sandbox?.close();
      return result;
    },
  };
}

let result;
try {
  result = await drainRounds(scenarios, {
    rounds: ROUNDS,
    reference: 'plain',
    queueName: (n, seq) => `${n}-${seq}`,
  });
} finally {
  const r = new Redis(connection);
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
}

const { figures, rows } = throughputSummary(result, 'plain', 'job');
printTable(
  `bullmq worker throughput, ${N} jobs per sample, concurrency ${CONCURRENCY}, ${ROUNDS} rounds`,
  rows,
);
console.log(
  `\nratio selective-all / plain: ${fmt(figures['selective-all'].ratio, 3)} (target >= 0.95). Wall-clock rates depend on machine load (shared CPUs).`,
);
saveResults('bullmq', {
  jobs: N,
  concurrency: CONCURRENCY,
  rounds: ROUNDS,
  results: Object.fromEntries(
    Object.entries(figures).map(([k, f]) => [
      k,
      {
        rate: Math.round(f.rate),
        ratio: Number(f.ratio.toFixed(3)),
        cpuUsPerJob: Number(f.cpuUsPerItem.toFixed(1)),
      },
    ]),
  ),
});
process.exit(0);
