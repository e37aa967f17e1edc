import { EventEmitter } from 'node:events';
import { type BranchlineRuntime, contextWithRoutingKey, defaultRuntime } from '@branchline/core';
import {
  activeContext,
  bufferTextMapGetter,
  type CarrierGetter,
  counters,
  decideMessage,
  hasOtelPropagator,
  headerValueToString,
  type KeyReader,
  logger,
  noteConsumed,
  type RouteSource,
  type RouteTable,
  runInContext,
} from '@branchline/core/transport';
import { type Context, propagation, ROOT_CONTEXT } from '@opentelemetry/api';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { RETURNED_HEADER, TIME_HEADER } from './headers.js';
import {
  ConfirmedMover,
  coalesceWrites,
  connectTo,
  declareSandboxQueue,
  errorCode,
  movedHeaders,
  quiet,
  removeSandboxQueue,
  restoreOriginal,
  SANDBOX_EXCHANGE,
  sandboxQueueName,
  sleep,
} from './queues.js';
import type {
  SandboxQueueCleanupResult,
  SelectiveConsumerOptions,
  SelectiveConsumerStats,
  SelectiveMessageHandler,
} from './types.js';

type Headers = Record<string, unknown> | undefined;
const headersGetter = bufferTextMapGetter as CarrierGetter<Headers>;
const noop = () => {};
// Per-message tracing costs an object per message, so it is decided once, at load.
const TRACE = process.env.BRANCHLINE_LOG_LEVEL === 'debug';
function trace(event: string, msg: ConsumeMessage | undefined, fields: Record<string, unknown>): void {
  logger().debug(`branchline: ${event}`, { id: msg?.properties.messageId, ...fields });
}

/** One connection's worth of state; replaced on every reconnect. */
interface Session {
  model: ChannelModel;
  channel: Channel;
  mover?: ConfirmedMover;
  open: boolean;
  consumerTag?: string;
  closed: Promise<void>;
  /** Marks the session dead and closes its connection (idempotent). */
  end: () => void;
}

interface Held {
  session: Session;
  msg: ConsumeMessage;
  key: string;
  at: number | undefined;
  since: number;
}

/** A consumer that processes only the messages its process owns; see docs/rabbitmq.md. */
export interface SelectiveConsumer extends EventEmitter {
  /** The queue this consumer reads: the baseline queue, or the sandbox's own queue. */
  readonly queue: string;
  readonly service: string;
  /** Undefined for a baseline consumer. */
  readonly sandbox: string | undefined;
  readonly stats: SelectiveConsumerStats;
  /** Why a sandbox consumer ended by itself: `sandbox-deleted` or `sandbox-queue-deleted`. */
  readonly endReason: string | undefined;
  /** Resolves once the consumer is consuming (the first time); rejects if it ended first. */
  ready(): Promise<void>;
  /** Resolves when no sandbox-queue cleanup started by this consumer is still running. */
  cleanupsSettled(): Promise<void>;
  /** Stops consuming, lets running handlers finish (bounded), and closes the connection. */
  close(): Promise<void>;
}

function messageTime(msg: ConsumeMessage): number | undefined {
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

function positiveInt(name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw new TypeError(`branchline: option ${name} must be a positive integer (got ${String(v)})`);
  return v;
}

class SelectiveConsumerImpl extends EventEmitter implements SelectiveConsumer {
  readonly queue: string;
  readonly service: string;
  readonly sandbox: string | undefined;
  readonly stats: SelectiveConsumerStats = {
    processed: 0,
    moved: 0,
    unroutableMoves: 0,
    ownerGone: 0,
    held: 0,
    holdTimeouts: 0,
    returned: 0,
    connects: 0,
  };

  private readonly baselineQueue: string;
  private readonly onMessage: SelectiveMessageHandler;
  private readonly routes: RouteSource;
  private readonly keys: KeyReader;
  private readonly prefetch: number;
  private readonly holdTimeoutMs: number;
  private readonly options: SelectiveConsumerOptions;
  private session: Session | undefined;
  private closing = false;
  endReason: string | undefined;
  private everConsumed = false;
  private readyResolve!: () => void;
  private readyReject!: (err: Error) => void;
  private readonly readyPromise: Promise<void>;
  private held: Held[] = [];
  private holdTimer: NodeJS.Timeout | undefined;
  private handlersInFlight = 0;
  private readonly moves = new Map<string, Set<Promise<void>>>();
  private readonly cleanups = new Map<string, Promise<void>>();
  /**
   * Sandbox queues (and their bindings) this consumer declared, kept across reconnects: both are
   * durable, so a new connection finds them. Declaring again after a drop would be wrong: if
   * another replica removed the queue meanwhile, the declaration would re-create and re-bind it
   * while that replica deletes it, and a message moved in between would be lost with it.
   */
  private readonly declared = new Map<string, Promise<void>>();
  private routing = new Set<string>();
  private readonly unsubscribe: () => void;
  private wake: (() => void) | undefined;
  private readonly loop: Promise<void>;

  constructor(options: SelectiveConsumerOptions) {
    super();
    if (typeof options !== 'object' || options === null)
      throw new TypeError('branchline: createSelectiveConsumer needs an options object');
    if (typeof options.queue !== 'string' || options.queue.length === 0)
      throw new TypeError(
        `branchline: option queue must be the baseline queue's name (got ${String(options.queue)})`,
      );
    if (typeof options.onMessage !== 'function')
      throw new TypeError('branchline: option onMessage must be a function (message, channel) => …');
    if (options.connection === undefined || options.connection === null)
      throw new TypeError(
        'branchline: option connection is required: an AMQP URL such as "amqp://guest:guest@127.0.0.1:5672", amqplib connect options, or a function that connects',
      );
    const runtime: BranchlineRuntime = options.runtime ?? defaultRuntime();
    const service = options.service ?? runtime.config.service;
    if (!service)
      throw new TypeError(
        'branchline: createSelectiveConsumer needs a service name: pass { service } or set BRANCHLINE_SERVICE',
      );
    this.options = options;
    this.service = service;
    this.sandbox = options.sandbox === null ? undefined : (options.sandbox ?? runtime.config.sandbox);
    this.baselineQueue = options.queue;
    this.queue = this.sandbox === undefined ? options.queue : sandboxQueueName(options.queue, this.sandbox);
    this.onMessage = options.onMessage;
    this.routes = options.routes ?? runtime.routes;
    this.keys = runtime.keys;
    this.prefetch = positiveInt('prefetch', options.prefetch, 20);
    this.holdTimeoutMs = positiveInt('holdTimeoutMs', options.holdTimeoutMs, 30_000);
    this.readyPromise = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.readyPromise.catch(noop);
    if (this.routes.table) this.onTable(this.routes.table);
    this.unsubscribe = this.routes.subscribe((t) => this.onTable(t));
    this.loop = this.run();
  }

  ready(): Promise<void> {
    return this.readyPromise;
  }

  async cleanupsSettled(): Promise<void> {
    while (this.cleanups.size > 0) await Promise.allSettled([...this.cleanups.values()]);
  }

  async close(): Promise<void> {
    await this.stop(undefined);
  }

  // ---- connection lifecycle -------------------------------------------------------------

  private connect(): Promise<ChannelModel> {
    return connectTo(this.options.connection, this.options.socketOptions);
  }

  private backoff(attempt: number): number {
    const r = this.options.reconnect ?? {};
    const initial = r.initialDelayMs ?? 100;
    const max = r.maxDelayMs ?? 5000;
    const base = Math.min(max, initial * (r.factor ?? 2) ** attempt);
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.closing) {
      let model: ChannelModel | undefined;
      try {
        model = await this.connect();
        if (this.closing) {
          await model.close().catch(noop);
          break;
        }
        const session = await this.startSession(model);
        attempt = 0;
        await session.closed;
        if (this.closing) break;
        this.emit('disconnect');
        logger().warn('branchline: lost the RabbitMQ connection; reconnecting', { queue: this.queue });
      } catch (err) {
        if (model) await model.close().catch(noop);
        if (this.closing) break;
        logger().warn('branchline: could not consume from RabbitMQ; retrying', {
          queue: this.queue,
          err: String(err),
        });
      }
      if (this.closing) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.backoff(attempt++));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  private async startSession(model: ChannelModel): Promise<Session> {
    let markClosed!: () => void;
    const closed = new Promise<void>((r) => {
      markClosed = r;
    });
    coalesceWrites(model);
    model.on('error', (err: Error) =>
      logger().debug('branchline: RabbitMQ connection error', { err: String(err) }),
    );
    const channel = quiet(await model.createChannel());
    const session: Session = { model, channel, open: true, closed, end: noop };
    const end = () => {
      if (!session.open) return;
      session.open = false;
      if (this.session === session) this.session = undefined;
      // Held messages of a dead channel will be redelivered; forget them.
      this.held = this.held.filter((h) => h.session !== session);
      markClosed();
      model.close().catch(noop);
    };
    session.end = end;
    model.on('close', end);
    channel.on('close', end);
    try {
      if (this.options.setup) {
        const setupChannel = quiet(await model.createChannel());
        await this.options.setup(setupChannel);
        await setupChannel.close().catch(noop);
      }
      if (this.sandbox === undefined) {
        const pub = quiet(await model.createConfirmChannel());
        pub.on('close', end);
        session.mover = new ConfirmedMover(pub as ConfirmChannel);
      } else if (!this.everConsumed) {
        // The sandbox's workload starts while its sandbox lives: create its queue.
        await declareSandboxQueue(channel, this.queue, this.options.sandboxQueueArguments);
      } else {
        // After a drop, only resume: a missing queue means the sandbox was deleted meanwhile,
        // and re-creating it would leave a queue nobody cleans up.
        try {
          await channel.checkQueue(this.queue);
        } catch (err) {
          if (errorCode(err) === 404) {
            void this.stop('sandbox-queue-deleted');
            return session;
          }
          throw err;
        }
      }
      await channel.prefetch(this.prefetch);
      const ok = await channel.consume(this.queue, (m) => this.onDelivery(session, m), {
        ...this.options.consumeOptions,
        noAck: false,
      });
      session.consumerTag = ok.consumerTag;
    } catch (err) {
      end();
      throw err;
    }
    if (this.closing) {
      await channel.close().catch(noop);
      end();
      return session;
    }
    if (!session.open) return session; // dropped while setting up: the loop reconnects
    this.session = session;
    this.everConsumed = true;
    this.stats.connects++;
    this.emit('connect');
    this.readyResolve();
    // Cleanups interrupted by the drop resume on the new connection.
    return session;
  }

  private async stop(reason: string | undefined): Promise<void> {
    if (TRACE) trace('stop', undefined, { queue: this.queue, reason, closing: this.closing });
    if (this.closing) {
      await Promise.race([this.loop, sleep(this.options.closeTimeoutMs ?? 10_000)]);
      return;
    }
    this.closing = true;
    this.endReason = reason;
    this.unsubscribe();
    if (this.holdTimer) clearInterval(this.holdTimer);
    this.wake?.();
    const s = this.session;
    if (s?.open && s.consumerTag) await s.channel.cancel(s.consumerTag).catch(noop);
    // Let running handlers and moves finish so their acks reach the broker.
    const deadline = Date.now() + (this.options.closeTimeoutMs ?? 10_000);
    while ((this.handlersInFlight > 0 || this.movesInFlight() > 0) && Date.now() < deadline) await sleep(10);
    await Promise.race([this.cleanupsSettled(), sleep(15_000)]);
    for (const h of this.held) if (h.session.open) h.session.channel.nack(h.msg, false, true);
    this.held = [];
    if (s?.open) {
      // Close the channel first: its close frame follows our acks on the same channel, whereas
      // a connection close could overtake acks still buffered on another channel (amqplib
      // multiplexes channels), and the broker would redeliver messages already processed.
      await s.channel.close().catch(noop);
      s.end();
      await s.model.close().catch(noop);
    }
    this.session = undefined;
    this.readyReject(
      new Error(`branchline: consumer of ${this.queue} ended before consuming (${reason ?? 'closed'})`),
    );
    // A connection attempt still in flight finishes on its own and is closed when it does.
    await Promise.race([this.loop, sleep(this.options.closeTimeoutMs ?? 10_000)]);
    if (reason) {
      logger().info('branchline: sandbox consumer ended', { queue: this.queue, reason });
      this.emit('end', reason);
    }
  }

  private movesInFlight(): number {
    let n = 0;
    for (const s of this.moves.values()) n += s.size;
    return n;
  }

  // ---- deliveries -----------------------------------------------------------------------

  private onDelivery(session: Session, msg: ConsumeMessage | null): void {
    if (msg === null) {
      if (TRACE) trace('cancelled-by-broker', undefined, { queue: this.queue });
      // The broker cancelled us: the queue was deleted.
      if (this.sandbox !== undefined) void this.stop('sandbox-queue-deleted');
      else session.model.close().catch(noop);
      return;
    }
    const headers = msg.properties.headers;
    if (this.sandbox !== undefined) {
      restoreOriginal(msg);
      this.process(session, msg, this.keys.read(headers, headersGetter));
      return;
    }
    if (headers !== undefined && headers[RETURNED_HEADER] !== undefined) {
      // Returned from a deleted sandbox's queue: the baseline processes it, no second decision.
      restoreOriginal(msg);
      this.process(session, msg, this.keys.read(headers, headersGetter));
      return;
    }
    const key = this.keys.read(headers, headersGetter);
    if (key === undefined) {
      this.process(session, msg, undefined);
      return;
    }
    this.decide(session, msg, key, messageTime(msg), undefined);
  }

  private decide(
    session: Session,
    msg: ConsumeMessage,
    key: string,
    at: number | undefined,
    since?: number,
  ): void {
    const table = this.routes.table;
    const d = decideMessage({ table, service: this.service, sandbox: undefined, key, at });
    if (d.action === 'process') {
      this.process(session, msg, key);
      return;
    }
    if (d.action === 'wait') {
      if (since === undefined) {
        this.stats.held++;
        counters.messagesHeld++;
      }
      this.held.push({ session, msg, key, at, since: since ?? Date.now() });
      this.holdTimer ??= setInterval(() => this.expireHeld(), 250);
      this.holdTimer.unref?.();
      return;
    }
    const owner = d.owner;
    if (owner === undefined || !table || !this.routesNow(table, owner)) {
      // The owner at the message's time no longer routes this service here: its messages
      // belong to the baseline now (as those waiting in its queue are returned).
      this.stats.ownerGone++;
      this.process(session, msg, key);
      return;
    }
    this.move(session, msg, key, owner);
  }

  private routesNow(table: RouteTable, sandbox: string): boolean {
    return table.sandbox(sandbox)?.overrides?.[this.service] !== undefined;
  }

  private move(session: Session, msg: ConsumeMessage, key: string, owner: string): void {
    const queue = sandboxQueueName(this.baselineQueue, owner);
    let set = this.moves.get(owner);
    if (!set) {
      set = new Set();
      this.moves.set(owner, set);
    }
    const p = this.moveTo(session, msg, key, queue).finally(() => {
      set.delete(p);
    });
    set.add(p);
  }

  private async moveTo(session: Session, msg: ConsumeMessage, key: string, queue: string): Promise<void> {
    const mover = session.mover!;
    try {
      let declared = this.declared.get(queue);
      if (!declared) {
        declared = declareSandboxQueue(mover.channel, queue, this.options.sandboxQueueArguments);
        this.declared.set(queue, declared);
        // Only a declaration that failed is tried again; see `declared`.
        declared.catch(() => {
          if (this.declared.get(queue) === declared) this.declared.delete(queue);
        });
        if (TRACE) trace('declare', msg, { queue });
      }
      await declared;
      const result = await mover.send(SANDBOX_EXCHANGE, queue, msg, movedHeaders(msg, this.baselineQueue));
      if (TRACE)
        trace('move', msg, { queue, result, open: session.open, redelivered: msg.fields.redelivered });
      if (!session.open) return; // the original is redelivered; the copy carries no mark, see docs
      if (result === 'routed') {
        session.channel.ack(msg);
        this.stats.moved++;
        counters.messagesSkipped++;
      } else {
        // The owner's queue is gone or unbound: its sandbox was deleted after our view was taken.
        this.stats.unroutableMoves++;
        this.process(session, msg, key);
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

  private expireHeld(): void {
    const now = Date.now();
    const keep: Held[] = [];
    for (const h of this.held) {
      if (!h.session.open) continue;
      if (now - h.since < this.holdTimeoutMs) {
        keep.push(h);
        continue;
      }
      this.stats.holdTimeouts++;
      logger().warn(
        'branchline: held a message longer than holdTimeoutMs because the route view does not cover its time; requeueing it (is the registry reachable?)',
        { queue: this.queue, key: h.key, at: h.at, holdTimeoutMs: this.holdTimeoutMs },
      );
      h.session.channel.nack(h.msg, false, true);
    }
    this.held = keep;
  }

  private contextFor(msg: ConsumeMessage, key: string | undefined): Context {
    if (hasOtelPropagator()) {
      // The application's propagator restores its trace context and baggage; we add the key.
      return contextWithRoutingKey(
        propagation.extract(ROOT_CONTEXT, msg.properties.headers, headersGetter as never),
        key,
      );
    }
    // Without a propagator the context depends on the key alone (core builds it once per key).
    return key === undefined ? ROOT_CONTEXT : contextWithRoutingKey(ROOT_CONTEXT, key);
  }

  private process(session: Session, msg: ConsumeMessage, key: string | undefined): void {
    if (TRACE) trace('process', msg, { queue: this.queue, open: session.open });
    this.stats.processed++;
    noteConsumed(this.sandbox, this.service);
    this.handlersInFlight++;
    let result: unknown;
    try {
      const ctx = this.contextFor(msg, key);
      // Entering a context costs an AsyncLocalStorage frame; a keyless message delivered where
      // no context is active needs none.
      result =
        ctx === ROOT_CONTEXT && activeContext() === ROOT_CONTEXT
          ? this.onMessage(msg, session.channel)
          : runInContext(ctx, () => this.onMessage(msg, session.channel));
    } catch (err) {
      this.settle(session, msg, err, true);
      return;
    }
    if (result && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(
        () => this.settle(session, msg, undefined, false),
        (err) => this.settle(session, msg, err, true),
      );
    } else {
      this.settle(session, msg, undefined, false);
    }
  }

  private settle(session: Session, msg: ConsumeMessage, err: unknown, failed: boolean): void {
    this.handlersInFlight--;
    if (failed) {
      logger().error('branchline: the message handler threw', { queue: this.queue, err: String(err) });
    }
    if (!this.options.autoAck || !session.open) return;
    try {
      if (failed) session.channel.nack(msg, false, this.options.requeueOnError === true);
      else session.channel.ack(msg);
    } catch {
      // The channel closed meanwhile; the broker redelivers the message.
    }
  }

  // ---- route changes --------------------------------------------------------------------

  private onTable(table: RouteTable): void {
    const now = new Set<string>();
    for (const s of table.sandboxes) if (s.overrides?.[this.service] !== undefined) now.add(s.name);
    const before = this.routing;
    this.routing = now;
    if (this.sandbox !== undefined) {
      if (before.has(this.sandbox) && !now.has(this.sandbox)) void this.stop('sandbox-deleted');
      return;
    }
    for (const name of before) {
      if (now.has(name)) continue;
      this.declared.delete(sandboxQueueName(this.baselineQueue, name));
      this.scheduleCleanup(name);
    }
    // A sandbox that starts routing again is a new incarnation whose queue may be gone.
    for (const name of now)
      if (!before.has(name)) this.declared.delete(sandboxQueueName(this.baselineQueue, name));
    if (this.held.length > 0) {
      const list = this.held;
      this.held = [];
      for (const h of list) if (h.session.open) this.decide(h.session, h.msg, h.key, h.at, h.since);
    }
  }

  /**
   * A sandbox stopped routing this service in our view: once our own moves to it have settled,
   * return what waits in its queue to the baseline and remove the queue. Every baseline replica
   * does this when it sees the change, so a replica that re-created the queue with an older view
   * also removes it once its view catches up.
   */
  private scheduleCleanup(sandbox: string): void {
    if (this.cleanups.has(sandbox)) return;
    const run = async () => {
      const pending = this.moves.get(sandbox);
      if (pending?.size) await Promise.allSettled([...pending]);
      for (let attempt = 0; ; attempt++) {
        const model = await this.liveModel();
        if (!model) return;
        try {
          const r: SandboxQueueCleanupResult = await removeSandboxQueue(model, this.baselineQueue, sandbox);
          this.stats.returned += r.returned;
          this.emit('sandbox-queue-removed', r);
          return;
        } catch (err) {
          logger().warn('branchline: could not return a deleted sandbox queue yet; retrying', {
            sandbox,
            err: String(err),
          });
          await sleep(this.backoff(Math.min(attempt, 6)));
        }
      }
    };
    const p = run().finally(() => this.cleanups.delete(sandbox));
    this.cleanups.set(sandbox, p);
  }

  private async liveModel(): Promise<ChannelModel | undefined> {
    for (let i = 0; !this.session?.open; i++) {
      if (this.closing && i > 0) return undefined;
      if (i > 600) return undefined;
      await sleep(100);
    }
    return this.session.model;
  }
}

/**
 * Consumes a baseline queue (or, in a sandbox, the sandbox's own queue) so that every message is
 * processed by exactly one of {baseline, the sandbox that owns its key}. See docs/rabbitmq.md.
 */
export function createSelectiveConsumer(options: SelectiveConsumerOptions): SelectiveConsumer {
  return new SelectiveConsumerImpl(options);
}
