import { createRuntime, getRoutingKey, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { endpoint, RegistrySim } from '@branchline/test-utils/registry-sim';
import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import {
  createSelectiveWorker,
  instrumentQueue,
  JOB_OPTION,
  returnSandboxJobs,
  sandboxQueueName,
} from '../src/index.js';
import { keysOf, queueFixtures, REDIS } from './redis.js';

const SERVICE = 'orders';
const runtime = createRuntime({ service: SERVICE, routes: { sandboxes: [] } });
const { closers, setup, view } = queueFixtures();
const overrides = { [SERVICE]: endpoint };

it('merges the key into a baggage the application put in the job options, keeping its members', async () => {
  const { queue } = setup('merge');
  const j = await withRoutingKey('alice', () =>
    queue.add('a', { n: 1 }, { [JOB_OPTION]: { baggage: 'tenant=blue' } } as never),
  );
  const meta = (await Job.fromId(queue, j.id!))!.opts as Record<string, { baggage: string; time: number }>;
  expect(meta[JOB_OPTION]!.baggage).toMatch(/tenant=blue/);
  expect(meta[JOB_OPTION]!.baggage).toMatch(/=alice/);
  expect(typeof meta[JOB_OPTION]!.time).toBe('number');
  // stampUnkeyed with the local clock: a job without a key gets a time and no baggage.
  const local = instrumentQueue(new Queue('y', { connection: REDIS, prefix: queue.opts.prefix }), {
    clock: 'local',
    stampUnkeyed: true,
  });
  closers.push(() => local.close());
  const t0 = Date.now();
  const plain = await local.add('p', { n: 2 });
  const pm = (await Job.fromId(local, plain.id!))!.opts as Record<string, { baggage?: string; time: number }>;
  expect(pm[JOB_OPTION]!.baggage).toBeUndefined();
  expect(pm[JOB_OPTION]!.time).toBeGreaterThanOrEqual(t0);
  expect(pm[JOB_OPTION]!.time).toBeLessThanOrEqual(Date.now());
  const other = new Queue('x', { connection: REDIS, prefix: `${queue.opts.prefix}-x` });
  closers.push(() => other.close());
  expect(() => instrumentQueue(other, { clock: 'ntp' as never })).toThrow(/clock must be 'redis' or 'local'/);
});

it('a worker closed while holding a job puts it back to delayed; the next worker processes it once', async () => {
  const { prefix, queue } = setup('closehold');
  const registry = new RegistrySim();
  const seen: (string | undefined)[] = [];
  const make = (routes: StaticRouteSource) => {
    const w = createSelectiveWorker<{ n: number }, void>({
      queue: queue.name,
      connection: REDIS,
      prefix,
      service: SERVICE,
      sandbox: null,
      runtime,
      routes,
      backoff: { initialMs: 50, maxMs: 100 },
      processor: async () => {
        seen.push(getRoutingKey());
      },
    });
    closers.push(() => w.close());
    return w;
  };
  const first = make(view(registry, { synced: false, events: false, everyMs: 0 }).source); // never synced: holds
  await first.ready();
  await withRoutingKey('k1', () => queue.add('j', { n: 1 }));
  await until(() => first.stats.held === 1, 'the hold', { timeoutMs: 10_000 });
  await first.close();
  expect(first.stats.delayed).toBe(1);
  expect(seen).toEqual([]);
  expect(await queue.getDelayedCount()).toBe(1);
  const second = make(view(registry).source);
  await second.ready();
  await until(() => seen.length === 1, 'processed by the second worker', { timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 300));
  expect(seen).toEqual(['k1']);
  expect(await queue.getFailedCount()).toBe(0);
});

it('a lagging replica cannot move into a sandbox queue that is being removed: the baseline processes the job', async () => {
  const { prefix, queue } = setup('refused');
  const registry = new RegistrySim();
  const since = registry.create('sb', overrides);
  const seen: string[] = [];
  // Another replica already removed the queue (the sandbox was deleted); this replica's view lags.
  const redis = new Redis(REDIS);
  closers.push(() => redis.disconnect());
  await returnSandboxJobs({ redis, connection: REDIS, prefix, queue: queue.name, sandbox: 'sb', since });
  const w = createSelectiveWorker<{ n: number }, void>({
    queue: queue.name,
    connection: REDIS,
    prefix,
    service: SERVICE,
    sandbox: null,
    runtime,
    routes: view(registry).source,
    processor: async (job) => {
      seen.push(`${job.data.n}:${getRoutingKey()}`);
    },
  });
  closers.push(() => w.close());
  await w.ready();
  await withRoutingKey('sb', () => queue.add('j', { n: 1 }));
  await until(() => seen.length === 1, 'processed', { timeoutMs: 10_000 });
  expect(seen).toEqual(['1:sb']);
  expect(w.stats.moved).toBe(0);
  expect(w.stats.ownerGone).toBe(1);
  expect(await keysOf(`${prefix}:${sandboxQueueName(queue.name, 'sb')}:*`)).toEqual([]);
});

it('a sandbox worker that dies holding a job: after the deletion the job comes back from its expired lock and the baseline processes it', {
  timeout: 60_000,
}, async () => {
  const { prefix, queue } = setup('dead');
  const registry = new RegistrySim();
  registry.create('sb', overrides);
  const seen: string[] = [];
  let release!: () => void;
  const hung = new Promise<void>((r) => {
    release = r;
  });
  closers.push(() => release());
  const base = createSelectiveWorker<{ n: number }, void>({
    queue: queue.name,
    connection: REDIS,
    prefix,
    service: SERVICE,
    sandbox: null,
    runtime,
    routes: view(registry).source,
    processor: async (job) => {
      seen.push(`baseline:${job.data.n}`);
    },
  });
  closers.push(() => base.close());
  const sb = createSelectiveWorker<{ n: number }, void>({
    queue: queue.name,
    connection: REDIS,
    prefix,
    service: SERVICE,
    sandbox: 'sb',
    runtime,
    // A dead process sees no more registry changes (and so does not react to the deletion).
    routes: new StaticRouteSource(registry.snapshot()),
    // BullMQ's stalled check runs at most once per stalledInterval per queue (30 s by default).
    workerOptions: { lockDuration: 1000, stalledInterval: 1000 },
    processor: async (job) => {
      seen.push(`sb:${job.data.n}`);
      await hung; // the process "dies" while running this job
    },
  });
  await Promise.all([base.ready(), sb.ready()]);
  await withRoutingKey('sb', () => queue.add('j', { n: 1 }));
  await until(() => seen.length === 1, 'the sandbox worker took the job', { timeoutMs: 10_000 });
  // Dies: no graceful close, its lock is no longer renewed.
  await sb.worker.close(true);
  registry.delete('sb');
  await until(() => seen.length === 2, 'the job processed by the baseline', { timeoutMs: 20_000 });
  await base.cleanupsSettled();
  expect(seen).toEqual(['sb:1', 'baseline:1']);
  expect(base.stats.returned).toBe(1);
  expect(await keysOf(`${prefix}:${sandboxQueueName(queue.name, 'sb')}:*`)).toEqual([]);
  await sb.close();
});

it('an override removed and added again: jobs of the new interval go to the sandbox again', async () => {
  const { prefix, queue } = setup('readd');
  const registry = new RegistrySim();
  registry.create('sb', overrides);
  const seen: string[] = [];
  const views: ReturnType<typeof view>[] = [];
  const make = (sandbox: string | null) => {
    const v = view(registry);
    views.push(v);
    const w = createSelectiveWorker<{ n: number }, void>({
      queue: queue.name,
      connection: REDIS,
      prefix,
      service: SERVICE,
      sandbox,
      runtime,
      routes: v.source,
      processor: async (job) => {
        seen.push(`${sandbox ?? 'baseline'}:${job.data.n}`);
      },
    });
    closers.push(() => w.close());
    return w;
  };
  const base = make(null);
  const first = make('sb');
  await Promise.all([base.ready(), first.ready()]);
  await withRoutingKey('sb', () => queue.add('j', { n: 1 }));
  await until(() => seen.length === 1, 'job 1', { timeoutMs: 10_000 });
  registry.stopOverride('sb', SERVICE);
  await until(() => first.endReason !== undefined, 'the sandbox worker stopping', { timeoutMs: 10_000 });
  await base.cleanupsSettled();
  await withRoutingKey('sb', () => queue.add('j', { n: 2 }));
  await until(() => seen.length === 2, 'job 2', { timeoutMs: 10_000 });
  registry.resumeOverride('sb', SERVICE);
  const second = make('sb');
  await second.ready();
  await Promise.all(views.map((v) => v.settled()));
  await withRoutingKey('sb', () => queue.add('j', { n: 3 }));
  await until(() => seen.length === 3, 'job 3', { timeoutMs: 10_000 });
  expect(seen).toEqual(['sb:1', 'baseline:2', 'sb:3']);
});

it('a sandbox worker started after its sandbox was deleted stops by itself without writing to its removed queue', {
  timeout: 30_000,
}, async () => {
  const { prefix, queue } = setup('late');
  const registry = new RegistrySim();
  registry.create('sb', overrides);
  registry.create('live', overrides);
  registry.delete('sb');
  const make = (sandbox: string) => {
    const w = createSelectiveWorker<{ n: number }, void>({
      queue: queue.name,
      connection: REDIS,
      prefix,
      service: SERVICE,
      sandbox,
      runtime,
      routes: view(registry).source,
      // Its stalled-job check writes a key of the sandbox queue on every run.
      workerOptions: { stalledInterval: 500 },
      processor: async () => undefined,
    });
    closers.push(() => w.close());
    return w;
  };
  const late = make('sb');
  const live = make('live');
  await Promise.all([late.ready(), live.ready()]);
  await until(() => late.endReason !== undefined, 'the late sandbox worker stopping', { timeoutMs: 10_000 });
  expect(late.endReason).toBe('sandbox-deleted');
  await late.close();
  // It never took a job from (or wrote to) the queue the baseline had removed.
  expect(await keysOf(`${prefix}:${sandboxQueueName(queue.name, 'sb')}:*`)).toEqual([]);
  // A live sandbox's worker, whose view was complete well past its start, keeps running.
  expect(live.endReason).toBeUndefined();
  expect(live.worker.isRunning()).toBe(true);
});
