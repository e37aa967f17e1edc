import { logger } from '@branchline/core';
import type { ChannelModel, ConfirmChannel } from 'amqplib';
import type { SelectiveConsumerImpl } from './consumer.js';
import { onDelivery } from './deliveries.js';
import {
  ConfirmedMover,
  coalesceWrites,
  connectTo,
  declareSandboxQueue,
  errorCode,
  quiet,
  sleep,
} from './queues.js';
import { noop, type Session, TRACE, trace } from './session.js';

// ---- connection lifecycle: connect, reconnect with backoff, stop ------------------------------

/** Connects, consumes, and reconnects after every drop until the consumer closes. */
export async function connectionLoop(c: SelectiveConsumerImpl): Promise<void> {
  let attempt = 0;
  while (!c.closing) {
    let model: ChannelModel | undefined;
    try {
      model = await connectTo(c.options.connection, c.options.socketOptions);
      if (c.closing) {
        await model.close().catch(noop);
        break;
      }
      const session = await startSession(c, model);
      attempt = 0;
      await session.closed;
      if (c.closing) break;
      c.emit('disconnect');
      logger().warn('branchline: lost the RabbitMQ connection; reconnecting', { queue: c.queue });
    } catch (err) {
      if (model) await model.close().catch(noop);
      if (c.closing) break;
      logger().warn('branchline: could not consume from RabbitMQ; retrying', {
        queue: c.queue,
        err: String(err),
      });
    }
    if (c.closing) break;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, c.selector.retryDelayMs(attempt++));
      c.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    c.wake = undefined;
  }
}

async function startSession(c: SelectiveConsumerImpl, model: ChannelModel): Promise<Session> {
  let markClosed!: () => void;
  const closed = new Promise<void>((r) => {
    markClosed = r;
  });
  coalesceWrites(model);
  model.on('error', (err: Error) =>
    logger().debug('branchline: RabbitMQ connection error', { err: String(err) }),
  );
  const channel = quiet(await model.createChannel());
  const session: Session = { model, channel, open: true, closed, holds: new AbortController(), end: noop };
  const end = () => {
    if (!session.open) return;
    session.open = false;
    if (c.session === session) c.session = undefined;
    // Held messages of a dead channel will be redelivered; end their holds.
    session.holds.abort();
    markClosed();
    model.close().catch(noop);
  };
  session.end = end;
  model.on('close', end);
  channel.on('close', end);
  try {
    if (c.options.setup) {
      const setupChannel = quiet(await model.createChannel());
      await c.options.setup(setupChannel);
      await setupChannel.close().catch(noop);
    }
    if (c.sandbox === undefined) {
      const pub = quiet(await model.createConfirmChannel());
      pub.on('close', end);
      session.mover = new ConfirmedMover(pub as ConfirmChannel);
    } else if (!c.everConsumed) {
      // The sandbox's workload starts while its sandbox lives: create its queue.
      await declareSandboxQueue(channel, c.queue, c.options.sandboxQueueArguments);
    } else {
      // After a drop, only resume: a missing queue means the sandbox was deleted meanwhile,
      // and re-creating it would leave a queue nobody cleans up.
      try {
        await channel.checkQueue(c.queue);
      } catch (err) {
        if (errorCode(err) === 404) {
          void stopConsumer(c, 'sandbox-queue-deleted');
          return session;
        }
        throw err;
      }
    }
    await channel.prefetch(c.prefetch);
    const ok = await channel.consume(c.queue, (m) => onDelivery(c, session, m), {
      ...c.options.consumeOptions,
      noAck: false,
    });
    session.consumerTag = ok.consumerTag;
  } catch (err) {
    end();
    throw err;
  }
  if (c.closing) {
    await channel.close().catch(noop);
    end();
    return session;
  }
  if (!session.open) return session; // dropped while setting up: the loop reconnects
  c.session = session;
  c.everConsumed = true;
  c.stats.connects++;
  c.emit('connect');
  c.readyResolve();
  // Cleanups interrupted by the drop resume on the new connection.
  return session;
}

function movesInFlight(c: SelectiveConsumerImpl): number {
  let n = 0;
  for (const s of c.moves.values()) n += s.size;
  return n;
}

/**
 * Stops consuming, lets running handlers and moves finish (bounded by `closeTimeoutMs`), requeues
 * held messages, and closes the connection. `reason` is set when a sandbox consumer ends by itself.
 */
export async function stopConsumer(c: SelectiveConsumerImpl, reason: string | undefined): Promise<void> {
  if (TRACE) trace('stop', undefined, { queue: c.queue, reason, closing: c.closing });
  if (c.closing) {
    await Promise.race([c.loop, sleep(c.closeTimeoutMs)]);
    return;
  }
  c.closing = true;
  c.endReason = reason;
  c.unsubscribe();
  // Held messages go back to the queue now (each hold requeues its message as it ends).
  c.selector.close();
  c.wake?.();
  const s = c.session;
  if (s?.open && s.consumerTag) await s.channel.cancel(s.consumerTag).catch(noop);
  // Let running handlers and moves finish so their acks reach the broker.
  const deadline = Date.now() + c.closeTimeoutMs;
  while ((c.handlersInFlight > 0 || movesInFlight(c) > 0) && Date.now() < deadline) await sleep(10);
  await Promise.race([c.cleanupsSettled(), sleep(15_000)]);
  await Promise.allSettled([...c.holds]);
  if (s?.open) {
    // Close the channel first: its close frame follows our acks on the same channel, whereas
    // a connection close could overtake acks still buffered on another channel (amqplib
    // multiplexes channels), and the broker would redeliver messages already processed.
    await s.channel.close().catch(noop);
    s.end();
    await s.model.close().catch(noop);
  }
  c.session = undefined;
  c.readyReject(
    new Error(`branchline: consumer of ${c.queue} ended before consuming (${reason ?? 'closed'})`),
  );
  // A connection attempt still in flight finishes on its own and is closed when it does.
  await Promise.race([c.loop, sleep(c.closeTimeoutMs)]);
  if (reason) {
    logger().info('branchline: sandbox consumer ended', { queue: c.queue, reason });
    c.emit('end', reason);
  }
}
