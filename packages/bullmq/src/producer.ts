import { getRoutingKey } from '@branchline/core';
import { getBaggageKey, injectRoutingKey, recordSetter } from '@branchline/core/transport';
import { type Context, context, propagation } from '@opentelemetry/api';
import type { Queue } from 'bullmq';
import { RedisClock, type TimeClient } from './clock.js';
import { type BranchlineJobMeta, JOB_OPTION } from './names.js';

const INSTRUMENTED = Symbol.for('branchline.bullmq.queue');

export interface QueueInstrumentationOptions {
  /** The baggage member carrying the key; default core's (`getBaggageKey()`). */
  baggageKey?: string;
  /**
   * Where the enqueue time comes from: `'redis'` (default) the Redis server's clock, measured
   * with `TIME` and re-measured every `clockSyncIntervalMs`; `'local'` this process's clock.
   */
  clock?: 'redis' | 'local';
  /** How often the offset to the Redis clock is measured again, ms. Default 30000. */
  clockSyncIntervalMs?: number;
  /** A client to read `TIME` with; default the queue's own connection. */
  timeClient?: TimeClient;
  /** Also stamp jobs added without a routing key (so they can be decided by time). Default false. */
  stampUnkeyed?: boolean;
}

const recordGetter = {
  get: (c: Record<string, unknown>, k: string) => {
    const v = c[k];
    return typeof v === 'string' ? v : undefined;
  },
  keys: (c: Record<string, unknown>) => Object.keys(c),
};

/**
 * The `opts.branchline` field for a job added in `ctx` (default the active context): what the
 * application's OpenTelemetry propagator writes (trace parent, baggage), with `key` merged into
 * `baggage`, and the enqueue time. Undefined when there is no key.
 */
export function routingMeta(
  key: string | undefined,
  time: number | undefined,
  options: { baggageKey?: string; ctx?: Context } = {},
): BranchlineJobMeta | undefined {
  if (key === undefined) return time === undefined ? undefined : { time };
  const meta: BranchlineJobMeta = {};
  propagation.inject(options.ctx ?? context.active(), meta, {
    set: (c, k, v) => {
      (c as Record<string, unknown>)[k] = v;
    },
  });
  injectRoutingKey(
    meta as Record<string, unknown>,
    recordGetter,
    recordSetter,
    key,
    options.baggageKey ?? getBaggageKey(),
  );
  if (time !== undefined) meta.time = time;
  return meta;
}

/**
 * Job options carrying `meta`, merged with the caller's (never mutated). A field the application
 * set in `opts.branchline` itself wins; `key` is then merged into its `baggage` (other members
 * kept, a member of the same name the application set left alone).
 */
export function withRoutingOptions<O extends object>(
  opts: O | undefined,
  meta: BranchlineJobMeta | undefined,
  key?: string,
  baggageKey?: string,
): O {
  if (meta === undefined) return (opts ?? {}) as O;
  const existing = (opts as Record<string, unknown> | undefined)?.[JOB_OPTION] as
    | BranchlineJobMeta
    | undefined;
  if (!existing) return { ...opts, [JOB_OPTION]: meta } as O;
  const merged: BranchlineJobMeta = { ...meta, ...existing };
  if (key !== undefined && typeof existing.baggage === 'string')
    injectRoutingKey(
      merged as Record<string, unknown>,
      recordGetter,
      recordSetter,
      key,
      baggageKey ?? getBaggageKey(),
    );
  return { ...opts, [JOB_OPTION]: merged } as O;
}

type AnyQueue = Queue & { [INSTRUMENTED]?: true };

/** The queue's raw Redis client (BullMQ's Redis backend exposes it), to read `TIME` with. */
async function queueClient(queue: Queue): Promise<TimeClient | undefined> {
  const q = queue as unknown as {
    getBackend?: () => { client?: Promise<unknown> };
    client?: Promise<unknown>;
  };
  return (await (q.getBackend?.().client ?? q.client)) as TimeClient | undefined;
}

/**
 * Makes `queue.add` and `queue.addBulk` carry the active routing key (W3C baggage, in the job
 * option `branchline`) and the enqueue time by the Redis server's clock. Patches the queue in
 * place (once) and returns it. Jobs added without a key are passed through untouched.
 */
export function instrumentQueue<Q extends Queue>(queue: Q, options: QueueInstrumentationOptions = {}): Q {
  const q = queue as Q & AnyQueue;
  if (q[INSTRUMENTED]) return queue;
  if (options.clock !== undefined && options.clock !== 'redis' && options.clock !== 'local')
    throw new TypeError(`branchline: option clock must be 'redis' or 'local' (got ${String(options.clock)})`);
  const clock =
    options.clock === 'local'
      ? undefined
      : new RedisClock(
          async () => options.timeClient ?? (await queueClient(queue)),
          options.clockSyncIntervalMs ?? 30_000,
        );
  const now = () => (clock ? clock.now() : Date.now());
  const add = queue.add.bind(queue);
  const addBulk = queue.addBulk.bind(queue);
  const stampUnkeyed = options.stampUnkeyed === true;
  (q as AnyQueue).add = (async (name: string, data: unknown, opts?: object) => {
    const key = getRoutingKey();
    if (key === undefined && !stampUnkeyed) return add(name, data, opts);
    const ctx = context.active();
    const meta = routingMeta(key, await now(), { baggageKey: options.baggageKey, ctx });
    return add(name, data, withRoutingOptions(opts, meta, key, options.baggageKey));
  }) as AnyQueue['add'];
  (q as AnyQueue).addBulk = (async (jobs: { name: string; data: unknown; opts?: object }[]) => {
    const key = getRoutingKey();
    if (key === undefined && !stampUnkeyed) return addBulk(jobs as never);
    const ctx = context.active();
    const meta = routingMeta(key, await now(), { baggageKey: options.baggageKey, ctx });
    return addBulk(
      jobs.map((j) => ({ ...j, opts: withRoutingOptions(j.opts, meta, key, options.baggageKey) })) as never,
    );
  }) as AnyQueue['addBulk'];
  Object.defineProperty(q, INSTRUMENTED, { value: true });
  Object.defineProperty(q, 'branchlineClock', { value: clock });
  return queue;
}
