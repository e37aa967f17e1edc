import { EventEmitter } from 'node:events';
import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import {
  type BackoffOptions,
  type BranchlineRuntime,
  defaultRuntime,
  type RouteTableSpec,
} from '@branchline/core';
import {
  createMessageSelector,
  type FinalSelection,
  type HoldSelection,
  HoldTimeoutError,
  logger,
  type MessageSelector,
  type OwnersChange,
  type RouteSource,
  type RouteTable,
  resolveBackoff,
  warnRateLimited,
} from '@branchline/core/transport';
import { attributesGetter, BAGGAGE_ATTRIBUTE, type MessageAttributes, parseMeta } from './attributes.js';
import {
  checkQueueName,
  copyBatch,
  createQueue,
  deleteMessages,
  identity,
  isQueueGone,
  messageTime,
  queueUrl,
  RECEIVE_ATTRIBUTES,
  receiveCount,
  removeSandboxQueue,
  type SandboxQueueCleanupResult,
  sandboxQueueName,
  sleep,
} from './queues.js';

/** What the handler learns about a message besides the SQS `Message` itself. */
export interface SqsMessageInfo {
  /** The queue the message was received from (the baseline queue or the sandbox's queue). */
  queue: string;
  /** The routing key the message carries, if any. */
  key: string | undefined;
  /** The message's time (ms) ownership was decided at: SentTimestamp, or the original's on a copy. */
  time: number | undefined;
  /** The message (or the original it was copied from) was received before: it may repeat. */
  redelivered: boolean;
  /** Set on a message returned from a deleted sandbox's queue: that sandbox. */
  returnedFrom: string | undefined;
}

/**
 * Called for every message this consumer processes, inside the message's context. The message is
 * deleted when the handler returns (or its promise resolves); when it throws, the message becomes
 * visible again after a backoff and is received again.
 */
export type SqsMessageHandler = (message: Message, info: SqsMessageInfo) => void | Promise<void>;

export interface SqsSelectiveConsumerOptions {
  /** An SQSClient (from `@aws-sdk/client-sqs`) with region and credentials set. */
  client: SQSClient;
  /**
   * The name (not the URL) of the baseline queue of this service; it must exist. A baseline
   * consumer reads it; a sandbox consumer reads the sandbox's own queue (`sandboxQueueName`).
   */
  queue: string;
  onMessage: SqsMessageHandler;
  /** This process's service; default the runtime's (`BRANCHLINE_SERVICE`). */
  service?: string;
  /** This process's sandbox; `null` forces baseline. Default the runtime's (`BRANCHLINE_SANDBOX`). */
  sandbox?: string | null;
  /** Where route tables come from (a source, a table or a table document); default the runtime's. */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  /** Runtime to take service, sandbox, routes and key reader from; default `defaultRuntime()`. */
  runtime?: BranchlineRuntime;
  /**
   * How long a keyed message whose time the route view does not cover yet is held (its visibility
   * extended meanwhile). After that it is made visible again and counted. Default 30000.
   */
  holdTimeoutMs?: number;
  /**
   * Visibility timeout asked for on each receive, ms (whole seconds). While a handler runs or a
   * message is held, the consumer extends it every half of this. Default 30000.
   */
  visibilityTimeoutMs?: number;
  /** Long-poll wait of each receive, ms (whole seconds, at most 20000). Default 20000. */
  waitTimeMs?: number;
  /** Receives in parallel (each up to 10 messages). Default 2. */
  pollers?: number;
  /** How long `close()` waits for running handlers, ms. Default 10000. */
  closeTimeoutMs?: number;
  /**
   * When a sandbox is deleted, its queue is drained back to the baseline queue, then drained again
   * after this long (for baseline replicas whose route view lags) before it is deleted; it must
   * be longer than the view lag of every baseline replica. A move that takes longer than half of
   * this is abandoned (the original is received again), so no copy lands after the deletion.
   * Default 10000.
   */
  drainGraceMs?: number;
  /** Backoff for retrying failed SQS calls and cleanups. Default `{ initialMs: 100, maxMs: 5000, factor: 2 }`. */
  backoff?: BackoffOptions;
  /** Attributes for the sandbox queues the consumer creates (CreateQueue `Attributes`). */
  sandboxQueueAttributes?: Record<string, string>;
  /** How many recently processed or moved message identities are remembered to recognise repeats. Default 100000. */
  dedupeWindow?: number;
}

/** Running totals of one consumer. */
export interface SqsSelectiveConsumerStats {
  /** Messages handed to `onMessage`. */
  processed: number;
  /** Messages moved to a sandbox's queue (copy confirmed, then the original deleted). */
  moved: number;
  /** Messages processed by the baseline because their owner's queue was gone when moving. */
  unroutableMoves: number;
  /** Messages whose owner no longer routes this service in the consumer's view; processed by baseline. */
  ownerGone: number;
  /** Messages held because the route view did not cover their time yet. */
  held: number;
  /** Held messages made visible again after `holdTimeoutMs`. */
  holdTimeouts: number;
  /** Messages returned from deleted sandboxes' queues by this consumer's cleanups. */
  returned: number;
  /** Repeats recognised (already processed or moved here) and deleted without processing. */
  duplicates: number;
  /** Visibility extensions sent. */
  extended: number;
  /** Failed SQS calls (each retried or left to the visibility timeout). */
  errors: number;
}

/** A consumer that processes only the messages its process owns; see docs/sqs.md. */
export interface SqsSelectiveConsumer extends EventEmitter {
  /** The queue this consumer reads: the baseline queue, or the sandbox's own queue. */
  readonly queue: string;
  readonly service: string;
  /** Undefined for a baseline consumer. */
  readonly sandbox: string | undefined;
  readonly stats: SqsSelectiveConsumerStats;
  /** Why the consumer ended by itself: `sandbox-deleted` or `sandbox-queue-deleted`. */
  readonly endReason: string | undefined;
  /** Resolves once the consumer receives (the first time); rejects if it ended first. */
  ready(): Promise<void>;
  /** Resolves when no sandbox-queue cleanup started by this consumer is still running. */
  cleanupsSettled(): Promise<void>;
  /** Stops receiving, lets running handlers finish (bounded), returns held messages. */
  close(): Promise<void>;
}

function checkDurationMsOrDefault(v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new TypeError(
      `branchline: option drainGraceMs must be a number of milliseconds >= 0 (got ${String(v)})`,
    );
  return v;
}

function positiveInt(name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw new TypeError(`branchline: option ${name} must be a positive integer (got ${String(v)})`);
  return v;
}

const noop = () => {};

/** A bounded set of identities, oldest dropped first. */
class Window {
  private readonly ids = new Set<string>();
  constructor(private readonly size: number) {}
  has(id: string): boolean {
    return this.ids.has(id);
  }
  add(id: string): void {
    if (!id) return;
    this.ids.add(id);
    if (this.ids.size > this.size) this.ids.delete(this.ids.values().next().value as string);
  }
}

interface InFlight {
  msg: Message;
  extendAt: number;
}

class SqsSelectiveConsumerImpl extends EventEmitter implements SqsSelectiveConsumer {
  readonly queue: string;
  readonly service: string;
  readonly sandbox: string | undefined;
  readonly stats: SqsSelectiveConsumerStats = {
    processed: 0,
    moved: 0,
    unroutableMoves: 0,
    ownerGone: 0,
    held: 0,
    holdTimeouts: 0,
    returned: 0,
    duplicates: 0,
    extended: 0,
    errors: 0,
  };
  endReason: string | undefined;

  private readonly client: SQSClient;
  private readonly selector: MessageSelector;
  private readonly baselineQueue: string;
  private readonly onMessage: SqsMessageHandler;
  private readonly visibilityMs: number;
  private readonly waitSeconds: number;
  private readonly pollers: number;
  private readonly closeTimeoutMs: number;
  private readonly drainGraceMs: number;
  private readonly sandboxQueueAttributes: Record<string, string> | undefined;
  private readonly seen: Window;
  private readonly abort = new AbortController();
  private readonly inflight = new Map<string, InFlight>();
  private readonly holds = new Set<Promise<void>>();
  private readonly deleting = new Set<Promise<void>>();
  private readonly sandboxUrls = new Map<string, Promise<string>>();
  /**
   * Sandboxes whose queue was found deleted while our view still lists them: their cleanup has
   * run, so the queue is not created again (a message moved there would be lost with it).
   */
  private readonly gone = new Set<string>();
  private readonly moves = new Map<string, Set<Promise<unknown>>>();
  private readonly cleanups = new Map<string, Promise<void>>();
  private url: string | undefined;
  private closing = false;
  private stopped: Promise<void> | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private readonly unsubscribe: () => void;
  private readyResolve!: () => void;
  private readyReject!: (err: Error) => void;
  private readonly readyPromise: Promise<void>;
  private readonly loop: Promise<void>;

  constructor(options: SqsSelectiveConsumerOptions) {
    super();
    if (typeof options !== 'object' || options === null)
      throw new TypeError('branchline: createSqsSelectiveConsumer needs an options object');
    if (!options.client || typeof (options.client as { send?: unknown }).send !== 'function')
      throw new TypeError(
        'branchline: option client must be an SQSClient from @aws-sdk/client-sqs (with region and credentials)',
      );
    checkQueueName(options.queue);
    if (typeof options.onMessage !== 'function')
      throw new TypeError('branchline: option onMessage must be a function (message, info) => …');
    const runtime = options.runtime ?? defaultRuntime();
    if (!(options.service ?? runtime.config.service))
      throw new TypeError(
        'branchline: createSqsSelectiveConsumer needs a service name: pass { service } or set BRANCHLINE_SERVICE',
      );
    const holdTimeoutMs = positiveInt('holdTimeoutMs', options.holdTimeoutMs, 30_000);
    this.visibilityMs = positiveInt('visibilityTimeoutMs', options.visibilityTimeoutMs, 30_000);
    if (this.visibilityMs < 1000 || this.visibilityMs > 43_200_000)
      throw new RangeError(
        `branchline: option visibilityTimeoutMs must be between 1000 and 43200000 (SQS's 12 hours), got ${this.visibilityMs}`,
      );
    const waitMs = options.waitTimeMs ?? 20_000;
    if (typeof waitMs !== 'number' || !(waitMs >= 0 && waitMs <= 20_000))
      throw new RangeError(
        `branchline: option waitTimeMs must be between 0 and 20000 (got ${String(waitMs)})`,
      );
    this.waitSeconds = Math.round(waitMs / 1000);
    this.pollers = positiveInt('pollers', options.pollers, 2);
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.drainGraceMs = checkDurationMsOrDefault(options.drainGraceMs, 10_000);
    this.seen = new Window(positiveInt('dedupeWindow', options.dedupeWindow, 100_000));
    this.selector = createMessageSelector({
      service: options.service,
      sandbox: options.sandbox,
      routes: options.routes,
      runtime,
      holdTimeoutMs,
      backoff: resolveBackoff(options.backoff, 'sqs backoff'),
      transport: 'sqs',
    });
    this.client = options.client;
    this.service = this.selector.service;
    this.sandbox = this.selector.sandbox;
    this.baselineQueue = options.queue;
    this.queue = this.sandbox === undefined ? options.queue : sandboxQueueName(options.queue, this.sandbox);
    this.onMessage = options.onMessage;
    this.sandboxQueueAttributes = options.sandboxQueueAttributes;
    this.readyPromise = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.readyPromise.catch(noop);
    this.unsubscribe = this.selector.onOwnersChanged((change) => this.onOwnersChanged(change));
    this.loop = this.run();
  }

  ready(): Promise<void> {
    return this.readyPromise;
  }

  async cleanupsSettled(): Promise<void> {
    while (this.cleanups.size > 0) await Promise.allSettled([...this.cleanups.values()]);
  }

  close(): Promise<void> {
    return this.stop(undefined);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  private async run(): Promise<void> {
    try {
      this.url = await this.resolveUrl();
    } catch (err) {
      this.readyReject(err as Error);
      if (!this.closing) void this.stop('failed');
      return;
    }
    if (!this.url) {
      this.readyReject(new Error(`branchline: the SQS consumer of ${this.queue} ended before it started`));
      return;
    }
    this.ticker = setInterval(
      () => this.extendVisibility(),
      Math.max(250, Math.floor(this.visibilityMs / 4)),
    );
    this.ticker.unref();
    this.readyResolve();
    await Promise.all(Array.from({ length: this.pollers }, () => this.poll()));
  }

  private async resolveUrl(): Promise<string | undefined> {
    for (let attempt = 0; !this.closing; attempt++) {
      try {
        if (this.sandbox === undefined) {
          const url = await queueUrl(this.client, this.queue);
          if (!url)
            throw new Error(
              `branchline: the SQS queue "${this.queue}" does not exist; create it (the baseline queue of service ${this.service}) before starting its consumer`,
            );
          return url;
        }
        // A sandbox's queue is created when the sandbox routes the service; wait for the view to say so.
        if (!this.selector.owners.has(this.sandbox)) {
          await this.selector.waitForView(1000);
          attempt = -1;
          continue;
        }
        // The baseline creates the queue when it sees the sandbox; creating it here could bring
        // back a queue a cleanup just deleted, with nobody left to drain it.
        const url = await queueUrl(this.client, this.queue);
        if (url) return url;
        await sleep(Math.min(1000, this.selector.retryDelayMs(Math.min(attempt, 6))));
      } catch (err) {
        if (String((err as Error).message).startsWith('branchline:')) throw err;
        this.stats.errors++;
        warnRateLimited('sqs-resolve', 'branchline: could not reach SQS to find the queue; retrying', {
          queue: this.queue,
          err: String(err),
        });
        await sleep(this.selector.retryDelayMs(Math.min(attempt, 6)));
      }
    }
    return undefined;
  }

  private stop(reason: string | undefined): Promise<void> {
    if (this.stopped) return this.stopped;
    this.closing = true;
    if (reason) this.endReason = reason;
    this.stopped = (async () => {
      this.abort.abort();
      this.unsubscribe();
      const settled = Promise.all([this.loop, ...this.holds])
        .then(() => Promise.all(this.deleting))
        .then(noop);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([settled, new Promise<void>((r) => (timer = setTimeout(r, this.closeTimeoutMs)))]);
      clearTimeout(timer);
      if (this.ticker) clearInterval(this.ticker);
      this.selector.close();
      this.readyReject(
        new Error(`branchline: the SQS consumer of ${this.queue} was closed before it started`),
      );
      if (reason) {
        logger().info('branchline: SQS sandbox consumer ended', { queue: this.queue, reason });
        this.emit('end', reason);
      }
    })();
    return this.stopped;
  }

  private onOwnersChanged(change: OwnersChange): void {
    if (this.sandbox !== undefined) {
      if (change.removed.some((o) => o.sandbox === this.sandbox)) void this.stop('sandbox-deleted');
      return;
    }
    for (const o of change.removed) {
      this.sandboxUrls.delete(o.sandbox);
      this.scheduleCleanup(o.sandbox);
    }
    // Create the queue when the sandbox appears, so its consumer can start receiving.
    for (const o of change.added) {
      this.gone.delete(o.sandbox);
      this.sandboxUrl(o.sandbox).catch(noop);
    }
  }

  private sandboxUrl(sandbox: string): Promise<string> {
    let p = this.sandboxUrls.get(sandbox);
    if (!p) {
      p = createQueue(
        this.client,
        sandboxQueueName(this.baselineQueue, sandbox),
        this.sandboxQueueAttributes,
      );
      const mine = p;
      this.sandboxUrls.set(sandbox, p);
      p.catch((err) => {
        if (this.sandboxUrls.get(sandbox) === mine) this.sandboxUrls.delete(sandbox);
        warnRateLimited(
          'sqs-create',
          'branchline: could not create a sandbox queue; retrying on the next move',
          {
            sandbox,
            err: String(err),
          },
        );
      });
    }
    return p;
  }

  /**
   * A sandbox stopped routing the service: once our own moves to it have settled, return what
   * waits in its queue to the baseline and delete the queue. Every baseline replica does this.
   */
  private scheduleCleanup(sandbox: string): void {
    if (this.cleanups.has(sandbox)) return;
    const run = async () => {
      const pending = this.moves.get(sandbox);
      if (pending?.size) await Promise.allSettled([...pending]);
      for (let attempt = 0; !this.closing; attempt++) {
        try {
          const r: SandboxQueueCleanupResult = await removeSandboxQueue(this.client, {
            queue: this.baselineQueue,
            sandbox,
            drainGraceMs: this.drainGraceMs,
            visibilityTimeoutMs: this.visibilityMs,
          });
          this.stats.returned += r.returned;
          this.emit('sandbox-queue-removed', r);
          return;
        } catch (err) {
          this.stats.errors++;
          logger().warn('branchline: could not return a deleted sandbox queue yet; retrying', {
            sandbox,
            err: String(err),
          });
          await sleep(this.selector.retryDelayMs(Math.min(attempt, 6)));
        }
      }
    };
    const p = run().finally(() => this.cleanups.delete(sandbox));
    this.cleanups.set(sandbox, p);
  }

  // ---- receiving ------------------------------------------------------------------------------

  private async poll(): Promise<void> {
    const url = this.url!;
    const input = {
      QueueUrl: url,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: this.waitSeconds,
      VisibilityTimeout: Math.ceil(this.visibilityMs / 1000),
      MessageAttributeNames: [...RECEIVE_ATTRIBUTES.MessageAttributeNames],
      MessageSystemAttributeNames: [...RECEIVE_ATTRIBUTES.MessageSystemAttributeNames],
    };
    for (let attempt = 0; !this.closing; ) {
      let msgs: Message[];
      try {
        const res = await this.client.send(new ReceiveMessageCommand(input), {
          abortSignal: this.abort.signal,
        });
        msgs = res.Messages ?? [];
        attempt = 0;
      } catch (err) {
        if (this.closing) return;
        this.stats.errors++;
        if (isQueueGone(err) && this.sandbox !== undefined) {
          void this.stop('sandbox-queue-deleted');
          return;
        }
        warnRateLimited('sqs-receive', 'branchline: an SQS receive failed; retrying', {
          queue: this.queue,
          err: String(err),
        });
        await sleep(this.selector.retryDelayMs(Math.min(attempt++, 6)));
        continue;
      }
      if (msgs.length) await this.handleBatch(msgs);
    }
  }

  private keyOf(m: Message): string | undefined {
    const attrs = m.MessageAttributes as MessageAttributes | undefined;
    if (attrs === undefined) return undefined;
    if (this.selector.baggageOnly) {
      const v = attrs[BAGGAGE_ATTRIBUTE]?.StringValue;
      return v === undefined ? undefined : this.selector.keyFromBaggage(v);
    }
    return this.selector.readKey(attrs, attributesGetter);
  }

  private async handleBatch(msgs: Message[]): Promise<void> {
    const done: Message[] = [];
    const work: Promise<void>[] = [];
    let moves: Map<string, Message[]> | undefined;
    for (const m of msgs) {
      this.track(m);
      if (this.isRepeat(m)) {
        // Processed or moved here already; its deletion (or the original's) did not get through.
        this.stats.duplicates++;
        done.push(m);
        continue;
      }
      const key = this.keyOf(m);
      const returned = parseMeta(m.MessageAttributes as MessageAttributes)?.r !== undefined;
      // A sandbox queue holds only what its sandbox owns, and a returned message is the baseline's.
      if (this.sandbox !== undefined || returned || key === undefined) {
        work.push(this.processInto(m, key, done));
        continue;
      }
      const at = messageTime(m);
      const d = this.selector.decide(key, at);
      if (d.action === 'hold') {
        this.hold(m, key, at, d);
        continue;
      }
      const owner = this.ownerOf(d);
      if (owner === undefined) work.push(this.processInto(m, key, done));
      else {
        moves ??= new Map();
        const list = moves.get(owner);
        if (list) list.push(m);
        else moves.set(owner, [m]);
      }
    }
    if (moves) for (const [owner, list] of moves) work.push(this.move(owner, list, done));
    if (work.length) await Promise.all(work);
    // The deletion runs while the poller receives again (bounded: a poller waits when too many
    // deletions are still pending); close() waits for them.
    const p = this.remove(done);
    this.deleting.add(p);
    void p.finally(() => this.deleting.delete(p));
    if (this.deleting.size > this.pollers * 2) await Promise.race(this.deleting);
  }

  /**
   * A message this consumer already processed (the original or any copy of it), or an original it
   * already moved: its deletion did not get through, so it came back. A copy returned from a
   * sandbox queue is not a repeat of the move that put it there.
   */
  private isRepeat(m: Message): boolean {
    const id = identity(m);
    if (this.seen.has(`p:${id}`)) return true;
    return id === m.MessageId && this.seen.has(`m:${id}`);
  }

  /** The sandbox to move a decided message to, or undefined to process it here. */
  private ownerOf(d: FinalSelection): string | undefined {
    if (d.action === 'process') return undefined;
    const owner = d.owner;
    if (owner === undefined || !this.selector.owners.has(owner) || this.gone.has(owner)) {
      // The owner at the message's time no longer routes the service: its messages are the baseline's.
      this.stats.ownerGone++;
      return undefined;
    }
    return owner;
  }

  private async processInto(m: Message, key: string | undefined, done: Message[]): Promise<void> {
    if (await this.process(m, key)) done.push(m);
  }

  /** Runs the handler; true when it succeeded (the message is then deleted). */
  private async process(m: Message, key: string | undefined): Promise<boolean> {
    this.stats.processed++;
    this.selector.noteProcessed();
    const attrs = m.MessageAttributes as MessageAttributes | undefined;
    const meta = parseMeta(attrs);
    const info: SqsMessageInfo = {
      queue: this.queue,
      key,
      time: messageTime(m),
      redelivered: receiveCount(m) > 1 || (meta?.c ?? 1) > 1,
      returnedFrom: meta?.r,
    };
    try {
      const base = this.selector.extractContext(attrs, attributesGetter);
      await this.selector.run(key, () => this.onMessage(m, info), base);
      this.seen.add(`p:${identity(m)}`);
      return true;
    } catch (err) {
      logger().error('branchline: the message handler threw; the message will be received again', {
        queue: this.queue,
        messageId: m.MessageId,
        err: String(err),
      });
      await this.release(m, Math.ceil(this.selector.retryDelayMs(receiveCount(m)) / 1000));
      return false;
    }
  }

  /**
   * Copies the messages to the owner's queue, then (with the caller's batch) deletes the originals.
   * When the owner's queue is gone, the baseline processes them.
   */
  private async move(owner: string, msgs: Message[], done: Message[]): Promise<void> {
    let set = this.moves.get(owner);
    if (!set) {
      set = new Set();
      this.moves.set(owner, set);
    }
    const p = this.moveNow(owner, msgs, done);
    set.add(p);
    try {
      await p;
    } finally {
      set.delete(p);
      if (set.size === 0 && this.moves.get(owner) === set) this.moves.delete(owner);
    }
  }

  private async moveNow(owner: string, msgs: Message[], done: Message[]): Promise<void> {
    try {
      const url = await this.sandboxUrl(owner);
      const { sent, failed } = await copyBatch(
        this.client,
        url,
        msgs,
        { f: this.baselineQueue },
        Math.max(500, this.drainGraceMs / 2),
      );
      for (const m of sent) {
        this.seen.add(`m:${identity(m)}`);
        done.push(m);
      }
      this.stats.moved += sent.length;
      if (sent.length) this.selector.noteSkipped(sent.length);
      for (const m of failed) await this.release(m, 1);
    } catch (err) {
      if (isQueueGone(err)) {
        // The sandbox was deleted (and its queue drained) after our view was taken.
        this.sandboxUrls.delete(owner);
        this.gone.add(owner);
        this.stats.unroutableMoves += msgs.length;
        await Promise.all(msgs.map((m) => this.processInto(m, this.keyOf(m), done)));
        return;
      }
      this.stats.errors++;
      warnRateLimited(
        'sqs-move',
        'branchline: could not move messages to their sandbox queue; they will be received again',
        {
          owner,
          err: String(err),
        },
      );
      for (const m of msgs) await this.release(m, Math.ceil(this.selector.retryDelayMs(1) / 1000));
    }
  }

  /**
   * The route view does not reach the message's time yet: hold it (its visibility extended),
   * bounded by holdTimeoutMs; then act. A hold that times out, or ends because the consumer
   * stops, makes the message visible again at once.
   */
  private hold(m: Message, key: string, at: number | undefined, first: HoldSelection): void {
    this.stats.held++;
    const p = this.selector
      .hold(key, at, { first, signal: this.abort.signal, where: `message ${m.MessageId} of ${this.queue}` })
      .then(
        async (d) => {
          if (this.closing) return this.release(m, 0);
          const done: Message[] = [];
          const owner = this.ownerOf(d);
          if (owner === undefined) await this.processInto(m, key, done);
          else await this.move(owner, [m], done);
          await this.remove(done);
        },
        async (err) => {
          if (err instanceof HoldTimeoutError) {
            this.stats.holdTimeouts++;
            logger().warn(
              'branchline: held a message longer than holdTimeoutMs because the route view does not cover its time; making it visible again (is the registry reachable?)',
              { queue: this.queue, key, at, holdTimeoutMs: this.selector.holdTimeoutMs },
            );
          }
          await this.release(m, 0);
        },
      )
      .catch((err) => logger().error('branchline: a held SQS message failed', { err: String(err) }))
      .finally(() => {
        this.holds.delete(p);
      });
    this.holds.add(p);
  }

  // ---- visibility and deletion ----------------------------------------------------------------

  private track(m: Message): void {
    if (m.ReceiptHandle)
      this.inflight.set(m.ReceiptHandle, { msg: m, extendAt: Date.now() + this.visibilityMs / 2 });
  }

  private untrack(m: Message): void {
    if (m.ReceiptHandle) this.inflight.delete(m.ReceiptHandle);
  }

  /** Extends the visibility of messages still being handled or held, in batches of 10. */
  private extendVisibility(): void {
    if (!this.url || this.inflight.size === 0) return;
    const now = Date.now();
    const due: InFlight[] = [];
    for (const f of this.inflight.values()) if (f.extendAt <= now) due.push(f);
    for (let i = 0; i < due.length; i += 10) {
      const chunk = due.slice(i, i + 10);
      for (const f of chunk) f.extendAt = now + this.visibilityMs / 2;
      this.client
        .send(
          new ChangeMessageVisibilityBatchCommand({
            QueueUrl: this.url,
            Entries: chunk.map((f, j) => ({
              Id: String(j),
              ReceiptHandle: f.msg.ReceiptHandle,
              VisibilityTimeout: Math.ceil(this.visibilityMs / 1000),
            })),
          }),
        )
        .then(
          (out) => {
            this.stats.extended += chunk.length - (out.Failed?.length ?? 0);
          },
          (err) => {
            this.stats.errors++;
            warnRateLimited(
              'sqs-extend',
              'branchline: could not extend the visibility of messages in progress',
              {
                queue: this.queue,
                err: String(err),
              },
            );
          },
        );
    }
  }

  /** Makes a message visible again after `seconds` (0: at once), so it is received again. */
  private async release(m: Message, seconds: number): Promise<void> {
    this.untrack(m);
    try {
      await this.client.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: this.url,
          ReceiptHandle: m.ReceiptHandle,
          VisibilityTimeout: Math.min(seconds, 43_200),
        }),
      );
    } catch (err) {
      // It comes back when its visibility timeout passes.
      this.stats.errors++;
      warnRateLimited(
        'sqs-release',
        'branchline: could not make a message visible again; it returns after its visibility timeout',
        {
          queue: this.queue,
          err: String(err),
        },
      );
    }
  }

  private async remove(msgs: Message[]): Promise<void> {
    if (msgs.length === 0) return;
    for (const m of msgs) this.untrack(m);
    try {
      await deleteMessages(this.client, this.url!, msgs);
    } catch (err) {
      // They come back after the visibility timeout, and are recognised as repeats.
      this.stats.errors++;
      warnRateLimited(
        'sqs-delete',
        'branchline: could not delete handled messages; they will be received again and recognised as repeats',
        {
          queue: this.queue,
          err: String(err),
        },
      );
    }
  }
}

/**
 * Consumes an SQS queue (or, in a sandbox, the sandbox's own queue) so that every message is
 * processed by exactly one of {baseline, the sandbox that owns its key}. See docs/sqs.md.
 */
export function createSqsSelectiveConsumer(options: SqsSelectiveConsumerOptions): SqsSelectiveConsumer {
  return new SqsSelectiveConsumerImpl(options);
}
