import { EventEmitter } from 'node:events';
import { defaultRuntime } from '@branchline/core';
import {
  type CarrierGetter,
  createMessageSelector,
  type FinalSelection,
  HoldTimeoutError,
  logger,
  type MessageSelector,
  type OwnersChange,
  type SandboxOwnership,
} from '@branchline/core/transport';
import { DelayedError, type Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { BEGIN_MOVE, copyOptions, returnSandboxJobs, sleep } from './cleanup.js';
import {
  type BranchlineJobMeta,
  intervalStart,
  JOB_OPTION,
  metaOf,
  movedJobId,
  moveKeys,
  sandboxQueueName,
} from './names.js';
import type { SandboxQueueCleanupResult, SelectiveWorkerOptions, SelectiveWorkerStats } from './types.js';

const metaGetter: CarrierGetter<BranchlineJobMeta | undefined> = {
  get: (c, k) => {
    const v = c?.[k];
    return typeof v === 'string' ? v : undefined;
  },
  keys: (c) => (c ? Object.keys(c) : []),
};

const noop = () => undefined;
/** How far a sandbox worker's clock may be behind the registry's when it checks that its sandbox exists. */
const START_SKEW_MS = 1000;

/** A BullMQ worker that processes only the jobs its process owns; see docs/bullmq.md. */
// biome-ignore lint/suspicious/noExplicitAny: BullMQ's own defaults, so typed workers assign to the default type
export interface SelectiveWorker<D = any, R = any> extends EventEmitter {
  /** The queue this worker reads: the baseline queue, or the sandbox's own queue. */
  readonly queue: string;
  readonly service: string;
  /** Undefined for a baseline worker. */
  readonly sandbox: string | undefined;
  /** The BullMQ worker underneath (events, `pause`, `isRunning`, …). */
  readonly worker: Worker<D, R>;
  readonly stats: SelectiveWorkerStats;
  readonly selector: MessageSelector;
  /** Why a sandbox worker ended by itself (`sandbox-deleted`). */
  readonly endReason: string | undefined;
  /** Resolves once the BullMQ worker is connected and running. */
  ready(): Promise<void>;
  /** Resolves when no sandbox-queue cleanup started by this worker is still running. */
  cleanupsSettled(): Promise<void>;
  /** Stops taking jobs, lets running ones finish (held ones go back to delayed), and disconnects. */
  close(): Promise<void>;
}

class SelectiveWorkerImpl<D, R> extends EventEmitter implements SelectiveWorker<D, R> {
  readonly queue: string;
  readonly service: string;
  readonly sandbox: string | undefined;
  readonly worker: Worker<D, R>;
  readonly selector: MessageSelector;
  readonly stats: SelectiveWorkerStats = {
    processed: 0,
    moved: 0,
    ownerGone: 0,
    held: 0,
    holdTimeouts: 0,
    delayed: 0,
    returned: 0,
  };
  endReason: string | undefined;
  private readonly prefix: string;
  private readonly baselineQueue: string;
  private readonly options: SelectiveWorkerOptions<D, R>;
  private readonly redis: Redis;
  private readonly stopping = new AbortController();
  private readonly sandboxQueues = new Map<string, Queue>();
  private readonly moves = new Map<string, Set<Promise<unknown>>>();
  private readonly cleanups = new Map<string, Promise<void>>();
  private readonly id = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  private unsubscribe: () => void = noop;
  private closing: Promise<void> | undefined;
  /** Set when this sandbox worker ends on its sandbox's removal: the interval whose queue it removes. */
  private removedOwnership: SandboxOwnership | undefined;

  constructor(options: SelectiveWorkerOptions<D, R>) {
    super();
    if (typeof options !== 'object' || options === null)
      throw new TypeError('branchline: createSelectiveWorker needs an options object');
    if (typeof options.queue !== 'string' || options.queue.length === 0)
      throw new TypeError(
        `branchline: option queue must be the baseline queue's name (got ${String(options.queue)})`,
      );
    if (typeof options.processor !== 'function')
      throw new TypeError(
        'branchline: option processor must be a function (job, token, signal) => Promise<result>',
      );
    if (options.connection === undefined || options.connection === null)
      throw new TypeError(
        'branchline: option connection is required: ioredis options such as { host: "127.0.0.1", port: 6379 } or an ioredis instance',
      );
    const runtime = options.runtime ?? defaultRuntime();
    this.selector = createMessageSelector({
      service: options.service,
      sandbox: options.sandbox,
      routes: options.routes,
      runtime,
      holdTimeoutMs: options.holdTimeoutMs,
      backoff: options.backoff,
      transport: 'bullmq',
    });
    this.options = options;
    this.service = this.selector.service;
    this.sandbox = this.selector.sandbox;
    this.prefix = options.prefix ?? 'bull';
    this.baselineQueue = options.queue;
    this.queue = this.sandbox === undefined ? options.queue : sandboxQueueName(options.queue, this.sandbox);
    const conn = options.connection as unknown;
    this.redis =
      conn instanceof Redis
        ? conn.duplicate({ maxRetriesPerRequest: null })
        : new Redis({ ...(conn as object), maxRetriesPerRequest: null, lazyConnect: false });
    this.redis.on('error', noop);
    const processor =
      this.sandbox === undefined
        ? (job: Job<D, R>, token?: string, signal?: AbortSignal) => this.baseline(job, token, signal)
        : (job: Job<D, R>, token?: string, signal?: AbortSignal) => {
            const meta = metaOf(job.opts);
            return this.process(job, token, signal, meta, this.keyOf(meta));
          };
    // A sandbox worker starts taking jobs once its view shows the sandbox: one started after the
    // deletion must not write to a queue the baseline has removed (BullMQ's stalled-job check
    // writes the queue's meta key, which nothing would remove again).
    this.worker = new Worker<D, R>(this.queue, processor as never, {
      ...options.workerOptions,
      ...(this.sandbox === undefined ? {} : { autorun: false }),
      connection: options.connection,
      prefix: this.prefix,
    });
    // An 'error' without a listener would throw; BullMQ reports connection trouble this way and
    // recovers by itself, so without a listener it is logged instead.
    this.worker.on('error', (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
      else
        logger().warn('branchline: the BullMQ worker reported an error', {
          queue: this.queue,
          err: String(err),
        });
    });
    this.unsubscribe = this.selector.onOwnersChanged((c) => this.onOwnersChanged(c));
    if (this.sandbox !== undefined) void this.startWhenSandboxShows(Date.now());
  }

  async ready(): Promise<void> {
    await this.worker.waitUntilReady();
  }

  async cleanupsSettled(): Promise<void> {
    while (this.cleanups.size > 0) await Promise.allSettled([...this.cleanups.values()]);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.unsubscribe();
      this.stopping.abort();
      await this.worker.close();
      for (const set of this.moves.values()) await Promise.allSettled([...set]);
      await this.cleanupsSettled();
      if (this.removedOwnership) await this.removeOwnQueue(this.removedOwnership);
      this.selector.close();
      await Promise.allSettled([...this.sandboxQueues.values()].map((q) => q.close()));
      this.redis.disconnect();
    })();
    return this.closing;
  }

  private keyOf(meta: BranchlineJobMeta | undefined): string | undefined {
    if (meta === undefined) return undefined;
    if (this.selector.baggageOnly)
      return typeof meta.baggage === 'string' ? this.selector.keyFromBaggage(meta.baggage) : undefined;
    return this.selector.readKey(meta, metaGetter);
  }

  /** Runs the application's processor in the job's context. */
  private process(
    job: Job<D, R>,
    token: string | undefined,
    signal: AbortSignal | undefined,
    meta: BranchlineJobMeta | undefined,
    key: string | undefined,
  ): Promise<R> {
    this.stats.processed++;
    this.selector.noteProcessed();
    const base = meta ? this.selector.extractContext(meta, metaGetter) : undefined;
    return this.selector.run(key, () => this.options.processor(job, token, signal), base);
  }

  /** The job goes back to delayed (BullMQ's way to retry later without using an attempt). */
  private async later(job: Job<D, R>, token: string | undefined, ms: number): Promise<never> {
    this.stats.delayed++;
    await job.moveToDelayed(Date.now() + ms, token);
    throw new DelayedError();
  }

  private async baseline(
    job: Job<D, R>,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<R> {
    const meta = metaOf(job.opts);
    const key = this.keyOf(meta);
    // Returned from a deleted sandbox's queue: the baseline's, without a second decision.
    if (key === undefined || meta?.returnedFrom !== undefined)
      return this.process(job, token, signal, meta, key);
    const at = typeof meta?.time === 'number' ? meta.time : job.timestamp;
    let d = this.selector.decide(key, at);
    if (d.action === 'hold') {
      this.stats.held++;
      try {
        d = await this.selector.hold(key, at, {
          first: d,
          signal: this.stopping.signal,
          where: `job ${job.id} of ${this.queue}`,
        });
      } catch (err) {
        if (err instanceof HoldTimeoutError) {
          this.stats.holdTimeouts++;
          logger().warn(
            'branchline: held a job longer than holdTimeoutMs because the route view does not cover its time; it goes back to delayed (is the registry reachable?)',
            { queue: this.queue, jobId: job.id, key, at, holdTimeoutMs: this.selector.holdTimeoutMs },
          );
        }
        return this.later(job, token, this.selector.retryDelayMs(Math.min(job.attemptsStarted, 6)));
      }
    }
    return this.act(job, token, signal, meta!, key, at, d as FinalSelection);
  }

  private async act(
    job: Job<D, R>,
    token: string | undefined,
    signal: AbortSignal | undefined,
    meta: BranchlineJobMeta,
    key: string,
    at: number,
    d: FinalSelection,
  ): Promise<R> {
    if (d.action === 'process') return this.process(job, token, signal, meta, key);
    const owner = d.owner;
    const own = owner === undefined ? undefined : this.selector.ownership(owner);
    if (owner === undefined || own === undefined) {
      // The owner at the job's time no longer overrides the service: its jobs are the baseline's now.
      this.stats.ownerGone++;
      return this.process(job, token, signal, meta, key);
    }
    let moved: boolean;
    try {
      moved = await this.track(owner, this.move(job, meta, at, owner, own));
    } catch (err) {
      logger().warn('branchline: could not move a job to its sandbox queue; it goes back to delayed', {
        queue: this.queue,
        jobId: job.id,
        sandbox: owner,
        err: String(err),
      });
      return this.later(job, token, this.selector.retryDelayMs(Math.min(job.attemptsStarted, 6)));
    }
    if (!moved) {
      this.stats.ownerGone++;
      return this.process(job, token, signal, meta, key);
    }
    this.stats.moved++;
    this.selector.noteSkipped();
    // Completes the original without running the processor.
    return undefined as R;
  }

  private track<T>(owner: string, p: Promise<T>): Promise<T> {
    let set = this.moves.get(owner);
    if (!set) {
      set = new Set();
      this.moves.set(owner, set);
    }
    set.add(p);
    const s = set;
    p.then(
      () => s.delete(p),
      () => s.delete(p),
    );
    return p;
  }

  /** Adds a copy to the owner's queue (deterministic id: a repeated move adds nothing). False when its cleanup began. */
  private async move(
    job: Job<D, R>,
    meta: BranchlineJobMeta,
    at: number,
    owner: string,
    own: SandboxOwnership,
  ): Promise<boolean> {
    const sq = sandboxQueueName(this.baselineQueue, owner);
    const keys = moveKeys(this.prefix, sq, intervalStart(own.intervals, own.since, at));
    const member = `${this.id}-${job.id}`;
    const begun = await this.redis.eval(BEGIN_MOVE, 2, keys.closed, keys.moving, member, Date.now());
    if (begun !== 1) return false;
    try {
      let q = this.sandboxQueues.get(sq);
      if (!q) {
        q = new Queue(sq, { connection: this.options.connection, prefix: this.prefix });
        this.sandboxQueues.set(sq, q);
      }
      await q.add(
        job.name as never,
        job.data as never,
        {
          ...copyOptions(job as Job),
          jobId: movedJobId(String(job.id)),
          [JOB_OPTION]: { ...meta, time: at, movedFrom: this.baselineQueue },
        } as never,
      );
      return true;
    } finally {
      await this.redis.zrem(keys.moving, member).catch(noop);
    }
  }

  private onOwnersChanged(change: OwnersChange): void {
    if (this.sandbox !== undefined) {
      const mine = change.removed.find((o) => o.sandbox === this.sandbox);
      if (mine) {
        this.removedOwnership ??= mine;
        this.endReason = 'sandbox-deleted';
        this.emit('sandbox-deleted', this.sandbox);
        void this.close();
      }
      return;
    }
    for (const o of change.removed) this.scheduleCleanup(o);
  }

  /**
   * Runs a sandbox worker's BullMQ worker once its view shows the sandbox. A sandbox worker
   * started after its sandbox was deleted sees no removal (its view never showed the sandbox), so
   * it would run on forever on a queue nothing moves jobs to any more. The sandbox exists before
   * its worker starts, so a view complete past the start that does not show the sandbox means it
   * is gone: the worker ends as on a deletion, without having touched the queue. (A view that
   * does not show it yet is not complete that far.) `START_SKEW_MS` covers a worker clock behind
   * the registry's.
   */
  private async startWhenSandboxShows(startedAt: number): Promise<void> {
    for (;;) {
      if (this.closing) return;
      const table = this.selector.table;
      if (table?.sandbox(this.sandbox!)) {
        this.worker.run().catch((err: unknown) => {
          this.worker.emit('error', err as Error);
        });
        return;
      }
      if (table && table.completeUntil > startedAt + START_SKEW_MS) {
        logger().warn(
          'branchline: this sandbox worker started after its sandbox was deleted; it stops without taking jobs (the baseline processes what was meant for the sandbox)',
          { queue: this.queue, sandbox: this.sandbox },
        );
        this.endReason = 'sandbox-deleted';
        this.emit('sandbox-deleted', this.sandbox);
        void this.close();
        return;
      }
      await this.selector.waitForView(1000);
    }
  }

  /**
   * A sandbox worker that ended on its sandbox's removal removes the sandbox queue as a baseline
   * replica does (the same idempotent protocol): the baselines may have removed it while this
   * worker still ran, and BullMQ's worker writes the queue's meta key on its stalled-job checks,
   * so a queue removed before the worker stopped would otherwise come back as a stray key.
   */
  private async removeOwnQueue(o: SandboxOwnership): Promise<void> {
    try {
      const r = await returnSandboxJobs({
        redis: this.redis,
        connection: this.options.connection,
        prefix: this.prefix,
        queue: this.baselineQueue,
        sandbox: this.sandbox!,
        since: intervalStart(o.intervals, o.since),
        until: o.until,
        activeTimeoutMs: 10_000,
      });
      this.stats.returned += r.returned;
    } catch (err) {
      logger().warn(
        'branchline: a sandbox worker that ended could not remove its sandbox queue; the baseline workers remove it',
        { queue: this.queue, err: String(err) },
      );
    }
  }

  private scheduleCleanup(o: SandboxOwnership): void {
    const since = intervalStart(o.intervals, o.since);
    const id = `${o.sandbox}@${since}`;
    if (this.cleanups.has(id) || this.closing) return;
    const run = async () => {
      const pending = this.moves.get(o.sandbox);
      if (pending?.size) await Promise.allSettled([...pending]);
      const sq = sandboxQueueName(this.baselineQueue, o.sandbox);
      const q = this.sandboxQueues.get(sq);
      this.sandboxQueues.delete(sq);
      await q?.close().catch(noop);
      for (let attempt = 0; ; attempt++) {
        try {
          const r: SandboxQueueCleanupResult = await returnSandboxJobs({
            redis: this.redis,
            connection: this.options.connection,
            prefix: this.prefix,
            queue: this.baselineQueue,
            sandbox: o.sandbox,
            since,
            until: o.until,
          });
          this.stats.returned += r.returned;
          this.emit('sandbox-queue-removed', r);
          return;
        } catch (err) {
          if (this.stopping.signal.aborted && attempt > 0) return;
          logger().warn('branchline: could not return a removed sandbox queue yet; retrying', {
            sandbox: o.sandbox,
            err: String(err),
          });
          await sleep(this.selector.retryDelayMs(Math.min(attempt, 6)));
        }
      }
    };
    const p = run().finally(() => this.cleanups.delete(id));
    this.cleanups.set(id, p);
  }
}

/**
 * A BullMQ worker for the baseline queue (or, in a sandbox, the sandbox's own queue) such that
 * every job is processed by exactly one of {baseline, the sandbox that owns its key}. The baseline
 * worker moves a job a sandbox owns to `sandboxQueueName(queue, sandbox)` and completes the
 * original without running the processor. See docs/bullmq.md.
 */
// biome-ignore lint/suspicious/noExplicitAny: BullMQ's own defaults, so typed workers assign to the default type
export function createSelectiveWorker<D = any, R = any>(
  options: SelectiveWorkerOptions<D, R>,
): SelectiveWorker<D, R> {
  return new SelectiveWorkerImpl(options);
}
