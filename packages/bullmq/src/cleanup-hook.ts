import { isValidRoutingKey } from '@branchline/core';
import { logger, type ResourceContext, type ResourceHook } from '@branchline/core/transport';
import type { ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { returnSandboxJobs, sleep } from './cleanup.js';
import { sandboxQueueName } from './names.js';
import type { SandboxQueueCleanupResult } from './types.js';

export interface BullmqQueuesHookOptions {
  /** The connection the queues use (ioredis options or an ioredis instance, which is duplicated). */
  connection: ConnectionOptions;
  /** The baseline queues whose sandbox queues this hook manages. */
  queues: string[];
  /** BullMQ key prefix. Default `bull`. */
  prefix?: string;
  /**
   * On a deletion, wait this long before touching an existing sandbox queue, so a baseline worker
   * that is up removes it itself (the hook then finds it gone, or waits for that removal); after
   * returning it, wait this long again and look once more, for moves by baseline workers whose
   * route view had not seen the deletion yet (such a move re-creates the queue; it is returned
   * too). Not used by the sweep. Default 10000.
   */
  drainGraceMs?: number;
  /** Longest wait for jobs a sandbox worker is still running, ms. Default 60000. */
  activeTimeoutMs?: number;
}

/** core's `ResourceHook` contract, with the methods this hook implements made required. */
export interface BullmqQueuesHook extends ResourceHook {
  type: 'bullmq-queues';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<Record<string, unknown>>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  sweep(liveSandboxes: string[]): Promise<void>;
}

const MARKER_MS = 7 * 24 * 3600_000;

const globEscape = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');

async function scanKeys(redis: Redis, pattern: string, limit = Number.POSITIVE_INFINITY): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0' && out.length < limit);
  return out;
}

/**
 * A registry resource hook (type `bullmq-queues`) for sandboxes deleted while no baseline worker
 * runs to clean up after them: it returns the jobs still waiting in each of the sandbox's queues
 * (`sandboxQueueName(queue, sandbox)`) to the baseline queue with `returnSandboxJobs` and
 * obliterates the sandbox queue; its sweep does the same for sandbox queues of sandboxes that no
 * longer exist. Declare it on a sandbox as
 * `"resources": {"jobs": {"type": "bullmq-queues", "spec": {}}}` and register it with
 * `createRegistryServer({ resourceHooks: [bullmqQueuesHook({ connection, queues: ['orders'] })] })`.
 * Optional spec: `{"queues": ["orders"]}` limits it to some of the configured queues.
 */
export function bullmqQueuesHook(options: BullmqQueuesHookOptions): BullmqQueuesHook {
  const { connection, queues } = options;
  if (!connection)
    throw new TypeError('bullmq-queues: option connection is required (ioredis options or instance)');
  if (
    !Array.isArray(queues) ||
    queues.length === 0 ||
    queues.some((q) => typeof q !== 'string' || q.length === 0)
  )
    throw new TypeError(
      `bullmq-queues: option queues must list the baseline queue names, such as ['orders'] (got ${JSON.stringify(queues)})`,
    );
  const prefix = options.prefix ?? 'bull';
  const graceMs = options.drainGraceMs ?? 10_000;
  if (!Number.isFinite(graceMs) || graceMs < 0)
    throw new TypeError(
      `bullmq-queues: option drainGraceMs must be a number of milliseconds >= 0 (got ${String(options.drainGraceMs)})`,
    );

  async function withRedis<R>(fn: (redis: Redis) => Promise<R>): Promise<R> {
    const conn = connection as unknown;
    const redis =
      conn instanceof Redis
        ? conn.duplicate({ maxRetriesPerRequest: null })
        : new Redis({ ...(conn as object), maxRetriesPerRequest: null });
    redis.on('error', () => undefined);
    try {
      return await fn(redis);
    } finally {
      redis.disconnect();
    }
  }

  const queueExists = async (redis: Redis, sq: string) =>
    (await scanKeys(redis, `${globEscape(prefix)}:${globEscape(sq)}:*`, 1)).length > 0;

  /**
   * The ownership intervals (their start) baseline workers moved jobs of `sq` under and whose
   * removal did not finish. Without one, the hook uses an interval of its own, named by the time
   * it began returning this incarnation of the queue: kept in a key until the queue is removed,
   * so a run retried after a crash returns with the same job ids (no job twice), while a queue
   * re-created later (its job ids start over) gets new ones (no returned job mistaken for an
   * earlier one and dropped).
   */
  async function openIntervals(redis: Redis, sq: string): Promise<number[]> {
    const base = `${prefix}:branchline:${sq}:`;
    const keys = await scanKeys(redis, `${globEscape(base)}*`);
    const seen = new Map<number, boolean>();
    for (const k of keys) {
      const m = /^(\d+):(closed|moving|cleanup)$/.exec(k.slice(base.length));
      if (!m) continue;
      const since = Number(m[1]);
      seen.set(since, (seen.get(since) ?? false) || m[2] === 'closed');
    }
    const open = [...seen].filter(([, closed]) => !closed).map(([since]) => since);
    if (open.length) return open;
    const marker = `${base}hook`;
    await redis.set(marker, String(Date.now()), 'PX', MARKER_MS, 'NX');
    return [Number(await redis.get(marker))];
  }

  /** Waits while a removal of `sq` runs elsewhere (a baseline worker's, or this hook's on another replica). */
  async function awaitOtherRemoval(redis: Redis, sq: string): Promise<void> {
    const pattern = `${globEscape(`${prefix}:branchline:${sq}:`)}*:cleanup`;
    const deadline = Date.now() + (options.activeTimeoutMs ?? 60_000) + 30_000;
    while ((await scanKeys(redis, pattern, 1)).length > 0) {
      if (Date.now() > deadline)
        throw new Error(
          `bullmq-queues: another removal of ${sq} (a baseline worker's) has been running for too long; retry later`,
        );
      await sleep(200);
    }
  }

  /**
   * Returns and removes one sandbox queue. `grace` > 0 (a deletion that just happened): first
   * give baseline workers that are up the time to see the deletion and remove it themselves,
   * then, after returning, look again once more for moves by workers whose view lagged.
   */
  async function clean(
    redis: Redis,
    queue: string,
    sandbox: string,
    grace: number,
  ): Promise<{ existed: boolean; returned: number; byHook: boolean }> {
    const sq = sandboxQueueName(queue, sandbox);
    if (!(await queueExists(redis, sq))) return { existed: false, returned: 0, byHook: false };
    if (grace > 0) await sleep(grace);
    let returned = 0;
    let byHook = false;
    for (let pass = 0; ; pass++) {
      await awaitOtherRemoval(redis, sq);
      if (!(await queueExists(redis, sq))) break;
      if (pass >= 5)
        throw new Error(
          `bullmq-queues: jobs keep arriving in ${sq} after sandbox ${sandbox} was deleted (a baseline worker still moves jobs there, or a sandbox worker still runs and writes to it?); retry later`,
        );
      for (const since of await openIntervals(redis, sq)) {
        const r: SandboxQueueCleanupResult = await returnSandboxJobs({
          redis,
          connection,
          prefix,
          queue,
          sandbox,
          since,
          activeTimeoutMs: options.activeTimeoutMs,
        });
        returned += r.returned;
        byHook = true;
      }
      await redis.del(`${prefix}:branchline:${sq}:hook`);
      if (grace > 0) await sleep(grace);
    }
    return { existed: true, returned, byHook };
  }

  async function cleanAll(redis: Redis, pairs: { queue: string; sandbox: string }[], grace: number) {
    const failures: string[] = [];
    for (const { queue, sandbox } of pairs) {
      try {
        const r = await clean(redis, queue, sandbox, grace);
        if (r.existed)
          logger().info(
            r.byHook
              ? 'branchline: returned the sandbox queue of a deleted sandbox to the baseline queue and removed it'
              : 'branchline: the sandbox queue of a deleted sandbox was removed by a baseline worker',
            { queue: sandboxQueueName(queue, sandbox), sandbox, returned: r.returned, to: queue },
          );
      } catch (err) {
        failures.push(
          `${sandboxQueueName(queue, sandbox)}: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    if (failures.length)
      throw new Error(
        `bullmq-queues: could not remove ${failures.length} sandbox queue(s); jobs not returned yet stay where they are and the next run retries: ${failures.join('; ')}`,
      );
  }

  return {
    type: 'bullmq-queues',
    validate(spec) {
      const only = spec.queues;
      if (only === undefined) return;
      if (!Array.isArray(only) || only.some((q) => typeof q !== 'string' || !queues.includes(q)))
        throw new Error(
          `bullmq-queues: spec.queues must be a list of queues this hook manages (${queues.join(', ')}) (got ${JSON.stringify(only)})`,
        );
    },
    // Sandbox queues are created by the baseline workers' first move; nothing to make here.
    async provision(ctx) {
      const only = (ctx.resource.spec.queues as string[] | undefined) ?? queues;
      return { queues: only.map((q) => sandboxQueueName(q, ctx.sandbox.name)) };
    },
    async deprovision(ctx) {
      const only = (ctx.resource.spec.queues as string[] | undefined) ?? queues;
      await withRedis((redis) =>
        cleanAll(
          redis,
          only.map((queue) => ({ queue, sandbox: ctx.sandbox.name })),
          graceMs,
        ),
      );
    },
    async sweep(liveSandboxes) {
      const live = new Set(liveSandboxes);
      await withRedis(async (redis) => {
        const pairs: { queue: string; sandbox: string }[] = [];
        for (const queue of queues) {
          const head = `${prefix}:${queue}.sandbox.`;
          const found = new Set<string>();
          for (const k of await scanKeys(redis, `${globEscape(head)}*`)) {
            const sandbox = k.slice(head.length).split(':')[0] ?? '';
            if (isValidRoutingKey(sandbox) && !live.has(sandbox)) found.add(sandbox);
          }
          for (const sandbox of found) pairs.push({ queue, sandbox });
        }
        // A sandbox gone for a sweep interval is past every view's lag: no grace needed.
        if (pairs.length) await cleanAll(redis, pairs, 0);
      });
    },
  };
}
