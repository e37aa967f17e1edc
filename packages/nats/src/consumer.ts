import {
  checkDurationMs,
  createMessageSelector,
  type FinalSelection,
  HoldAbandonedError,
  HoldTimeoutError,
  logger,
  type OwnersChange,
  safeHook,
} from '@branchline/core/transport';
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  RetentionPolicy,
} from '@nats-io/jetstream';
import { natsHeadersGetter } from './headers.js';
import { sandboxDurableName } from './names.js';
import type {
  DrainResult,
  MessageHandler,
  SelectiveConsumer,
  SelectiveConsumerOptions,
  SelectiveConsumerStats,
} from './types.js';

const CONSUMER_NOT_FOUND = 10014;
/** How many stream sequences a consumer remembers as processed and acknowledged. */
const REMEMBERED_ACKS = 20_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A message's time: the JetStream server's timestamp, ms. */
export function messageTimeMs(m: JsMsg): number {
  return Math.floor(m.info.timestampNanos / 1e6);
}

/** Errors worth retrying: timeouts and connection trouble, not answers from the server. */
function isTransient(err: unknown): boolean {
  if (err instanceof JetStreamApiError) return false;
  const name = (err as { name?: string })?.name ?? '';
  return (
    /Timeout|Connection|RequestError|NoResponders/i.test(name) ||
    /timeout|disconnect|reconnect/i.test(String(err))
  );
}

function isNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === CONSUMER_NOT_FOUND;
}

/**
 * A JetStream consumer that processes only the messages this process owns. Every consumer
 * (baseline and each sandbox's) reads the stream through its own durable and decides each
 * message with core's `MessageSelector`, by the message's server timestamp against the
 * registry's ownership history: it acknowledges what another consumer owns and processes what
 * it owns. A sandbox durable starts at the sandbox's activation time (minus `startMarginMs`), so
 * it sees every message the baseline skipped for it; when the sandbox is deleted it processes
 * what it owned up to the deletion, then stops (and deletes its durable).
 */
export function createSelectiveConsumer(
  js: JetStreamClient,
  options: SelectiveConsumerOptions,
): SelectiveConsumer {
  if (typeof options !== 'object' || options === null)
    throw new TypeError('branchline: createSelectiveConsumer(js, options) needs an options object');
  const {
    stream,
    holdTimeoutMs = 30_000,
    onHoldTimeout = 'redeliver',
    startMarginMs = 60_000,
    drainOnDelete = true,
    drainGraceMs = 2_000,
    deleteDurableOnDrain = true,
    onDrained,
    consumerConfig = {},
    consumeOptions = {},
  } = options;
  if (typeof stream !== 'string' || stream.length === 0)
    throw new TypeError(`branchline: option stream must name a JetStream stream (got ${String(stream)})`);
  if (onHoldTimeout !== 'redeliver' && onHoldTimeout !== 'decide-now')
    throw new TypeError(
      `branchline: option onHoldTimeout must be "redeliver" or "decide-now" (got ${String(onHoldTimeout)})`,
    );
  checkDurationMs('startMarginMs', startMarginMs);
  checkDurationMs('drainGraceMs', drainGraceMs);
  const selector = createMessageSelector({
    service: options.service,
    sandbox: options.sandbox,
    routes: options.routes,
    runtime: options.runtime,
    holdTimeoutMs,
    backoff: options.backoff,
    transport: 'nats',
  });
  const { service, sandbox } = selector;
  // Validates the baseline name too (sandboxDurableName checks it).
  const sandboxName = sandbox === undefined ? undefined : sandboxDurableName(options.durable, sandbox);
  if (sandboxName === undefined) sandboxDurableName(options.durable, 'x');
  const durable = sandboxName ?? options.durable;
  const counts = { processed: 0, skipped: 0, failed: 0, duplicates: 0 };
  const stats: SelectiveConsumerStats = {
    get processed() {
      return counts.processed;
    },
    get skipped() {
      return counts.skipped;
    },
    get failed() {
      return counts.failed;
    },
    get duplicates() {
      return counts.duplicates;
    },
    get held() {
      return selector.stats.held;
    },
    get holdTimeouts() {
      return selector.stats.holdTimeouts;
    },
  };
  const baseline = sandbox === undefined;
  const readKey = selector.baggageOnly
    ? (m: JsMsg) => {
        const h = m.headers;
        if (!h) return undefined;
        const v = natsHeadersGetter.get(h, 'baggage');
        if (v === undefined) return undefined;
        return selector.keyFromBaggage(typeof v === 'string' ? v : v.join(','));
      }
    : (m: JsMsg) => selector.readKey(m.headers, natsHeadersGetter);

  let jsm: JetStreamManager | undefined;
  let messages: ConsumerMessages | undefined;
  let loop: Promise<void> | undefined;
  let stopping = false;
  const held = new Set<Promise<void>>();
  let stopSignal = new AbortController();
  let draining = false;
  let resolveDrained!: (r: DrainResult) => void;
  const drained = new Promise<DrainResult>((res) => {
    resolveDrained = res;
  });

  // ---- per message --------------------------------------------------------------------------

  // Acknowledgements are sent together once the messages at hand are handled (one socket write
  // for many instead of one each): the client flushes on every microtask checkpoint otherwise.
  let acks: JsMsg[] = [];
  let ackTimer: NodeJS.Immediate | undefined;
  function flushAcks(): void {
    ackTimer = undefined;
    const batch = acks;
    acks = [];
    for (const m of batch) m.ack();
  }
  function ack(m: JsMsg): void {
    acks.push(m);
    ackTimer ??= setImmediate(flushAcks);
  }

  // JetStream delivers at least once: an acknowledgement lost with a connection makes it deliver
  // a processed message again, and some nats-server 2.9/2.10 releases deliver a message they
  // redelivered once more with delivery count 1 (fixed upstream in nats-server PR 5305), so `redelivered` does not
  // tell. The stream sequences this consumer processed are remembered (the latest
  // REMEMBERED_ACKS), and so are the ones still held or running in the background.
  const processedSeqs = new Set<number>();
  const inFlight = new Map<number, Promise<void>>();
  function remember(seq: number): void {
    processedSeqs.add(seq);
    if (processedSeqs.size > REMEMBERED_ACKS) {
      const oldest = processedSeqs.values().next().value;
      if (oldest !== undefined) processedSeqs.delete(oldest);
    }
  }
  function acked(m: JsMsg): void {
    remember(m.seq);
    ack(m);
  }

  const where = (m: JsMsg) => `${stream}/${durable}#${m.seq}`;

  async function settle(m: JsMsg, key: string | undefined, at: number): Promise<FinalSelection | undefined> {
    try {
      return await selector.hold(key, at, {
        signal: stopSignal.signal,
        heartbeat: () => m.working(),
        onTimeout: onHoldTimeout === 'decide-now' ? 'decide-now' : 'error',
        where: where(m),
      });
    } catch (err) {
      if (err instanceof HoldTimeoutError) {
        const delay = selector.retryDelayMs(m.info.deliveryCount - 1);
        logger().warn('branchline: route view still cannot decide a message; JetStream redelivers it', {
          where: where(m),
          delayMs: delay,
          reason: err.reason,
        });
        m.nak(delay);
        return undefined;
      }
      if (err instanceof HoldAbandonedError) {
        m.nak();
        return undefined;
      }
      throw err;
    }
  }

  function failed(m: JsMsg, err: unknown): void {
    counts.failed++;
    const delay = selector.retryDelayMs(m.info.deliveryCount - 1);
    logger().error('branchline: message handler threw; JetStream redelivers the message', {
      where: where(m),
      delayMs: delay,
      err: String(err),
    });
    m.nak(delay);
  }

  // Not async: a handler that returns no promise is acknowledged in the same tick, so the
  // client batches acknowledgements into few socket writes, as a plain consumer's are.
  function processOwned(
    m: JsMsg,
    key: string | undefined,
    handler: MessageHandler,
  ): Promise<void> | undefined {
    counts.processed++;
    selector.noteProcessed();
    let r: unknown;
    try {
      r = selector.run(key, () => handler(m));
    } catch (err) {
      failed(m, err);
      return undefined;
    }
    if (r instanceof Promise)
      return r.then(
        () => acked(m),
        (err) => failed(m, err),
      );
    acked(m);
    return undefined;
  }

  function background(m: JsMsg, p: Promise<void>): void {
    held.add(p);
    inFlight.set(m.seq, p);
    p.catch((err) => {
      logger().error('branchline: deciding a held message failed; JetStream redelivers it', {
        where: where(m),
        err: String(err),
      });
    }).finally(() => {
      held.delete(p);
      if (inFlight.get(m.seq) === p) inFlight.delete(m.seq);
    });
  }

  function onMessage(m: JsMsg, handler: MessageHandler): Promise<void> | undefined {
    const earlier = inFlight.get(m.seq);
    if (earlier) {
      // The same message is still held (or running) here: this delivery waits for that one's
      // outcome, then is acknowledged (processed) or decided anew (it was given back).
      m.working();
      background(
        m,
        earlier
          .catch(() => undefined)
          .then(() => {
            if (stopping) m.nak();
            else return handle(m, handler);
          }),
      );
      return undefined;
    }
    return handle(m, handler);
  }

  function handle(m: JsMsg, handler: MessageHandler): Promise<void> | undefined {
    if (processedSeqs.has(m.seq)) {
      // Delivered again after this consumer processed it: acknowledged, not processed twice.
      counts.duplicates++;
      logger().debug('branchline: JetStream delivered a processed message again; acknowledged it', {
        where: where(m),
        deliveryCount: m.info.deliveryCount,
      });
      ack(m);
      return undefined;
    }
    const key = readKey(m);
    if (key === undefined && baseline) return processOwned(m, key, handler);
    const at = messageTimeMs(m);
    const d = selector.decide(key, at);
    if (d.action === 'hold') {
      // A held message waits on its own: the messages behind it are decided meanwhile.
      const p = settle(m, key, at).then((settled) => {
        if (settled?.action === 'process') return processOwned(m, key, handler);
        if (settled) skip(m);
      });
      background(m, p);
      return undefined;
    }
    if (d.action === 'process') return processOwned(m, key, handler);
    skip(m);
    return undefined;
  }

  function skip(m: JsMsg): void {
    counts.skipped++;
    selector.noteSkipped();
    ack(m);
  }

  // ---- durables -----------------------------------------------------------------------------

  async function manager(): Promise<JetStreamManager> {
    jsm ??= await js.jetstreamManager();
    return jsm;
  }

  async function ensureDurable(): Promise<void> {
    const m = await manager();
    const info = await m.streams.info(stream);
    if (info.config.retention === RetentionPolicy.Workqueue)
      throw new Error(
        `branchline: stream ${stream} has work-queue retention: an acknowledgement by one consumer removes the message for all, so sandbox consumers would lose theirs. Use retention "limits" (see docs/nats.md)`,
      );
    if (info.config.retention === RetentionPolicy.Interest)
      logger().warn(
        'branchline: stream has interest retention: a sandbox durable created after a message was acknowledged by the others never sees it; use retention "limits"',
        { stream },
      );
    try {
      await m.consumers.info(stream, durable);
      return; // resumes where it stopped
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const config: Partial<ConsumerConfig> = {
      ...consumerConfig,
      durable_name: durable,
      ack_policy: AckPolicy.Explicit,
    };
    if (!baseline) {
      const table = await selector.ready(holdTimeoutMs);
      if (!table)
        throw new Error(
          `branchline: sandbox consumer ${durable} has no route table after ${holdTimeoutMs} ms, so it cannot know where its sandbox's messages start; check BRANCHLINE_REGISTRY / BRANCHLINE_ROUTES`,
        );
      const startAt = Math.max(0, selector.activationTime(table) - startMarginMs);
      config.deliver_policy = DeliverPolicy.StartTime;
      config.opt_start_time = new Date(startAt).toISOString();
      delete config.opt_start_seq;
    }
    try {
      await m.consumers.add(stream, config);
      logger().debug('branchline: created JetStream durable', { stream, durable, config });
    } catch (err) {
      // Another replica created it first: use it.
      await m.consumers.info(stream, durable).catch(() => {
        throw err;
      });
    }
  }

  // ---- drain on delete ----------------------------------------------------------------------

  async function drain(until: number): Promise<void> {
    const wait = until + drainGraceMs - Date.now();
    if (wait > 0) await sleep(wait);
    const m = await manager();
    // Every message stamped before `until` has a sequence at most this one.
    const target = (await m.streams.info(stream)).state.last_seq;
    let reached = 0;
    for (;;) {
      if (stopping) return;
      const ci = await m.consumers.info(stream, durable);
      reached = ci.ack_floor.stream_seq;
      if (reached >= target || (ci.num_pending === 0 && ci.num_ack_pending === 0)) break;
      await sleep(100);
    }
    await stop();
    let durableDeleted = false;
    if (deleteDurableOnDrain) {
      try {
        durableDeleted = await m.consumers.delete(stream, durable);
      } catch (err) {
        if (isNotFound(err)) durableDeleted = true;
        else
          logger().warn('branchline: could not delete a drained sandbox durable', {
            durable,
            err: String(err),
          });
      }
    }
    const result: DrainResult = {
      durable,
      sandbox: sandbox!,
      until,
      streamSequence: Math.max(reached, target),
      durableDeleted,
    };
    logger().info('branchline: deleted sandbox drained; consumer stopped', { ...result });
    resolveDrained(result);
    safeHook('onDrained', onDrained, result);
  }

  function onOwners(change: OwnersChange): void {
    if (stopping || draining) return;
    const mine = change.removed.find((o) => o.sandbox === sandbox);
    if (mine?.deleted) startDrain(mine.until!);
  }

  function startDrain(until: number): void {
    if (draining) return;
    draining = true;
    logger().info('branchline: sandbox deleted; processing what it owns before stopping', { durable, until });
    void (async () => {
      // A timeout or a reconnect must not leave the sandbox's messages behind: retry until done.
      for (let attempt = 0; !stopping; attempt++) {
        try {
          await drain(until);
          return;
        } catch (err) {
          const delay = selector.retryDelayMs(attempt);
          logger().warn('branchline: drain of a deleted sandbox failed; retrying', {
            durable,
            delayMs: delay,
            err: String(err),
          });
          await sleep(delay);
        }
      }
    })();
  }
  let unsubscribe: (() => void) | undefined;

  // ---- the consumer -------------------------------------------------------------------------

  // The client waits for a deleted durable to come back; say so once, and what to do.
  function watchStatus(iter: ConsumerMessages): void {
    void (async () => {
      let told = false;
      for await (const st of iter.status()) {
        if (told || stopping || draining) continue;
        if (st.type === 'consumer_deleted' || st.type === 'consumer_not_found') {
          told = true;
          logger().error(
            "branchline: the JetStream durable was deleted outside this consumer; nothing is consumed until it exists again. Restart the consumer to create it (with consumerConfig; by default from the stream's first message)",
            { stream, durable },
          );
        }
      }
    })().catch(() => {});
  }

  async function run(handler: MessageHandler): Promise<void> {
    let attempt = 0;
    while (!stopping) {
      try {
        const c = await js.consumers.get(stream, durable);
        const iter = await c.consume({ max_messages: 256, ...consumeOptions } as Parameters<
          typeof c.consume
        >[0]);
        messages = iter;
        attempt = 0;
        watchStatus(iter);
        for await (const m of iter) {
          if (stopping) {
            m.nak();
            break;
          }
          const pending = onMessage(m, handler);
          if (pending) await pending;
        }
        // The client ended the iteration without an error: look again after a pause.
        if (!stopping) await sleep(selector.retryDelayMs(attempt++));
      } catch (err) {
        if (stopping) break;
        if (isNotFound(err) && !draining) {
          // Recreating it would start over (or skip ahead): a person decides.
          logger().error(
            'branchline: the JetStream durable no longer exists (deleted outside this consumer); consuming stopped. Restarting the consumer creates it again with consumerConfig (by default delivering the stream from its first message)',
            { stream, durable },
          );
          stopping = true;
          break;
        }
        const delay = selector.retryDelayMs(attempt++);
        logger().warn('branchline: JetStream consume stopped; starting it again', {
          durable,
          delayMs: delay,
          err: String(err),
        });
        await sleep(delay);
      }
    }
  }

  async function stop(): Promise<void> {
    stopping = true;
    stopSignal.abort();
    unsubscribe?.();
    unsubscribe = undefined;
    messages?.stop();
    await loop;
    await Promise.allSettled([...held]);
    if (ackTimer) clearImmediate(ackTimer);
    flushAcks();
    loop = undefined;
  }

  return {
    durable,
    stream,
    service,
    sandbox,
    stats,
    drained,
    isDraining: () => draining,
    async consume(handler) {
      if (typeof handler !== 'function') throw new TypeError('branchline: consume(handler) needs a function');
      if (loop) throw new Error(`branchline: consumer ${durable} is already consuming; stop() it first`);
      stopping = false;
      if (stopSignal.signal.aborted) stopSignal = new AbortController();
      // A timeout or a reconnect in progress is retried; a configuration problem is not.
      for (let attempt = 0; ; attempt++) {
        try {
          await ensureDurable();
          break;
        } catch (err) {
          if (!isTransient(err) || attempt >= 8) throw err;
          const delay = selector.retryDelayMs(attempt);
          logger().warn('branchline: could not reach JetStream to set up the consumer; retrying', {
            durable,
            delayMs: delay,
            err: String(err),
          });
          await sleep(delay);
        }
      }
      if (!baseline && drainOnDelete) {
        unsubscribe = selector.onOwnersChanged(onOwners);
        // Restarted after its sandbox was deleted (or started for one that does not exist): it
        // processes what it still owns in its durable, then stops.
        const table = selector.table;
        if (table && !table.sandbox(sandbox!))
          startDrain(Number.isFinite(table.completeUntil) ? table.completeUntil : Date.now());
      }
      loop = run(handler);
    },
    stop,
  };
}
