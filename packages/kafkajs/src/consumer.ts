import {
  checkDurationMs,
  createMessageSelector,
  getRoutingKey,
  type OwnersChange,
  type RouteTable,
  runInContext,
} from '@branchline/core';
import type { ConsumerSubscribeTopic, ConsumerSubscribeTopics, Kafka } from 'kafkajs';
import { createSettle } from './decisions.js';
import { createDrainer, tp } from './drain.js';
import { sandboxGroupId } from './groups.js';
import { wrapEachBatch, wrapEachMessage } from './handlers.js';
import { kafkaKeyReader } from './keys.js';
import { prepareSandboxOffsets } from './start-offsets.js';
import type { SelectiveConsumer, SelectiveConsumerOptions, SelectiveRunConfig } from './types.js';

export { HoldTimeoutError } from './decisions.js';

const DEFAULTS = {
  holdTimeoutMs: 30_000,
  startMarginMs: 60_000,
  drainGraceMs: 2_000,
};

/**
 * A kafkajs consumer that processes only the messages this process owns: the baseline consumer
 * of service S processes a message unless a sandbox overriding S owned its key at the message's
 * time; the consumer of sandbox X processes only what X owned then. Both decide from the same
 * data (the message's timestamp against the registry's recorded history), so they agree even
 * when their views of the registry lag behind each other; a view that does not reach the
 * message's time yet holds the message instead of guessing. The decisions are core's
 * `MessageSelector`; this file adds Kafka's consumer groups, start offsets and drains.
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
  checkDurationMs('startMarginMs', startMarginMs);
  checkDurationMs('drainGraceMs', drainGraceMs);
  if (onHoldTimeout !== 'error' && onHoldTimeout !== 'decide-now')
    throw new TypeError(
      `branchline: option onHoldTimeout must be "error" or "decide-now" (got ${String(onHoldTimeout)})`,
    );

  // The process-wide runtime (one registry watch for every consumer and middleware) unless the
  // options name another identity or route source.
  const selector = createMessageSelector({
    service: serviceOption,
    sandbox: sandboxOption,
    routes: routesOption,
    runtime: runtimeOption,
    holdTimeoutMs,
    transport: 'kafkajs',
  });
  const { service, sandbox } = selector;
  const groupId = sandbox === undefined ? options.groupId : sandboxGroupId(options.groupId, sandbox);
  const inner = kafka.consumer({ ...consumerConfig, groupId });

  // Ends every held message when the consumer stops; a new run gets a new one.
  let stopSignal = new AbortController();
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

  const deps = {
    selector,
    keyOf: kafkaKeyReader(selector),
    settle: createSettle(selector, onHoldTimeout, () => stopSignal.signal),
  };

  // ---- drain on delete ----------------------------------------------------------------------

  const drainer = createDrainer({
    kafka,
    groupId,
    sandbox: sandbox ?? '',
    topics,
    assignment: () => assignment,
    committed,
    stopping: () => stopping,
    disconnect: () => disconnect(),
    drainGraceMs,
    deleteGroupOnDrain,
    onDrained,
  });

  function onOwners(change: OwnersChange): void {
    if (stopping || drainer.isDraining()) return;
    // Every change before the view's completeUntil is in this view, so the deletion happened
    // before it: every message this sandbox owns has an earlier time.
    const mine = change.removed.find((o) => o.sandbox === sandbox);
    if (mine?.deleted) drainer.start(mine.until!);
  }
  const watchOwners = () =>
    sandbox !== undefined && drainOnDelete ? selector.onOwnersChanged(onOwners) : undefined;
  let unsubscribe = watchOwners();

  function drainUntil(table: RouteTable): number {
    return Number.isFinite(table.completeUntil) ? table.completeUntil : Date.now();
  }

  // ---- the consumer -------------------------------------------------------------------------

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
    if (stopSignal.signal.aborted) stopSignal = new AbortController();
    unsubscribe ??= watchOwners();
    let resumed = false;
    if (sandbox !== undefined)
      ({ resumed } = await prepareSandboxOffsets({ kafka, selector, groupId, topics, startMarginMs }));
    const runConfig = {
      ...rest,
      ...(eachMessage ? { eachMessage: wrapEachMessage(deps, eachMessage) } : {}),
      ...(eachBatch && !eachMessage ? { eachBatch: wrapEachBatch(deps, eachBatch) } : {}),
    };
    // The fetch loop inherits the context run() is called in; make sure it carries no key.
    const start = () => inner.run(runConfig);
    await (getRoutingKey() === undefined ? start() : runInContext(selector.contextFor(undefined), start));
    const table = selector.table;
    // Restarted after its sandbox was deleted (e.g. it crashed mid-drain): finish the drain.
    if (
      sandbox !== undefined &&
      table &&
      drainOnDelete &&
      !drainer.isDraining() &&
      !table.sandbox(sandbox) &&
      resumed
    )
      drainer.start(drainUntil(table));
  }

  async function stop(): Promise<void> {
    stopping = true;
    stopSignal.abort();
    await inner.stop();
  }

  async function disconnect(): Promise<void> {
    stopping = true;
    stopSignal.abort();
    unsubscribe?.();
    unsubscribe = undefined;
    selector.close();
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
    stats: selector.stats,
    drained: drainer.drained,
    isDraining: () => drainer.isDraining(),
  };
}
