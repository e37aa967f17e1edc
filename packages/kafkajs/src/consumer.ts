import {
  type BranchlineRuntime,
  contextWithRoutingKey,
  createRuntime,
  defaultRuntime,
  getRoutingKey,
} from '@branchline/core';
import {
  activeContext,
  counters,
  decideMessage,
  logger,
  type MessageDecision,
  noteConsumed,
  type RouteTable,
  runInContext,
  safeHook,
} from '@branchline/core/transport';
import type { Context } from '@opentelemetry/api';
import type {
  Admin,
  ConsumerSubscribeTopic,
  ConsumerSubscribeTopics,
  EachBatchPayload,
  EachMessagePayload,
  Kafka,
  KafkaMessage,
} from 'kafkajs';
import { deleteGroups, sandboxGroupId } from './groups.js';
import { kafkaHeadersGetter } from './headers.js';
import type {
  DrainResult,
  SelectiveConsumer,
  SelectiveConsumerOptions,
  SelectiveConsumerStats,
  SelectiveEachBatchPayload,
  SelectiveRunConfig,
} from './types.js';

/** Thrown (and retried by kafkajs) when a message stayed undecidable for `holdTimeoutMs`. */
export class HoldTimeoutError extends Error {
  constructor(
    readonly reason: 'never-synced' | 'view-behind-message',
    readonly topic: string,
    readonly partition: number,
    readonly offset: string,
    holdTimeoutMs: number,
  ) {
    super(
      reason === 'never-synced'
        ? `branchline: held ${topic}[${partition}]@${offset} for ${holdTimeoutMs} ms because this consumer has no route table yet; check BRANCHLINE_REGISTRY / BRANCHLINE_ROUTES and the registry's health (or raise holdTimeoutMs)`
        : `branchline: held ${topic}[${partition}]@${offset} for ${holdTimeoutMs} ms because the route view is not complete up to the message's time; the registry watch is stale or the producer's clock is ahead (use LogAppendTime topics, or raise holdTimeoutMs)`,
    );
    this.name = 'HoldTimeoutError';
  }
}

class HoldAbandoned extends Error {
  constructor() {
    super('branchline: consumer stopped while a message was held; it will be redelivered');
    this.name = 'HoldAbandoned';
  }
}

const DEFAULTS = {
  holdTimeoutMs: 30_000,
  startMarginMs: 60_000,
  drainGraceMs: 2_000,
};

function checkMs(name: string, v: unknown): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0))
    throw new TypeError(
      `branchline: option ${name} must be a number of milliseconds >= 0 (got ${String(v)})`,
    );
}

const sleep = (ms: number) =>
  new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    t.unref?.();
  });

const PROCESS: MessageDecision = { action: 'process', owner: undefined };
const DONE: Promise<void> = Promise.resolve();
type WaitDecision = MessageDecision & { action: 'wait' };

const tp = (topic: string, partition: number) => `${topic}:${partition}`;

/** The message's time: its Kafka timestamp (CreateTime or LogAppendTime), ms. */
function timeOf(message: KafkaMessage): number | undefined {
  const t = Number(message.timestamp);
  return Number.isFinite(t) && t >= 0 ? t : undefined;
}

/**
 * A kafkajs consumer that processes only the messages this process owns: the baseline consumer
 * of service S processes a message unless a sandbox overriding S owned its key at the message's
 * time; the consumer of sandbox X processes only what X owned then. Both decide from the same
 * data (the message's timestamp against the registry's recorded history), so they agree even
 * when their views of the registry lag behind each other; a view that does not reach the
 * message's time yet holds the message instead of guessing.
 */
export function createSelectiveConsumer(kafka: Kafka, options: SelectiveConsumerOptions): SelectiveConsumer {
  const {
    service: serviceOption,
    sandbox: sandboxOption,
    routes: routesOption,
    runtime: runtimeOption,
    holdTimeoutMs = DEFAULTS.holdTimeoutMs,
    onHoldTimeout = 'error',
    startMarginMs = DEFAULTS.startMarginMs,
    drainOnDelete = true,
    drainGraceMs = DEFAULTS.drainGraceMs,
    deleteGroupOnDrain = true,
    onDrained,
    ...consumerConfig
  } = options;
  if (typeof options.groupId !== 'string' || options.groupId.length === 0)
    throw new TypeError(
      `branchline: option groupId must be the baseline consumer group id (got ${String(options.groupId)})`,
    );
  checkMs('holdTimeoutMs', holdTimeoutMs);
  checkMs('startMarginMs', startMarginMs);
  checkMs('drainGraceMs', drainGraceMs);
  if (onHoldTimeout !== 'error' && onHoldTimeout !== 'decide-now')
    throw new TypeError(
      `branchline: option onHoldTimeout must be "error" or "decide-now" (got ${String(onHoldTimeout)})`,
    );

  // The process-wide runtime (one registry watch for every consumer and middleware) unless the
  // options name another identity or route source.
  const base = runtimeOption ?? defaultRuntime();
  const runtime: BranchlineRuntime =
    routesOption === undefined && serviceOption === undefined && sandboxOption === undefined
      ? base
      : createRuntime({
          ...base.config,
          service: serviceOption ?? base.config.service,
          sandbox: sandboxOption ?? base.config.sandbox,
          routeSource: routesOption ?? base.routes,
        });
  const service = runtime.config.service;
  if (service === undefined)
    throw new TypeError(
      'branchline: a selective consumer needs its service name: pass option service or set BRANCHLINE_SERVICE',
    );
  const sandbox = runtime.config.sandbox;
  const routes = runtime.routes;
  const keys = runtime.keys;
  const groupId = sandbox === undefined ? options.groupId : sandboxGroupId(options.groupId, sandbox);
  const inner = kafka.consumer({ ...consumerConfig, groupId });
  const stats: SelectiveConsumerStats = { processed: 0, skipped: 0, held: 0, holdTimeouts: 0 };

  // Wakes every held message when the route view changes (or the consumer stops).
  let wake!: () => void;
  let changed = new Promise<void>((r) => {
    wake = r;
  });
  const signal = () => {
    const w = wake;
    changed = new Promise<void>((r) => {
      wake = r;
    });
    w();
  };
  let stopping = false;

  const topics: (string | RegExp)[] = [];
  let assignment: Map<string, number[]> | undefined;
  const committed = new Map<string, string>();
  inner.on(inner.events.GROUP_JOIN, (e) => {
    assignment = new Map(Object.entries(e.payload.memberAssignment));
  });
  inner.on(inner.events.COMMIT_OFFSETS, (e) => {
    for (const t of e.payload.topics)
      for (const p of t.partitions) committed.set(tp(t.topic, p.partition), p.offset);
  });

  // ---- reading keys (hot path) ------------------------------------------------------------

  // Producers repeat the same few baggage values, so a value's key is parsed once and cached
  // (bounded). Only the plain `baggage` source is cached; alias configurations read every time.
  const cacheable = keys.sources.length === 1;
  const keyCache = new Map<string, string | undefined>();
  const recent: { bytes: Buffer; key: string | undefined }[] = [];
  let recentNext = 0;

  function keyOf(headers: KafkaMessage['headers']): string | undefined {
    if (!cacheable || !headers) return keys.read(headers, kafkaHeadersGetter);
    const v = headers.baggage;
    let raw: string;
    if (typeof v === 'string') raw = v;
    else if (Buffer.isBuffer(v)) {
      // Most messages repeat one of a few values: compare bytes before decoding a string.
      for (let i = 0; i < recent.length; i++) {
        const r = recent[i]!;
        if (r.bytes.length === v.length && r.bytes.equals(v)) return r.key;
      }
      raw = v.toString('utf8');
      const key = keyOfRaw(raw);
      if (key !== undefined || raw.indexOf(keys.baggageKey) === -1) {
        recent[recentNext] = { bytes: Buffer.from(v), key };
        recentNext = (recentNext + 1) % 8;
      }
      return key;
    } else if (v === undefined) {
      for (const k in headers)
        if (k.length === 7 && k.toLowerCase() === 'baggage') return keys.read(headers, kafkaHeadersGetter);
      return undefined;
    } else return keys.read(headers, kafkaHeadersGetter); // repeated header: arrays
    return keyOfRaw(raw);
  }

  function keyOfRaw(raw: string): string | undefined {
    const hit = keyCache.get(raw);
    if (hit !== undefined || keyCache.has(raw)) return hit;
    const key = keys.read({ baggage: raw }, kafkaHeadersGetter);
    // An absent key is cached only when the member name does not occur at all, so an invalid
    // key is still counted (and warned about) each time it is seen.
    if (key !== undefined || raw.indexOf(keys.baggageKey) === -1) {
      if (keyCache.size >= 1024) keyCache.clear();
      keyCache.set(raw, key);
    }
    return key;
  }

  // The handler's context: the active one plus the message's key (core reuses root + key).
  function contextFor(key: string | undefined): Context {
    return contextWithRoutingKey(activeContext(), key);
  }

  // ---- decisions -------------------------------------------------------------------------

  function decide(key: string | undefined, at: number | undefined): MessageDecision {
    return decideMessage({ table: routes.table, service: service!, sandbox, key, at });
  }

  function fallback(key: string | undefined): MessageDecision {
    const table = routes.table;
    if (table) return decideMessage({ table, service: service!, sandbox, key });
    return sandbox === undefined
      ? { action: 'process', owner: undefined }
      : { action: 'skip', owner: undefined };
  }

  /** The decision for one message, holding it (with heartbeats) while the view cannot decide. */
  async function settle(
    topic: string,
    partition: number,
    message: KafkaMessage,
    key: string | undefined,
    heartbeat: () => Promise<void>,
    first: WaitDecision,
  ): Promise<MessageDecision> {
    const at = timeOf(message);
    let d: MessageDecision = first;
    let reason = first.reason;
    stats.held++;
    counters.messagesHeld++;
    const deadline = Date.now() + holdTimeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        stats.holdTimeouts++;
        if (onHoldTimeout === 'decide-now') {
          logger().warn('branchline: hold timed out; deciding with the current route table', {
            topic,
            partition,
            offset: message.offset,
            reason,
          });
          return fallback(key);
        }
        throw new HoldTimeoutError(reason, topic, partition, message.offset, holdTimeoutMs);
      }
      await Promise.race([changed, sleep(Math.min(left, 1000))]);
      if (stopping) throw new HoldAbandoned();
      await heartbeat();
      d = decide(key, at);
      if (d.action !== 'wait') return d;
      reason = d.reason;
    }
  }

  // ---- handlers --------------------------------------------------------------------------

  function wrapEachMessage(handler: (p: EachMessagePayload) => Promise<void>) {
    const processIn = (payload: EachMessagePayload, key: string | undefined): Promise<void> => {
      stats.processed++;
      noteConsumed(sandbox, service);
      return runInContext(contextFor(key), () => handler(payload));
    };
    const held = async (payload: EachMessagePayload, key: string | undefined, first: WaitDecision) => {
      const d = await settle(
        payload.topic,
        payload.partition,
        payload.message,
        key,
        payload.heartbeat,
        first,
      );
      if (d.action === 'process') return processIn(payload, key);
      stats.skipped++;
      counters.messagesSkipped++;
    };
    // Not an async function: the common paths add no promise of their own.
    return (payload: EachMessagePayload): Promise<void> => {
      const { message } = payload;
      const key = keyOf(message.headers);
      // Hot path: a baseline consumer and a message without a key — nothing to decide.
      if (key === undefined && sandbox === undefined) {
        stats.processed++;
        noteConsumed(sandbox, service);
        return handler(payload);
      }
      const d = decide(key, timeOf(message));
      if (d.action === 'process') return processIn(payload, key);
      if (d.action === 'wait') return held(payload, key, d);
      stats.skipped++;
      counters.messagesSkipped++;
      return DONE;
    };
  }

  function wrapEachBatch(handler: (p: SelectiveEachBatchPayload) => Promise<void>) {
    return async (payload: EachBatchPayload): Promise<void> => {
      const { batch } = payload;
      const all = batch.messages;
      // `owned` stays the fetched array itself until the first skipped message (no copy in the
      // common case of a batch that is entirely this consumer's).
      let owned: KafkaMessage[] = all;
      for (let i = 0; i < all.length; i++) {
        const m = all[i]!;
        const key = keyOf(m.headers);
        let d = key === undefined && sandbox === undefined ? PROCESS : decide(key, timeOf(m));
        if (d.action === 'wait') d = await settle(batch.topic, batch.partition, m, key, payload.heartbeat, d);
        if (d.action === 'process') {
          if (owned !== all) owned.push(m);
        } else {
          if (owned === all) owned = all.slice(0, i);
          stats.skipped++;
          counters.messagesSkipped++;
        }
      }
      const last = all[all.length - 1];
      if (owned.length === 0) {
        if (last) payload.resolveOffset(last.offset);
        return;
      }
      stats.processed += owned.length;
      noteConsumed(sandbox, service, owned.length);

      let resolved = -1;
      const resolveOffset = (offset: string) => {
        const n = Number(offset);
        if (n > resolved) resolved = n;
        payload.resolveOffset(offset);
      };
      const runInMessageContext = <R>(message: KafkaMessage, fn: () => R): R =>
        runInContext(contextFor(keyOf(message.headers)), fn);
      // The handler sees only owned messages; the batch's own methods (lastOffset, offsetLag)
      // still describe the whole fetched batch.
      const view =
        owned === all ? batch : Object.create(batch, { messages: { value: owned, enumerable: true } });
      const wrapped: SelectiveEachBatchPayload = {
        ...payload,
        batch: view,
        resolveOffset,
        runInMessageContext,
        async forEachMessage(fn) {
          for (const m of owned) {
            if (!payload.isRunning() || payload.isStale()) break;
            await runInMessageContext(m, () => fn(m));
            resolveOffset(m.offset);
            await payload.heartbeat();
          }
        },
      };
      await runInContext(contextFor(undefined), () => handler(wrapped));
      if (owned === all) return;
      // Skipped messages are committed like processed ones: resolve the skipped run that follows
      // the last message the handler resolved (up to the next owned message it did not resolve).
      const next = owned.find((m) => Number(m.offset) > resolved);
      if (next === undefined) {
        if (last && Number(last.offset) > resolved) payload.resolveOffset(last.offset);
        return;
      }
      const before = Number(next.offset) - 1;
      if (before > resolved) {
        const prior = all.filter((m) => Number(m.offset) <= before).pop();
        if (prior && Number(prior.offset) > resolved) payload.resolveOffset(prior.offset);
      }
    };
  }

  // ---- sandbox start offsets ---------------------------------------------------------------

  async function subscribedTopicNames(admin: Admin): Promise<string[]> {
    const names = topics.filter((t): t is string => typeof t === 'string');
    const patterns = topics.filter((t): t is RegExp => t instanceof RegExp);
    if (patterns.length) {
      for (const t of await admin.listTopics()) if (patterns.some((re) => re.test(t))) names.push(t);
    }
    return [...new Set(names)];
  }

  /**
   * When this sandbox began owning messages of this service (registry time). A sandbox the view
   * does not show yet cannot have been created before the view's `completeUntil`.
   */
  function activationTime(table: RouteTable): number {
    const now = Date.now();
    const s = table.sandbox(sandbox!);
    if (!s) return Math.min(now, table.completeUntil);
    const hist = s.history?.[service!];
    if (hist?.length) return Math.min(now, ...hist.map((iv) => iv.from));
    if (s.overrides?.[service!]) return Math.min(now, s.createdAt ?? 0);
    return now;
  }

  /**
   * A sandbox group that has no committed offset for a partition starts at the offset of the
   * sandbox's activation time (minus a margin), not at "latest": messages it owns may already
   * be waiting, and the baseline consumer has skipped them.
   */
  async function prepareSandboxOffsets(): Promise<{ resumed: boolean }> {
    const table = await routes.ready(holdTimeoutMs);
    if (!table)
      throw new Error(
        `branchline: sandbox consumer ${groupId} has no route table after ${holdTimeoutMs} ms, so it cannot know where its sandbox's messages start; check BRANCHLINE_REGISTRY / BRANCHLINE_ROUTES`,
      );
    const admin = kafka.admin();
    await admin.connect();
    let resumed = false;
    try {
      const names = await subscribedTopicNames(admin);
      if (names.length === 0) return { resumed };
      const startAt = Math.max(0, activationTime(table) - startMarginMs);
      const current = await admin.fetchOffsets({ groupId, topics: names });
      // kafkajs's setOffsets runs a short-lived member of the group and waits for one fetch
      // (about 5 s). It happens once, the first time a sandbox group runs; one topic at a time,
      // since two such members would find the group busy.
      for (const t of current) {
        const missing = t.partitions.filter((p) => Number(p.offset) < 0).map((p) => p.partition);
        if (missing.length < t.partitions.length) resumed = true;
        if (missing.length === 0) continue;
        const byTime = await admin.fetchTopicOffsetsByTimestamp(t.topic, startAt);
        const partitions = byTime.filter((p) => missing.includes(p.partition));
        await admin.setOffsets({ groupId, topic: t.topic, partitions });
        logger().debug('branchline: sandbox consumer group starts at its activation time', {
          groupId,
          topic: t.topic,
          startAt,
          partitions,
        });
      }
    } finally {
      await admin.disconnect().catch(() => {});
    }
    return { resumed };
  }

  // ---- drain on delete ---------------------------------------------------------------------

  let seenLive = false;
  let draining = false;
  let resolveDrained!: (r: DrainResult) => void;
  const drained = new Promise<DrainResult>((r) => {
    resolveDrained = r;
  });

  function onTable(table: RouteTable): void {
    signal();
    if (sandbox === undefined || !drainOnDelete || draining || stopping) return;
    if (table.sandbox(sandbox)) seenLive = true;
    else if (seenLive) startDrain(table);
  }
  let unsubscribe: (() => void) | undefined = routes.subscribe(onTable);

  function startDrain(table: RouteTable): void {
    draining = true;
    // Every change before completeUntil is in this view, so the deletion happened before it:
    // every message this sandbox owns has an earlier time.
    const until = Number.isFinite(table.completeUntil) ? table.completeUntil : Date.now();
    logger().info('branchline: sandbox deleted; draining what it owns before leaving', { groupId, until });
    drain(until).catch((err) => {
      logger().error('branchline: drain of a deleted sandbox failed; the consumer keeps running', {
        groupId,
        err: String(err),
      });
      draining = false;
    });
  }

  async function drain(until: number): Promise<void> {
    const wait = until + drainGraceMs - Date.now();
    if (wait > 0) await sleep(wait);
    const admin = kafka.admin();
    await admin.connect();
    try {
      // Offsets at a wall time past `until`: every message appended later has a later time
      // (exactly so for LogAppendTime topics), so nothing it owns lies beyond them.
      const targets = new Map<string, number>();
      for (const topic of await subscribedTopicNames(admin))
        for (const p of await admin.fetchTopicOffsets(topic))
          targets.set(tp(topic, p.partition), Number(p.high));
      for (const t of await admin.fetchOffsets({
        groupId,
        topics: [...new Set([...targets.keys()].map((k) => k.slice(0, k.lastIndexOf(':'))))],
      }))
        for (const p of t.partitions)
          if (!committed.has(tp(t.topic, p.partition))) committed.set(tp(t.topic, p.partition), p.offset);
      const mine = () => {
        if (!assignment) return [...targets.keys()];
        const out: string[] = [];
        for (const [topic, parts] of assignment) for (const p of parts) out.push(tp(topic, p));
        return out;
      };
      const reached = () =>
        mine().every((k) => {
          const target = targets.get(k) ?? 0;
          return target <= 0 || Number(committed.get(k) ?? -1) >= target;
        });
      while (!reached()) {
        if (stopping) return;
        await sleep(200);
      }
      const offsets: Record<string, string> = {};
      for (const k of mine()) offsets[k] = committed.get(k) ?? '-1';
      // Leave outside any handler (disconnect waits for the running handler to return).
      await disconnect();
      let groupDeleted = false;
      if (deleteGroupOnDrain) groupDeleted = (await deleteGroups(admin, [groupId])).includes(groupId);
      const result: DrainResult = { groupId, sandbox: sandbox!, until, offsets, groupDeleted };
      logger().info('branchline: deleted sandbox drained; consumer left', { ...result });
      resolveDrained(result);
      safeHook('onDrained', onDrained, result);
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  // ---- the consumer --------------------------------------------------------------------------

  async function subscribe(sub: ConsumerSubscribeTopics | ConsumerSubscribeTopic): Promise<void> {
    const list = 'topics' in sub ? sub.topics : [sub.topic];
    topics.push(...list);
    // A partition a sandbox group has no offset for (one added later) is read from its start:
    // reading and skipping is safe, starting at "latest" could lose owned messages.
    if (sandbox !== undefined) return inner.subscribe({ topics: list, fromBeginning: true });
    return inner.subscribe(sub);
  }

  async function run(config: SelectiveRunConfig = {}): Promise<void> {
    const { eachMessage, eachBatch, ...rest } = config;
    if (!eachMessage && !eachBatch)
      throw new TypeError('branchline: consumer.run needs eachMessage or eachBatch');
    stopping = false;
    unsubscribe ??= routes.subscribe(onTable);
    let resumed = false;
    if (sandbox !== undefined) ({ resumed } = await prepareSandboxOffsets());
    const runConfig = {
      ...rest,
      ...(eachMessage ? { eachMessage: wrapEachMessage(eachMessage) } : {}),
      ...(eachBatch && !eachMessage ? { eachBatch: wrapEachBatch(eachBatch) } : {}),
    };
    // The fetch loop inherits the context run() is called in; make sure it carries no key.
    const start = () => inner.run(runConfig);
    await (getRoutingKey() === undefined ? start() : runInContext(contextFor(undefined), start));
    const table = routes.table;
    if (sandbox !== undefined && table && drainOnDelete && !draining) {
      if (table.sandbox(sandbox)) seenLive = true;
      // Restarted after its sandbox was deleted (e.g. it crashed mid-drain): finish the drain.
      else if (resumed) startDrain(table);
    }
  }

  async function stop(): Promise<void> {
    stopping = true;
    signal();
    await inner.stop();
  }

  async function disconnect(): Promise<void> {
    stopping = true;
    signal();
    unsubscribe?.();
    unsubscribe = undefined;
    await inner.disconnect();
  }

  return {
    ...inner,
    subscribe,
    run,
    stop,
    disconnect,
    groupId,
    service,
    sandbox,
    stats,
    drained,
    isDraining: () => draining,
  };
}
