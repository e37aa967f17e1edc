import { logger } from '@branchline/core/transport';
import { type ConnectionOptions, type Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { JOB_OPTION, metaOf, moveKeys, returnedJobId, sandboxQueueName } from './names.js';
import type { SandboxQueueCleanupResult } from './types.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A move that registered longer ago than this is taken as abandoned (its worker died). */
export const MOVE_STALE_MS = 60_000;
const TOMBSTONE_MS = 7 * 24 * 3600_000;
const LOCK_MS = 30_000;

/** Starts a move into a sandbox queue unless its cleanup began: returns 1 when the move may go on. */
export const BEGIN_MOVE = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ${TOMBSTONE_MS})
return 1`;

const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/** Job options for a copy of `job` (the id, repeat, parent and delay are the original's own). */
export function copyOptions(job: Job): Record<string, unknown> {
  const {
    jobId: _id,
    repeat: _r,
    repeatJobKey: _rk,
    parent: _p,
    delay: _d,
    deduplication: _dd,
    debounce: _db,
    prevMillis: _pm,
    ...rest
  } = job.opts as Record<string, unknown>;
  return rest;
}

export interface ReturnSandboxJobsOptions {
  /** A Redis client for the move protocol's keys (ioredis). */
  redis: Redis;
  /** The connection the queues use (ioredis options or instance). */
  connection: ConnectionOptions;
  prefix?: string;
  /** The baseline queue. */
  queue: string;
  sandbox: string;
  /**
   * The start of the ownership interval that ended (registry time, ms): the latest interval's
   * `from` of the sandbox's ownership record for the service (`intervalStart(intervals, since)`).
   */
  since: number;
  /** Every job the removed incarnation owns has an earlier time; later ones are a newer incarnation's. */
  until?: number;
  /** Longest wait for jobs the sandbox worker is still running, ms. Default 60000. */
  activeTimeoutMs?: number;
}

/**
 * Returns what still waits in a removed sandbox's queue to the baseline queue, then removes the
 * sandbox queue: closes the queue to new moves (and waits for moves in flight), pauses it so no
 * sandbox worker takes another job, adds each job to the baseline queue (deterministic id, so a
 * repeated cleanup adds nothing) and only then removes it from the sandbox queue, waits for jobs
 * a sandbox worker is still running, and obliterates the queue. One replica at a time (a lock);
 * safe to run again after a crash.
 */
export async function returnSandboxJobs(o: ReturnSandboxJobsOptions): Promise<SandboxQueueCleanupResult> {
  const prefix = o.prefix ?? 'bull';
  const sq = sandboxQueueName(o.queue, o.sandbox);
  const keys = moveKeys(prefix, sq, o.since);
  const token = `${process.pid}-${Math.random().toString(36).slice(2)}`;
  while ((await o.redis.set(keys.lock, token, 'PX', LOCK_MS, 'NX')) !== 'OK') await sleep(100);
  const renew = setInterval(() => {
    o.redis.pexpire(keys.lock, LOCK_MS).catch(() => undefined);
  }, LOCK_MS / 3);
  const sandboxQueue = new Queue(sq, { connection: o.connection, prefix });
  const baseline = new Queue(o.queue, { connection: o.connection, prefix });
  let checker: Worker | undefined;
  const result: SandboxQueueCleanupResult = {
    queue: sq,
    sandbox: o.sandbox,
    returned: 0,
    kept: 0,
    removed: false,
  };
  try {
    await o.redis.set(keys.closed, '1', 'PX', TOMBSTONE_MS);
    // Moves that began before the queue was closed land before we look.
    for (;;) {
      await o.redis.zremrangebyscore(keys.moving, '-inf', Date.now() - MOVE_STALE_MS);
      if ((await o.redis.zcard(keys.moving)) === 0) break;
      await sleep(20);
    }
    await sandboxQueue.pause();
    const deadline = Date.now() + (o.activeTimeoutMs ?? 60_000);
    for (;;) {
      result.kept = 0;
      for (let start = 0; ; ) {
        const jobs = await sandboxQueue.getJobs(['waiting', 'delayed', 'prioritized'], start, start + 499);
        if (jobs.length === 0) break;
        let removedHere = 0;
        for (const job of jobs) {
          if (!job?.id) continue;
          const meta = metaOf(job.opts);
          const at = typeof meta?.time === 'number' ? meta.time : job.timestamp;
          if (o.until !== undefined && at >= o.until) {
            result.kept++;
            continue;
          }
          await baseline.add(job.name, job.data, {
            ...copyOptions(job),
            jobId: returnedJobId(job.id, o.sandbox, o.since),
            [JOB_OPTION]: { ...meta, returnedFrom: o.sandbox },
          } as never);
          await job.remove();
          removedHere++;
          result.returned++;
        }
        start += jobs.length - removedHere;
      }
      const active = await sandboxQueue.getActiveCount();
      if (active === 0) break;
      if (Date.now() > deadline) {
        throw new Error(
          `${active} jobs of ${sq} are still active after ${o.activeTimeoutMs ?? 60_000} ms; their worker holds them (or died and their locks have not expired yet)`,
        );
      }
      // A sandbox worker that died leaves its jobs active until their lock expires: check for those.
      if (!checker) {
        checker = new Worker(sq, null, {
          connection: o.connection,
          prefix,
          autorun: false,
          stalledInterval: 1000,
        });
        void checker.startStalledCheckTimer().catch(() => undefined);
      }
      await sleep(200);
    }
    if (result.kept === 0) {
      await sandboxQueue.obliterate();
      result.removed = true;
    } else {
      await sandboxQueue.resume();
    }
    logger().info('branchline: returned a removed sandbox queue to the baseline', { ...result });
    return result;
  } finally {
    clearInterval(renew);
    await checker?.close().catch(() => undefined);
    await sandboxQueue.close().catch(() => undefined);
    await baseline.close().catch(() => undefined);
    await o.redis.eval(UNLOCK, 1, keys.lock, token).catch(() => undefined);
  }
}
