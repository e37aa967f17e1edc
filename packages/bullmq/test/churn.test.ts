import { createRuntime, getRoutingKey, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { seededRandom, until } from '@branchline/test-utils';
import { endpoint, LaggingView, RegistrySim } from '@branchline/test-utils/registry-sim';
import { type Job, Queue } from 'bullmq';
import { afterAll, expect, it } from 'vitest';
import { createSelectiveWorker, instrumentQueue, JOB_OPTION, type SelectiveWorker } from '../src/index.js';
import { keysOf, killClients, REDIS, removePrefix, uniquePrefix } from './redis.js';

/**
 * The guarantee under churn: ≥20,000 jobs (addBulk), ≥50 sandbox create/delete events, two
 * baseline workers whose route views lag the registry by different amounts, sandbox workers
 * that start late, and a forced drop of every connection midway. Every job must be processed by
 * exactly one of {baseline, owning sandbox}; a job processed again is allowed only as a counted
 * retry (BullMQ's stalled-job recovery, visible in the job's attempts).
 */

const SERVICE = 'orders';
const TOTAL = 20_000;
const BATCH = 20;
const PUBLISH_MS = 25_000;
const MIN_EVENTS = 50;

// Every random choice comes from one seeded generator: BRANCHLINE_TEST_SEED=<seed> repeats a run.
const random = seededRandom();
const seed = random.seed;
const prefix = uniquePrefix('churn');
// Every connection of this test carries the prefix as its client name, so the drop hits them all.
const CONN = { ...REDIS, connectionName: prefix };
const runtime = createRuntime({ service: SERVICE, routes: { sandboxes: [] } });

afterAll(async () => {
  await removePrefix(prefix);
});

interface Processing {
  by: string;
  key: string | undefined;
  contextKey: string | undefined;
  time: number;
  attemptsStarted: number;
  stalled: number;
  jobId: string;
}

it(`churn: every job is processed once by baseline or its owning sandbox (seed ${seed}; rerun with BRANCHLINE_TEST_SEED=${seed})`, {
  timeout: 170_000,
}, async () => {
  const started = Date.now();
  const queueName = 'orders';
  const registry = new RegistrySim();
  // Each worker's view follows the registry's changes and its 100 ms heartbeat, each delivery
  // after a random lag of up to `maxLagMs`.
  const views: LaggingView<StaticRouteSource>[] = [];
  const view = (maxLagMs: number) => {
    const v = new LaggingView(new StaticRouteSource(), registry, {
      events: true,
      everyMs: 100,
      maxLagMs,
      random,
    });
    views.push(v);
    return v.source;
  };
  const processed = new Map<number, Processing[]>();
  const record = (by: string) => async (job: Job<{ n: number; key?: string }>) => {
    const meta = (job.opts as Record<string, { time?: number }>)[JOB_OPTION];
    let list = processed.get(job.data.n);
    if (!list) {
      list = [];
      processed.set(job.data.n, list);
    }
    list.push({
      by,
      key: job.data.key,
      contextKey: getRoutingKey(),
      time: meta?.time ?? job.timestamp,
      attemptsStarted: job.attemptsStarted,
      stalled: job.stalledCounter,
      jobId: String(job.id),
    });
    if (random() < 0.02) await new Promise((r) => setTimeout(r, 20));
  };

  const workers: SelectiveWorker[] = [];
  const baselines = [60, 400].map((lag, i) => {
    const w = createSelectiveWorker({
      queue: queueName,
      connection: CONN,
      prefix,
      service: SERVICE,
      sandbox: null,
      runtime,
      routes: view(lag),
      backoff: { initialMs: 50, maxMs: 500 },
      workerOptions: {
        concurrency: 50,
        removeOnComplete: { count: 0 } as never,
        lockDuration: 5000,
        stalledInterval: 2000,
      },
      processor: record(`baseline-${i}`),
    });
    workers.push(w);
    return w;
  });
  await Promise.all(baselines.map((b) => b.ready()));
  const sandboxView = view(250);

  const live: string[] = [];
  const recentlyDeleted: string[] = [];
  const sandboxWorkers: SelectiveWorker[] = [];
  let events = 0;
  let seq = 0;
  const create = () => {
    const name = `c${++seq}`;
    registry.create(name, { [SERVICE]: endpoint });
    events++;
    live.push(name);
    const start = () => {
      const w = createSelectiveWorker({
        queue: queueName,
        connection: CONN,
        prefix,
        service: SERVICE,
        sandbox: name,
        runtime,
        routes: sandboxView,
        workerOptions: { concurrency: 20, lockDuration: 5000, stalledInterval: 2000 },
        processor: record(name),
      });
      sandboxWorkers.push(w);
    };
    // Some sandbox workloads start late: their jobs wait in the sandbox queue.
    if (random() < 0.3) setTimeout(start, Math.floor(random() * 800));
    else start();
  };
  const remove = () => {
    const name = live.shift()!;
    registry.delete(name);
    events++;
    recentlyDeleted.push(name);
    if (recentlyDeleted.length > 3) recentlyDeleted.shift();
  };

  const queue = instrumentQueue(new Queue(queueName, { connection: CONN, prefix }));
  const pickKey = (): string | undefined => {
    const r = random();
    if (r < 0.45 && live.length) return live[Math.floor(random() * live.length)];
    if (r < 0.6 && recentlyDeleted.length)
      return recentlyDeleted[Math.floor(random() * recentlyDeleted.length)];
    if (r < 0.8) return 'nobody';
    return undefined;
  };

  let dropped = 0;
  let addRetries = 0;
  const produce = async () => {
    const batches = TOTAL / BATCH;
    const t0 = Date.now();
    for (let b = 0; b < batches; b++) {
      const key = pickKey();
      const jobs = Array.from({ length: BATCH }, (_, i) => {
        const n = b * BATCH + i;
        return { name: 'order', data: { n, key }, opts: { jobId: `j-${n}` } };
      });
      for (;;) {
        try {
          await withRoutingKey(key, () => queue.addBulk(jobs));
          break;
        } catch {
          addRetries++; // the same job ids: a repeated add adds nothing
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const due = t0 + ((b + 1) * PUBLISH_MS) / batches;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  };
  const churn = async () => {
    const t0 = Date.now();
    let droppedOnce = false;
    while (Date.now() - t0 < PUBLISH_MS || events < MIN_EVENTS) {
      if (live.length < 2 || (live.length < 5 && random() < 0.5)) create();
      else remove();
      if (!droppedOnce && Date.now() - t0 > PUBLISH_MS / 2) {
        droppedOnce = true;
        dropped = await killClients(prefix);
      }
      await new Promise((r) => setTimeout(r, 200 + Math.floor(random() * 300)));
    }
    while (live.length) remove();
  };
  await Promise.all([produce(), churn()]);
  const publishedAt = Date.now();

  await until(() => processed.size >= TOTAL, `all ${TOTAL} jobs processed (seed ${seed})`, {
    timeoutMs: 90_000,
  }).catch(() => undefined);
  await Promise.all(views.map((v) => v.settled()));
  await Promise.all(baselines.map((b) => b.cleanupsSettled()));
  // Every sandbox was deleted: each sandbox worker (late starters included) ends by itself, and
  // its close (which removes its queue if the baselines removed it while it still ran) finishes.
  await until(
    () => sandboxWorkers.length === seq && sandboxWorkers.every((w) => w.endReason !== undefined),
    () =>
      `every sandbox worker ending (seed ${seed}): ${sandboxWorkers.filter((w) => w.endReason === undefined).map((w) => w.sandbox)} still running`,
    { timeoutMs: 20_000 },
  ).catch(() => undefined);
  const stillRunning = sandboxWorkers.filter((w) => w.endReason !== 'sandbox-deleted').map((w) => w.sandbox);
  await Promise.all(sandboxWorkers.filter((w) => w.endReason !== undefined).map((w) => w.close()));

  // Tally.
  let lost = 0;
  let repeats = 0;
  let countedRetries = 0;
  let wrongOwner = 0;
  let wrongContext = 0;
  let sandboxOwnedByBaseline = 0;
  const examples: string[] = [];
  for (let n = 0; n < TOTAL; n++) {
    const list = processed.get(n);
    if (!list) {
      lost++;
      if (examples.length < 5) examples.push(`job ${n} never processed`);
      continue;
    }
    // A repeat is a counted retry when BullMQ recorded another attempt or a stall of that job. The
    // attempts are compared in attempt order: an attempt whose lock expired while it was held can
    // reach the processor after the retry BullMQ started for it.
    const ordered = [...list].sort((a, b) => a.attemptsStarted - b.attemptsStarted || a.stalled - b.stalled);
    for (let i = 1; i < ordered.length; i++) {
      const prev = ordered.slice(0, i);
      const cur = ordered[i]!;
      const same = prev.filter((p) => p.jobId === cur.jobId);
      if (
        same.length &&
        same.every((p) => cur.attemptsStarted > p.attemptsStarted || cur.stalled > p.stalled)
      )
        countedRetries++;
      else {
        repeats++;
        if (examples.length < 5) examples.push(`job ${n} processed again: ${JSON.stringify(list)}`);
      }
    }
    for (const p of list) {
      const owner = registry.ownerAt(SERVICE, p.key, p.time);
      if (p.by.startsWith('baseline')) {
        if (owner !== undefined) sandboxOwnedByBaseline++;
      } else if (owner !== p.by) {
        wrongOwner++;
        if (examples.length < 5) examples.push(`job ${n} processed by ${p.by}, owner at its time ${owner}`);
      }
      if (p.contextKey !== p.key) wrongContext++;
    }
  }
  const moved = baselines.reduce((s, b) => s + b.stats.moved, 0);
  const returned = [...baselines, ...sandboxWorkers].reduce((s, w) => s + w.stats.returned, 0);
  const held = baselines.reduce((s, b) => s + b.stats.held, 0);
  const ownerGone = baselines.reduce((s, b) => s + b.stats.ownerGone, 0);
  const bySandboxes = [...processed.values()].flat().filter((p) => !p.by.startsWith('baseline')).length;
  const leftover = await keysOf(`${prefix}:${queueName}.sandbox.*`);
  const summary = {
    seed,
    total: TOTAL,
    processedDistinct: processed.size,
    lost,
    repeats,
    countedRetries,
    wrongOwner,
    wrongContext,
    sandboxOwnedByBaseline,
    bySandboxes,
    moved,
    returned,
    held,
    ownerGone,
    events,
    clientsDropped: dropped,
    addRetries,
    sandboxQueueKeysLeft: leftover,
    sandboxWorkersNotEnded: stillRunning,
    drainMs: Date.now() - publishedAt,
    runtimeMs: Date.now() - started,
    examples,
  };
  console.log('bullmq churn', JSON.stringify(summary));

  for (const w of [...sandboxWorkers, ...workers]) await w.close();
  for (const v of views) v.stop();
  await queue.close();

  expect(summary, `seed ${seed}`).toMatchObject({ lost: 0, repeats: 0, wrongOwner: 0, wrongContext: 0 });
  expect(events).toBeGreaterThanOrEqual(MIN_EVENTS);
  expect(dropped).toBeGreaterThan(0);
  expect(moved).toBeGreaterThan(1000);
  expect(bySandboxes).toBeGreaterThan(1000);
  expect(stillRunning, `seed ${seed}: sandbox workers that did not end on their deletion`).toEqual([]);
  expect(leftover, `seed ${seed}: sandbox queues left behind`).toEqual([]);
});
