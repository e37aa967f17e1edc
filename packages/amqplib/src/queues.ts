import { randomBytes } from 'node:crypto';
import { headerValueToString, logger } from '@branchline/core/transport';
import type { Channel, ChannelModel, ConfirmChannel, Message, Options } from 'amqplib';
import {
  EXCHANGE_HEADER,
  MOVE_ID_HEADER,
  MOVED_FROM_HEADER,
  REDELIVERED_HEADER,
  RETURNED_HEADER,
  ROUTING_KEY_HEADER,
} from './headers.js';
import type { ConnectTarget, SandboxQueueCleanupOptions, SandboxQueueCleanupResult } from './types.js';

/** AMQP limits queue names to 255 bytes. */
const MAX_QUEUE_NAME = 255;

/** The queue that holds the messages sandbox `sandbox` owns from baseline queue `queue`. */
export function sandboxQueueName(queue: string, sandbox: string): string {
  const name = `${queue}.sandbox.${sandbox}`;
  if (Buffer.byteLength(name) > MAX_QUEUE_NAME) {
    throw new RangeError(
      `branchline: the sandbox queue name "${name.slice(0, 80)}…" is longer than AMQP's 255 bytes; use a shorter baseline queue or sandbox name`,
    );
  }
  return name;
}

/** Sandbox queues are durable classic queues unless `args` say otherwise; every declarer uses the same. */
export function sandboxQueueOptions(args?: Record<string, unknown>): Options.AssertQueue {
  return args ? { durable: true, arguments: args } : { durable: true };
}

/**
 * The direct exchange baseline consumers move messages through; each sandbox queue is bound to
 * it under its own name. A cleanup unbinds the queue before draining it, so a replica with an
 * older view that still moves a message gets it back (mandatory return) instead of racing the
 * queue's deletion: a message routed to a queue as it is being deleted would be confirmed and lost.
 */
export const SANDBOX_EXCHANGE = 'branchline.sandbox';

/** Declares a sandbox queue and its binding (idempotent). */
export async function declareSandboxQueue(
  ch: Channel,
  queue: string,
  args?: Record<string, unknown>,
): Promise<void> {
  await ch.assertExchange(SANDBOX_EXCHANGE, 'direct', { durable: true });
  await ch.assertQueue(queue, sandboxQueueOptions(args));
  await ch.bindQueue(queue, SANDBOX_EXCHANGE, queue);
}

/** Opens a connection to `target` (a URL, amqplib connect options, or a function that connects). */
export async function connectTo(target: ConnectTarget, socketOptions?: unknown): Promise<ChannelModel> {
  if (typeof target === 'function') return target();
  const amqp = (await import('amqplib')) as unknown as {
    connect?: (u: unknown, o?: unknown) => Promise<ChannelModel>;
    default?: { connect: (u: unknown, o?: unknown) => Promise<ChannelModel> };
  };
  const connect = amqp.connect ?? amqp.default?.connect;
  if (!connect) throw new Error('branchline: could not load amqplib; install it next to @branchline/amqplib');
  return connect(target, socketOptions);
}

export function errorCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

const noop = () => {};
// Per-message tracing costs an object per message, so it is decided once, at load.
const TRACE = process.env.BRANCHLINE_LOG_LEVEL === 'debug';

const COALESCED = Symbol.for('branchline.amqp.coalescedWrites');

/**
 * amqplib hands the socket one frame at a time (a publish is three frames, an ack one), and an
 * uncorked socket turns each into a write system call — measured as 38% of a moving baseline
 * consumer's CPU. Corking at the first write of a tick and uncorking on the next tick sends the
 * same bytes, in the same order, in one `writev` per tick. Backpressure is kept: a corked
 * socket still reports a full buffer, and amqplib waits for `drain` as before.
 */
export function coalesceWrites(model: ChannelModel): void {
  const socket = (model as unknown as { connection?: { stream?: unknown } }).connection?.stream as
    | (NodeJS.WritableStream & { cork(): void; uncork(): void; [COALESCED]?: true })
    | undefined;
  if (!socket || typeof socket.cork !== 'function' || socket[COALESCED]) return;
  socket[COALESCED] = true;
  const write = socket.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: unknown, ...args: unknown[]) {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return (write as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof socket.write;
}

/** A channel whose server-side errors are logged instead of crashing the process (amqplib throws on an unheard 'error'). */
export function quiet<C extends Channel>(ch: C): C {
  ch.on('error', noop);
  return ch;
}

/** Publish options that copy a delivered message (amqplib's properties) with new headers. */
export function copyProperties(msg: Message, headers: Record<string, unknown>): Options.Publish {
  const p = msg.properties;
  const out: Options.Publish = { headers, mandatory: true };
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.contentEncoding !== undefined) out.contentEncoding = p.contentEncoding;
  if (p.deliveryMode !== undefined) out.deliveryMode = p.deliveryMode;
  if (p.priority !== undefined) out.priority = p.priority;
  if (p.correlationId !== undefined) out.correlationId = p.correlationId;
  if (p.replyTo !== undefined) out.replyTo = p.replyTo;
  if (p.expiration !== undefined) out.expiration = p.expiration;
  if (p.messageId !== undefined) out.messageId = p.messageId;
  if (p.timestamp !== undefined) out.timestamp = p.timestamp;
  if (p.type !== undefined) out.type = p.type;
  if (p.appId !== undefined) out.appId = p.appId;
  // `userId` is left out on purpose: RabbitMQ rejects it unless it names the publishing user.
  return out;
}

/**
 * Republishes delivered messages to a queue through the default exchange on a confirm channel,
 * `mandatory`, and tells per message whether the broker routed it or returned it (no such
 * queue). RabbitMQ sends `basic.return` before the confirm, so the answer is exact.
 */
export class ConfirmedMover {
  private seq = 0;
  private readonly prefix = `${randomBytes(6).toString('hex')}-`;
  private readonly returned = new Set<string>();

  constructor(readonly channel: ConfirmChannel) {
    channel.on('return', (m: Message) => {
      const id = headerValueToString(m.properties.headers?.[MOVE_ID_HEADER]);
      if (id !== undefined) this.returned.add(id);
    });
  }

  send(
    exchange: string,
    routingKey: string,
    msg: Message,
    headers: Record<string, unknown>,
  ): Promise<'routed' | 'returned'> {
    const id = this.prefix + ++this.seq;
    headers[MOVE_ID_HEADER] = id;
    return new Promise((resolve, reject) => {
      try {
        this.channel.publish(exchange, routingKey, msg.content, copyProperties(msg, headers), (err) => {
          const wasReturned = this.returned.delete(id);
          if (err)
            reject(err instanceof Error ? err : new Error(`broker refused the message (${String(err)})`));
          else resolve(wasReturned ? 'returned' : 'routed');
        });
      } catch (err) {
        reject(err);
      }
    });
  }
}

/** Headers for the copy of `msg` that goes to a sandbox queue. */
export function movedHeaders(msg: Message, from: string): Record<string, unknown> {
  const h: Record<string, unknown> = { ...msg.properties.headers };
  h[MOVED_FROM_HEADER] = from;
  if (h[EXCHANGE_HEADER] === undefined) {
    h[EXCHANGE_HEADER] = msg.fields.exchange;
    h[ROUTING_KEY_HEADER] = msg.fields.routingKey;
  }
  if (msg.fields.redelivered) h[REDELIVERED_HEADER] = true;
  return h;
}

/** Headers for the copy of `msg` that goes back from sandbox `sandbox`'s queue to the baseline. */
export function returnedHeaders(msg: Message, sandbox: string): Record<string, unknown> {
  const h: Record<string, unknown> = { ...msg.properties.headers };
  delete h[MOVED_FROM_HEADER];
  h[RETURNED_HEADER] = sandbox;
  if (msg.fields.redelivered) h[REDELIVERED_HEADER] = true;
  return h;
}

/**
 * Restores on a moved or returned delivery what the application would have seen on the
 * original: `fields.exchange`, `fields.routingKey`, and `fields.redelivered` when the original
 * had been delivered before. Branchline's bookkeeping headers are removed.
 */
export function restoreOriginal(msg: Message): void {
  const h = msg.properties.headers;
  if (!h) return;
  const exchange = h[EXCHANGE_HEADER];
  if (exchange !== undefined) {
    msg.fields.exchange = headerValueToString(exchange) ?? msg.fields.exchange;
    msg.fields.routingKey = headerValueToString(h[ROUTING_KEY_HEADER]) ?? msg.fields.routingKey;
  }
  if (h[REDELIVERED_HEADER] !== undefined) (msg.fields as { redelivered: boolean }).redelivered = true;
  delete h[EXCHANGE_HEADER];
  delete h[ROUTING_KEY_HEADER];
  delete h[REDELIVERED_HEADER];
  delete h[MOVE_ID_HEADER];
}

async function closeQuietly(ch: Channel | undefined): Promise<void> {
  if (!ch) return;
  try {
    await ch.close();
  } catch {
    // already closed
  }
}

/** Whether `queue` exists, asked on a throwaway channel (a 404 closes the channel it happens on). */
export async function queueExists(
  model: ChannelModel,
  queue: string,
): Promise<{ messageCount: number } | undefined> {
  const ch = quiet(await model.createChannel());
  try {
    const ok = await ch.checkQueue(queue);
    return { messageCount: ok.messageCount };
  } catch (err) {
    if (errorCode(err) === 404) return undefined;
    throw err;
  } finally {
    await closeQuietly(ch);
  }
}

/**
 * Moves every message waiting in `sandboxQueue` back to `baseline` (confirmed before each ack)
 * until the queue has nothing ready and nothing in flight. Returns how many were moved, or
 * undefined when the queue does not exist.
 */
async function drainOnce(
  model: ChannelModel,
  baseline: string,
  sandboxQueue: string,
  sandbox: string,
): Promise<number | undefined> {
  if (!(await queueExists(model, sandboxQueue))) return undefined;
  if (!(await unbind(model, sandboxQueue))) return undefined;
  const ch = quiet(await model.createConfirmChannel());
  const probe = quiet(await model.createChannel());
  let inflight = 0;
  let moved = 0;
  let failure: unknown;
  let tag: string | undefined;
  try {
    await ch.prefetch(200);
    const mover = new ConfirmedMover(ch);
    const consumeForReturn = () =>
      ch.consume(sandboxQueue, (m) => {
        if (!m) return;
        inflight++;
        mover
          .send('', baseline, m, returnedHeaders(m, sandbox))
          .then(
            (r) => {
              if (r === 'routed') {
                ch.ack(m);
                moved++;
              } else {
                ch.nack(m, false, true);
                failure ??= new Error(
                  `branchline: cannot return messages of sandbox ${sandbox}: the baseline queue "${baseline}" does not exist; declare it, then run the cleanup again`,
                );
              }
            },
            (err) => {
              failure ??= err;
            },
          )
          .finally(() => {
            inflight--;
          });
      });
    let ok: { consumerTag: string };
    try {
      ok = await consumeForReturn();
    } catch (err) {
      // Another process removed the queue between our check and our consume: nothing to do.
      if (errorCode(err) === 404) return undefined;
      throw err;
    }
    tag = ok.consumerTag;
    for (;;) {
      if (failure) break;
      const state = await probe.checkQueue(sandboxQueue);
      if (state.messageCount === 0 && inflight === 0) break;
      await sleep(inflight > 0 ? 5 : 25);
    }
    await ch.cancel(tag).catch(noop);
    tag = undefined;
    for (let i = 0; inflight > 0 && i < 2000; i++) await sleep(5);
    if (failure) throw failure;
    return moved;
  } finally {
    if (tag) await ch.cancel(tag).catch(noop);
    await closeQuietly(probe);
    await closeQuietly(ch);
  }
}

/** Stops new moves into a sandbox queue; false when the queue is gone. */
async function unbind(model: ChannelModel, queue: string): Promise<boolean> {
  const ch = quiet(await model.createChannel());
  try {
    await ch.unbindQueue(queue, SANDBOX_EXCHANGE, queue);
    return true;
  } catch (err) {
    // 404: the queue is gone (or the exchange never existed, in which case nothing moves there).
    if (errorCode(err) === 404) return (await queueExists(model, queue)) !== undefined;
    throw err;
  } finally {
    await closeQuietly(ch);
  }
}

/**
 * Deletes the queue only if nothing is waiting and nobody consumes it. The queue is unbound again
 * first, on the same channel, so the delete directly follows the unbind: a replica that bound it
 * again during the drain (its view older than ours) cannot have a move routed into the queue
 * while the broker deletes it — a message routed to a queue as it is deleted is confirmed and lost.
 * A move routed before the unbind is already in the queue when the delete arrives, and the
 * `ifEmpty` delete refuses.
 */
async function deleteIfIdle(model: ChannelModel, queue: string): Promise<'deleted' | 'busy' | 'gone'> {
  const ch = quiet(await model.createChannel());
  try {
    await ch.unbindQueue(queue, SANDBOX_EXCHANGE, queue);
  } catch (err) {
    await closeQuietly(ch);
    if (errorCode(err) !== 404) throw err;
    // The queue is gone, or the exchange never existed and nothing moves there: the 404 closed
    // the channel, so delete on a fresh one.
    if (!(await queueExists(model, queue))) return 'gone';
    return deleteOnly(quiet(await model.createChannel()), queue);
  }
  return deleteOnly(ch, queue);
}

/** `ifEmpty` + `ifUnused` delete on `ch`, which it closes. */
async function deleteOnly(ch: Channel, queue: string): Promise<'deleted' | 'busy'> {
  try {
    const r = await ch.deleteQueue(queue, { ifEmpty: true, ifUnused: true });
    if (TRACE) logger().debug('branchline: deleted', { queue, r });
    return 'deleted';
  } catch (err) {
    if (TRACE) logger().debug('branchline: delete refused', { queue, err: String(err) });
    if (errorCode(err) === 406) return 'busy';
    throw err;
  } finally {
    await closeQuietly(ch);
  }
}

/**
 * Returns the messages still waiting in a deleted sandbox's queue to the baseline queue (they
 * are then processed by the baseline consumer, marked so they are not moved again), and removes
 * the sandbox queue. Idempotent and safe to run from several processes at once: a message is
 * acked in the sandbox queue only after the broker confirmed its copy in the baseline queue, and
 * the queue is deleted only when it is empty and has no consumer.
 */
export async function removeSandboxQueues(
  model: ChannelModel,
  options: SandboxQueueCleanupOptions,
): Promise<SandboxQueueCleanupResult[]> {
  const queues = Array.isArray(options.queue) ? options.queue : [options.queue];
  const out: SandboxQueueCleanupResult[] = [];
  for (const queue of queues)
    out.push(await removeSandboxQueue(model, queue, options.sandbox, options.timeoutMs));
  return out;
}

export async function removeSandboxQueue(
  model: ChannelModel,
  queue: string,
  sandbox: string,
  timeoutMs = 60_000,
): Promise<SandboxQueueCleanupResult> {
  const sandboxQueue = sandboxQueueName(queue, sandbox);
  const deadline = Date.now() + timeoutMs;
  let returned = 0;
  let delay = 50;
  for (;;) {
    const moved = await drainOnce(model, queue, sandboxQueue, sandbox);
    if (moved === undefined) return { queue, sandboxQueue, returned, deleted: false };
    returned += moved;
    const outcome = await deleteIfIdle(model, sandboxQueue);
    if (outcome === 'gone') return { queue, sandboxQueue, returned, deleted: false };
    if (outcome === 'deleted') {
      logger().debug('branchline: returned a deleted sandbox queue to baseline', { sandboxQueue, returned });
      return { queue, sandboxQueue, returned, deleted: true };
    }
    if (Date.now() > deadline) {
      throw new Error(
        `branchline: the queue "${sandboxQueue}" of deleted sandbox ${sandbox} still has a consumer after ${timeoutMs} ms; stop that sandbox's consumers, then run the cleanup again (waiting messages were returned to "${queue}")`,
      );
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 1000);
  }
}
