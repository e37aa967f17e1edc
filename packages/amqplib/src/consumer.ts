import { EventEmitter } from 'node:events';
import {
  type BranchlineRuntime,
  createMessageSelector,
  defaultRuntime,
  type MessageSelector,
  resolveBackoff,
} from '@branchline/core';
import type { ChannelModel } from 'amqplib';
import { connectionLoop, stopConsumer } from './connection.js';
import { sandboxQueueName, sleep } from './queues.js';
import { watchRoutes } from './route-changes.js';
import { noop, type Session } from './session.js';
import type { SelectiveConsumerOptions, SelectiveConsumerStats, SelectiveMessageHandler } from './types.js';

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

function positiveInt(name: string, v: unknown, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw new TypeError(`branchline: option ${name} must be a positive integer (got ${String(v)})`);
  return v;
}

/**
 * The consumer's state. Its behaviour lives in connection.ts (connecting, reconnecting,
 * stopping), deliveries.ts (each message) and route-changes.ts (sandboxes coming and going);
 * the transport-neutral decisions are core's `MessageSelector`.
 * @internal
 */
export class SelectiveConsumerImpl extends EventEmitter implements SelectiveConsumer {
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
  endReason: string | undefined;

  readonly selector: MessageSelector;
  readonly baselineQueue: string;
  readonly onMessage: SelectiveMessageHandler;
  readonly prefetch: number;
  readonly closeTimeoutMs: number;
  readonly options: SelectiveConsumerOptions;
  session: Session | undefined;
  closing = false;
  everConsumed = false;
  readyResolve!: () => void;
  readyReject!: (err: Error) => void;
  readonly readyPromise: Promise<void>;
  /** Messages waiting for the route view, per hold; stop() waits for their requeue. */
  readonly holds = new Set<Promise<void>>();
  handlersInFlight = 0;
  readonly moves = new Map<string, Set<Promise<void>>>();
  readonly cleanups = new Map<string, Promise<void>>();
  /**
   * Sandbox queues (and their bindings) this consumer declared, kept across reconnects: both are
   * durable, so a new connection finds them. Declaring again after a drop would be wrong: if
   * another replica removed the queue meanwhile, the declaration would re-create and re-bind it
   * while that replica deletes it, and a message moved in between would be lost with it.
   */
  readonly declared = new Map<string, Promise<void>>();
  unsubscribe: () => void = noop;
  wake: (() => void) | undefined;
  loop: Promise<void>;

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
    if (!(options.service ?? runtime.config.service))
      throw new TypeError(
        'branchline: createSelectiveConsumer needs a service name: pass { service } or set BRANCHLINE_SERVICE',
      );
    this.prefetch = positiveInt('prefetch', options.prefetch, 20);
    const holdTimeoutMs = positiveInt('holdTimeoutMs', options.holdTimeoutMs, 30_000);
    this.closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
    this.selector = createMessageSelector({
      service: options.service,
      sandbox: options.sandbox,
      routes: options.routes,
      runtime,
      holdTimeoutMs,
      backoff: resolveBackoff(options.reconnect, 'amqplib reconnect'),
      transport: 'amqplib',
    });
    this.options = options;
    this.service = this.selector.service;
    this.sandbox = this.selector.sandbox;
    this.baselineQueue = options.queue;
    this.queue = this.sandbox === undefined ? options.queue : sandboxQueueName(options.queue, this.sandbox);
    this.onMessage = options.onMessage;
    this.readyPromise = new Promise((resolve, reject) => {
      this.readyResolve = resolve;
      this.readyReject = reject;
    });
    this.readyPromise.catch(noop);
    this.unsubscribe = watchRoutes(this);
    this.loop = connectionLoop(this);
  }

  ready(): Promise<void> {
    return this.readyPromise;
  }

  async cleanupsSettled(): Promise<void> {
    while (this.cleanups.size > 0) await Promise.allSettled([...this.cleanups.values()]);
  }

  async close(): Promise<void> {
    await stopConsumer(this, undefined);
  }

  /** A live connection for maintenance work (cleanups); undefined once the consumer is closing. */
  async liveModel(): Promise<ChannelModel | undefined> {
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
