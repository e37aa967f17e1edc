import type { ResourceContext } from '@branchline/core/transport';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, expect, it } from 'vitest';
import { bullmqQueuesHook, JOB_OPTION, sandboxQueueName } from '../src/index.js';
import { keysOf, REDIS, removePrefix, uniquePrefix } from './redis.js';

const closers: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

function ctx(sandbox: string, spec: Record<string, unknown> = {}): ResourceContext {
  return {
    sandbox: { name: sandbox, key: sandbox, labels: {} },
    resource: { name: 'jobs', type: 'bullmq-queues', spec },
    report: () => undefined,
    signal: new AbortController().signal,
  };
}

function queue(name: string, prefix: string): Queue {
  const q = new Queue(name, { connection: REDIS, prefix });
  closers.push(() => q.close());
  return q;
}

it('returns the waiting jobs of a deleted sandbox to the baseline queue and removes its queue', async () => {
  const prefix = uniquePrefix('hook');
  closers.push(() => removePrefix(prefix));
  const baseline = queue('orders', prefix);
  await baseline.add('keep', { n: 0 });
  const sq = queue(sandboxQueueName('orders', 'pr-1'), prefix);
  const other = queue(sandboxQueueName('orders', 'pr-2'), prefix);
  for (let i = 1; i <= 3; i++)
    await sq.add('job', { n: i }, { [JOB_OPTION]: { time: Date.now(), movedFrom: 'orders' } } as never);
  await sq.add('later', { n: 4 }, { delay: 60_000 });
  await other.add('job', { n: 9 });

  const hook = bullmqQueuesHook({ connection: REDIS, queues: ['orders'], prefix, drainGraceMs: 50 });
  await hook.deprovision(ctx('pr-1'));

  const jobs = await baseline.getJobs(['waiting', 'delayed']);
  expect(jobs.map((j) => (j.data as { n: number }).n).sort()).toEqual([0, 1, 2, 3, 4]);
  const returned = jobs.filter(
    (j) => (j.opts as Record<string, { returnedFrom?: string }>)[JOB_OPTION]?.returnedFrom,
  );
  expect(returned).toHaveLength(4);
  expect(await keysOf(`${prefix}:${sandboxQueueName('orders', 'pr-1')}:*`)).toEqual([]);
  // Another sandbox's queue is left alone.
  expect(await other.getJobCounts('waiting')).toEqual({ waiting: 1 });
  // Idempotent: a retry finds nothing and returns nothing twice.
  await hook.deprovision(ctx('pr-1'));
  expect(await baseline.getJobCountByTypes('waiting', 'delayed')).toBe(5);
});

it('uses the interval of a move in progress, and sweeps queues of sandboxes that no longer exist', async () => {
  const prefix = uniquePrefix('hooksweep');
  closers.push(() => removePrefix(prefix));
  const baseline = queue('orders', prefix);
  const a = queue(sandboxQueueName('orders', 'pr-3'), prefix);
  const b = queue(sandboxQueueName('orders', 'pr-4'), prefix);
  await a.add('job', { n: 1 });
  await b.add('job', { n: 2 });
  // A baseline worker registered a move under interval 1234 that never finished (it died).
  const redis = new Redis(REDIS);
  closers.push(() => redis.disconnect());
  const moving = `${prefix}:branchline:${sandboxQueueName('orders', 'pr-3')}:1234:moving`;
  await redis.zadd(moving, Date.now() - 120_000, 'dead-worker-1');

  const hook = bullmqQueuesHook({ connection: new Redis(REDIS), queues: ['orders'], prefix });
  await hook.sweep(['pr-4']);
  const ids = (await baseline.getJobs(['waiting'])).map((j) => j.id);
  expect(ids).toHaveLength(1);
  expect(ids[0]).toMatch(/^r-pr-3-1234-/);
  // The interval is closed: a worker that wakes up late cannot move into it any more.
  expect(await redis.exists(`${prefix}:branchline:${sandboxQueueName('orders', 'pr-3')}:1234:closed`)).toBe(
    1,
  );
  expect(await keysOf(`${prefix}:${sandboxQueueName('orders', 'pr-3')}:*`)).toEqual([]);
  expect(await b.getJobCounts('waiting')).toEqual({ waiting: 1 });
});

it('fails with a clear error while a sandbox worker still holds jobs, leaving them in place', async () => {
  const prefix = uniquePrefix('hookactive');
  closers.push(() => removePrefix(prefix));
  queue('orders', prefix);
  const sq = queue(sandboxQueueName('orders', 'pr-5'), prefix);
  await sq.add('job', { n: 1 });
  // Take the job as a worker would and keep it active (lock held for 30 s).
  const { Worker } = await import('bullmq');
  const w = new Worker(sq.name, null, { connection: REDIS, prefix, autorun: false });
  closers.push(() => w.close());
  const job = await w.getNextJob('token-1');
  expect(job).toBeTruthy();
  const hook = bullmqQueuesHook({
    connection: REDIS,
    queues: ['orders'],
    prefix,
    activeTimeoutMs: 300,
    drainGraceMs: 0,
  });
  await expect(hook.deprovision(ctx('pr-5'))).rejects.toThrow(/next run retries.*still active after 300 ms/);
  expect(await sq.getActiveCount()).toBe(1);
});

it('returns a job a lagging baseline worker moves in during the grace period', async () => {
  const prefix = uniquePrefix('hookgrace');
  closers.push(() => removePrefix(prefix));
  const baseline = queue('orders', prefix);
  const sq = queue(sandboxQueueName('orders', 'pr-6'), prefix);
  await sq.add('first', { n: 1 });
  const hook = bullmqQueuesHook({ connection: REDIS, queues: ['orders'], prefix, drainGraceMs: 400 });
  const done = hook.deprovision(ctx('pr-6'));
  // The hook waits 400 ms, returns `first`, waits 400 ms again: the late move lands meanwhile.
  await new Promise((r) => setTimeout(r, 650));
  expect(await baseline.getJobCountByTypes('waiting')).toBe(1);
  const late = queue(sandboxQueueName('orders', 'pr-6'), prefix);
  await late.add('late', { n: 2 });
  await done;
  const names = (await baseline.getJobs(['waiting'])).map((j) => j.name).sort();
  expect(names).toEqual(['first', 'late']);
  expect(await keysOf(`${prefix}:${sandboxQueueName('orders', 'pr-6')}:*`)).toEqual([]);
});

it('waits while another removal of the queue (a baseline worker) holds its lock', async () => {
  const prefix = uniquePrefix('hooklock');
  closers.push(() => removePrefix(prefix));
  const baseline = queue('orders', prefix);
  const sq = queue(sandboxQueueName('orders', 'pr-8'), prefix);
  await sq.add('job', { n: 1 });
  const redis = new Redis(REDIS);
  closers.push(() => redis.disconnect());
  await redis.set(`${prefix}:branchline:${sq.name}:777:cleanup`, 'worker', 'PX', 600);
  const hook = bullmqQueuesHook({ connection: REDIS, queues: ['orders'], prefix, drainGraceMs: 0 });
  const t0 = Date.now();
  const done = hook.sweep([]);
  await new Promise((r) => setTimeout(r, 300));
  expect(await baseline.getJobCountByTypes('waiting')).toBe(0);
  await done;
  expect(Date.now() - t0).toBeGreaterThanOrEqual(550);
  expect(await baseline.getJobCountByTypes('waiting')).toBe(1);
});

it('rejects bad options and specs with clear errors', () => {
  expect(() => bullmqQueuesHook({ connection: REDIS, queues: [] })).toThrow(/option queues must list/);
  const hook = bullmqQueuesHook({ connection: REDIS, queues: ['orders'] });
  expect(() => hook.validate({ queues: ['billing'] })).toThrow(
    /spec.queues must be a list of queues this hook manages/,
  );
  expect(() => hook.validate({ queues: ['orders'] })).not.toThrow();
});
