import {
  bufferTextMapGetter,
  type CarrierGetter,
  type FinalSelection,
  type HoldSelection,
  HoldTimeoutError,
  headerValueToString,
  logger,
} from '@branchline/core';
import type { ConsumeMessage } from 'amqplib';
import { stopConsumer } from './connection.js';
import type { SelectiveConsumerImpl } from './consumer.js';
import { RETURNED_HEADER, TIME_HEADER } from './headers.js';
import {
  declareSandboxQueue,
  movedHeaders,
  restoreOriginal,
  SANDBOX_EXCHANGE,
  sandboxQueueName,
} from './queues.js';
import { noop, type Session, TRACE, trace } from './session.js';

// ---- deliveries: each message is processed, moved to its owner's queue, or held ---------------

type Headers = Record<string, unknown> | undefined;
const headersGetter = bufferTextMapGetter as CarrierGetter<Headers>;

/** The message's time: the publisher's `x-branchline-time` stamp, else the AMQP timestamp, ms. */
export function messageTime(msg: ConsumeMessage): number | undefined {
  const v = msg.properties.headers?.[TIME_HEADER];
  if (typeof v === 'number') return v;
  if (v !== undefined && v !== null) {
    const n = Number(headerValueToString(v));
    if (Number.isFinite(n)) return n;
  }
  const ts = msg.properties.timestamp as unknown;
  // AMQP's timestamp is seconds by the spec; many publishers put milliseconds there.
  if (typeof ts === 'number' && ts > 0) return ts < 1e11 ? ts * 1000 : ts;
  return undefined;
}

function keyOf(c: SelectiveConsumerImpl, headers: Headers): string | undefined {
  // The common carrier: one `baggage` string, parsed once per distinct value.
  if (headers !== undefined && c.selector.baggageOnly) {
    const v = headers.baggage;
    if (typeof v === 'string') return c.selector.keyFromBaggage(v);
  }
  return c.selector.readKey(headers, headersGetter);
}

export function onDelivery(c: SelectiveConsumerImpl, session: Session, msg: ConsumeMessage | null): void {
  if (msg === null) {
    if (TRACE) trace('cancelled-by-broker', undefined, { queue: c.queue });
    // The broker cancelled us: the queue was deleted.
    if (c.sandbox !== undefined) void stopConsumer(c, 'sandbox-queue-deleted');
    else session.model.close().catch(noop);
    return;
  }
  const headers = msg.properties.headers;
  if (c.sandbox !== undefined) {
    // A sandbox queue holds only what its sandbox owns: everything in it is processed.
    restoreOriginal(msg);
    process(c, session, msg, keyOf(c, headers));
    return;
  }
  if (headers !== undefined && headers[RETURNED_HEADER] !== undefined) {
    // Returned from a deleted sandbox's queue: the baseline processes it, no second decision.
    restoreOriginal(msg);
    process(c, session, msg, keyOf(c, headers));
    return;
  }
  const key = keyOf(c, headers);
  if (key === undefined) {
    process(c, session, msg, undefined);
    return;
  }
  const at = messageTime(msg);
  const d = c.selector.decide(key, at);
  if (d.action === 'hold') hold(c, session, msg, key, at, d);
  else act(c, session, msg, key, d);
}

/** A baseline consumer's decision, carried out: process it, or move it to its owner's queue. */
function act(
  c: SelectiveConsumerImpl,
  session: Session,
  msg: ConsumeMessage,
  key: string,
  d: FinalSelection,
): void {
  if (d.action === 'process') {
    process(c, session, msg, key);
    return;
  }
  const owner = d.owner;
  if (owner === undefined || !c.selector.owners.has(owner)) {
    // The owner at the message's time no longer routes this service here: its messages
    // belong to the baseline now (as those waiting in its queue are returned).
    c.stats.ownerGone++;
    process(c, session, msg, key);
    return;
  }
  move(c, session, msg, key, owner);
}

/**
 * The route view does not reach the message's time yet: wait for it (bounded by holdTimeoutMs),
 * then decide. A hold that times out requeues the message; one whose channel died or whose
 * consumer stopped leaves it to the broker's redelivery.
 */
function hold(
  c: SelectiveConsumerImpl,
  session: Session,
  msg: ConsumeMessage,
  key: string,
  at: number | undefined,
  first: HoldSelection,
): void {
  c.stats.held++;
  const p = c.selector
    .hold(key, at, { first, signal: session.holds.signal, where: `a message of ${c.queue}` })
    .then(
      (d) => {
        if (session.open && !c.closing) act(c, session, msg, key, d);
        else if (session.open) session.channel.nack(msg, false, true);
      },
      (err) => {
        if (err instanceof HoldTimeoutError) {
          c.stats.holdTimeouts++;
          logger().warn(
            'branchline: held a message longer than holdTimeoutMs because the route view does not cover its time; requeueing it (is the registry reachable?)',
            { queue: c.queue, key, at, holdTimeoutMs: c.selector.holdTimeoutMs },
          );
        }
        if (session.open) session.channel.nack(msg, false, true);
      },
    )
    .finally(() => {
      c.holds.delete(p);
    });
  c.holds.add(p);
}

function move(
  c: SelectiveConsumerImpl,
  session: Session,
  msg: ConsumeMessage,
  key: string,
  owner: string,
): void {
  const queue = sandboxQueueName(c.baselineQueue, owner);
  let set = c.moves.get(owner);
  if (!set) {
    set = new Set();
    c.moves.set(owner, set);
  }
  const p = moveTo(c, session, msg, key, queue).finally(() => {
    set.delete(p);
  });
  set.add(p);
}

async function moveTo(
  c: SelectiveConsumerImpl,
  session: Session,
  msg: ConsumeMessage,
  key: string,
  queue: string,
): Promise<void> {
  const mover = session.mover!;
  try {
    let declared = c.declared.get(queue);
    if (!declared) {
      declared = declareSandboxQueue(mover.channel, queue, c.options.sandboxQueueArguments);
      c.declared.set(queue, declared);
      // Only a declaration that failed is tried again; see `declared`.
      declared.catch(() => {
        if (c.declared.get(queue) === declared) c.declared.delete(queue);
      });
      if (TRACE) trace('declare', msg, { queue });
    }
    await declared;
    const result = await mover.send(SANDBOX_EXCHANGE, queue, msg, movedHeaders(msg, c.baselineQueue));
    if (TRACE) trace('move', msg, { queue, result, open: session.open, redelivered: msg.fields.redelivered });
    if (!session.open) return; // the original is redelivered; the copy carries no mark, see docs
    if (result === 'routed') {
      session.channel.ack(msg);
      c.stats.moved++;
      c.selector.noteSkipped();
    } else {
      // The owner's queue is gone or unbound: its sandbox was deleted after our view was taken.
      c.stats.unroutableMoves++;
      process(c, session, msg, key);
    }
  } catch (err) {
    if (TRACE) trace('move-failed', msg, { queue, err: String(err) });
    if (session.open) {
      logger().warn('branchline: could not move a message to its sandbox queue; requeueing it', {
        queue,
        err: String(err),
      });
      session.channel.nack(msg, false, true);
    }
  }
}

function process(
  c: SelectiveConsumerImpl,
  session: Session,
  msg: ConsumeMessage,
  key: string | undefined,
): void {
  if (TRACE) trace('process', msg, { queue: c.queue, open: session.open });
  c.stats.processed++;
  c.selector.noteProcessed();
  c.handlersInFlight++;
  let result: unknown;
  try {
    // The application's propagator restores its trace context and baggage; the key is added.
    const base = c.selector.extractContext(msg.properties.headers, headersGetter);
    result = c.selector.run(key, () => c.onMessage(msg, session.channel), base);
  } catch (err) {
    settle(c, session, msg, err, true);
    return;
  }
  if (result && typeof (result as Promise<void>).then === 'function') {
    (result as Promise<void>).then(
      () => settle(c, session, msg, undefined, false),
      (err) => settle(c, session, msg, err, true),
    );
  } else {
    settle(c, session, msg, undefined, false);
  }
}

function settle(
  c: SelectiveConsumerImpl,
  session: Session,
  msg: ConsumeMessage,
  err: unknown,
  failed: boolean,
): void {
  c.handlersInFlight--;
  if (failed) logger().error('branchline: the message handler threw', { queue: c.queue, err: String(err) });
  if (!c.options.autoAck || !session.open) return;
  try {
    if (failed) session.channel.nack(msg, false, c.options.requeueOnError === true);
    else session.channel.ack(msg);
  } catch {
    // The channel closed meanwhile; the broker redelivers the message.
  }
}
