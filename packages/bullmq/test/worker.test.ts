import { createRuntime, getRoutingKey, withRoutingKey } from '@branchline/core';
import { until } from '@branchline/test-utils';
import { endpoint, RegistrySim } from '@branchline/test-utils/registry-sim';
import { Job, Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { createSelectiveWorker, JOB_OPTION, type SelectiveWorker, sandboxQueueName } from '../src/index.js';
import { keysOf, queueFixtures, REDIS } from './redis.js';

const SERVICE = 'orders';
const runtime = createRuntime({ service: SERVICE, routes: { sandboxes: [] } });
const { closers, setup, view } = queueFixtures();
const overrides = { [SERVICE]: endpoint };

interface Seen {
  by: string;
  key: string | undefined;
  n: number;
}

function worker(
  prefix: string,
  queue: string,
  registry: RegistrySim,
  sandbox: string | null,
  seen: Seen[],
  extra: Partial<Parameters<typeof createSelectiveWorker>[0]> = {},
): SelectiveWorker {
  const w = createSelectiveWorker<{ n: number }, void>({
    queue,
    connection: REDIS,
    prefix,
    service: SERVICE,
    sandbox,
    runtime,
    routes: view(registry).source,
    processor: async (job: Job<{ n: number }>) => {
      seen.push({ by: sandbox ?? 'baseline', key: getRoutingKey(), n: job.data.n });
    },
    ...(extra as object),
  });
  closers.push(() => w.close());
  return w;
}

it('carries the routing key in W3C baggage and the Redis server time in the job options', async () => {
  const { queue } = setup('prop');
  const r = new Redis(REDIS);
  closers.push(() => r.disconnect());
  const [s, us] = await r.time();
  const before = Number(s) * 1000 + Number(us) / 1000;
  const a = await withRoutingKey('alice', () => queue.add('a', 'plain string data', { attempts: 2 }));
  const bulk = await withRoutingKey('bob', () =>
    queue.addBulk([
      { name: 'b1', data: { n: 1 } },
      { name: 'b2', data: { n: 2 }, opts: { priority: 3 } },
    ]),
  );
  const none = await queue.add('c', { n: 3 });
  const [s2, us2] = await r.time();
  const after = Number(s2) * 1000 + Number(us2) / 1000;

  const fetched = await Job.fromId(queue, a.id!);
  expect(fetched!.data).toBe('plain string data');
  expect(fetched!.opts.attempts).toBe(2);
  const meta = (fetched!.opts as Record<string, { baggage: string; time: number }>)[JOB_OPTION]!;
  expect(meta.baggage).toMatch(/alice/);
  expect(meta.time).toBeGreaterThanOrEqual(before - 5);
  expect(meta.time).toBeLessThanOrEqual(after + 5);
  for (const j of bulk) {
    const f = await Job.fromId(queue, j.id!);
    expect((f!.opts as Record<string, { baggage: string }>)[JOB_OPTION]!.baggage).toMatch(/bob/);
  }
  expect((await Job.fromId(queue, bulk[1]!.id!))!.opts.priority).toBe(3);
  expect((await Job.fromId(queue, none.id!))!.opts).not.toHaveProperty(JOB_OPTION);
});

it('a sandbox worker processes the jobs its key owns, the baseline the others, each once and in the key context', async () => {
  const { prefix, queue } = setup('select');
  const registry = new RegistrySim();
  registry.create('sb1', overrides);
  const seen: Seen[] = [];
  const base = worker(prefix, queue.name, registry, null, seen);
  const sb = worker(prefix, queue.name, registry, 'sb1', seen);
  await Promise.all([base.ready(), sb.ready()]);
  await withRoutingKey('sb1', () => queue.addBulk([1, 2, 3].map((n) => ({ name: 'j', data: { n } }))));
  await withRoutingKey('other', () => queue.add('j', { n: 4 }));
  await queue.add('j', { n: 5 });
  await until(() => seen.length >= 5, '5 jobs processed', { timeoutMs: 15_000 });
  await new Promise((r) => setTimeout(r, 300));
  const byN = new Map(seen.map((s) => [s.n, s]));
  expect(seen).toHaveLength(5);
  for (const n of [1, 2, 3]) expect(byN.get(n)).toEqual({ by: 'sb1', key: 'sb1', n });
  expect(byN.get(4)).toEqual({ by: 'baseline', key: 'other', n: 4 });
  expect(byN.get(5)).toEqual({ by: 'baseline', key: undefined, n: 5 });
  expect(base.stats.moved).toBe(3);
  expect(sb.queue).toBe(sandboxQueueName(queue.name, 'sb1'));
});

it('returns what waits in a deleted sandbox queue to the baseline, and removes the sandbox queue', async () => {
  const { prefix, queue } = setup('drain');
  const registry = new RegistrySim();
  registry.create('gone', overrides);
  const seen: Seen[] = [];
  const base = worker(prefix, queue.name, registry, null, seen);
  await base.ready();
  // No sandbox worker runs: the moved jobs wait in its queue.
  await withRoutingKey('gone', () => queue.addBulk([1, 2, 3, 4].map((n) => ({ name: 'j', data: { n } }))));
  await until(() => base.stats.moved === 4, '4 moves', { timeoutMs: 15_000 });
  const sq = sandboxQueueName(queue.name, 'gone');
  expect(await new Queue(sq, { connection: REDIS, prefix }).count()).toBe(4);
  expect(seen).toHaveLength(0);
  registry.delete('gone');
  await until(() => seen.length === 4, 'returned jobs processed', { timeoutMs: 20_000 });
  await base.cleanupsSettled();
  expect(seen.map((s) => s.n).sort()).toEqual([1, 2, 3, 4]);
  expect(seen.every((s) => s.by === 'baseline' && s.key === 'gone')).toBe(true);
  expect(base.stats.returned).toBe(4);
  expect(await keysOf(`${prefix}:${sq}:*`)).toEqual([]);
});

it('holds a job until the route view covers its time, then decides; a timed-out hold goes back to delayed', async () => {
  const { prefix, queue } = setup('hold');
  const registry = new RegistrySim();
  const seen: Seen[] = [];
  const routes = view(registry, { synced: false, events: false, everyMs: 0 }); // never synced yet
  const base = createSelectiveWorker<{ n: number }, void>({
    queue: queue.name,
    connection: REDIS,
    prefix,
    service: SERVICE,
    sandbox: null,
    runtime,
    routes: routes.source,
    holdTimeoutMs: 300,
    backoff: { initialMs: 100, maxMs: 200 },
    processor: async (job) => {
      seen.push({ by: 'baseline', key: getRoutingKey(), n: job.data.n });
    },
  });
  closers.push(() => base.close());
  await base.ready();
  await withRoutingKey('k1', () => queue.add('j', { n: 1 }));
  await until(() => base.stats.holdTimeouts >= 1, 'a hold timeout', { timeoutMs: 10_000 });
  expect(seen).toHaveLength(0);
  expect(base.stats.delayed).toBeGreaterThanOrEqual(1);
  routes.sync(); // the first table arrives
  await until(() => seen.length === 1, 'the held job processed', { timeoutMs: 10_000 });
  await new Promise((r) => setTimeout(r, 300));
  expect(seen).toEqual([{ by: 'baseline', key: 'k1', n: 1 }]);
  expect(await queue.getFailedCount()).toBe(0);
});

it('rejects bad options with a message that says what to pass', () => {
  expect(() =>
    createSelectiveWorker({ queue: '', connection: REDIS, processor: async () => 1 } as never),
  ).toThrow(/queue/);
  expect(() => createSelectiveWorker({ queue: 'q', connection: REDIS } as never)).toThrow(/processor/);
  expect(() => createSelectiveWorker({ queue: 'q', processor: async () => 1 } as never)).toThrow(
    /connection/,
  );
  expect(() => sandboxQueueName('q', 'a:b')).toThrow(/cannot contain ":"/);
});
