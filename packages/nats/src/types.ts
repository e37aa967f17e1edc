import type { BackoffOptions, BranchlineRuntime, RouteTableSpec } from '@branchline/core';
import type { RouteSource, RouteTable } from '@branchline/core/transport';
import type { ConsumeOptions, ConsumerConfig, JsMsg } from '@nats-io/jetstream';

/** What a selective consumer does when a message stays undecidable for `holdTimeoutMs`. */
export type HoldTimeoutAction =
  /** `nak` the message with a backoff delay: JetStream redelivers it later; nothing is guessed. */
  | 'redeliver'
  /** Decide with what the consumer knows now (current table; never synced → baseline processes). */
  | 'decide-now';

export interface SelectiveConsumerOptions {
  /** The JetStream stream to read (retention `limits`; see docs/nats.md). */
  stream: string;
  /** The baseline durable consumer's name. A sandbox consumer uses `sandboxDurableName(durable, sandbox)`. */
  durable: string;
  /** This process's service (default `BRANCHLINE_SERVICE`). Required. */
  service?: string;
  /** This process's sandbox (default `BRANCHLINE_SANDBOX`); `null` forces baseline. */
  sandbox?: string | null;
  /** Where routes come from (default: the runtime's source, from the environment). */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  /** A runtime from `createRuntime` (identity, key reader, routes); options above win over it. */
  runtime?: BranchlineRuntime;
  /** Longest time one message is held while the route view cannot decide it, ms. Default 30000. */
  holdTimeoutMs?: number;
  /** What to do when a hold times out. Default `'redeliver'`. */
  onHoldTimeout?: HoldTimeoutAction;
  /** Delays of `nak` after a hold timeout or a handler error. Default `{ initialMs: 100, maxMs: 5000, factor: 2 }`. */
  backoff?: BackoffOptions;
  /**
   * A new sandbox durable starts delivering this long before the sandbox's activation time, ms,
   * so messages stamped slightly before the registry recorded the sandbox are seen too (and
   * skipped if not owned). Default 60000.
   */
  startMarginMs?: number;
  /** A sandbox consumer whose sandbox is deleted processes what it owns, then stops. Default true. */
  drainOnDelete?: boolean;
  /**
   * After a deletion, how long past the view's `completeUntil` the drain waits before it reads
   * the stream's last sequence: covers a NATS server clock behind the registry's. Default 2000.
   */
  drainGraceMs?: number;
  /** Delete the sandbox's durable after a drain. Default true. */
  deleteDurableOnDrain?: boolean;
  /** Called once a deleted sandbox's consumer has drained and stopped (errors are logged). */
  onDrained?: (result: DrainResult) => void;
  /**
   * Settings for durables this consumer creates (`filter_subject`, `ack_wait`,
   * `max_ack_pending`, …). `durable_name`, `ack_policy` (explicit) and, for sandbox durables,
   * the delivery start are set by Branchline. An existing durable is used as it is.
   */
  consumerConfig?: Partial<ConsumerConfig>;
  /** Options for `consumer.consume()` (`max_messages`, `expires`, …). */
  consumeOptions?: Partial<ConsumeOptions>;
}

export interface DrainResult {
  durable: string;
  sandbox: string;
  /** Registry time up to which the drain made sure every owned message was handled. */
  until: number;
  /** The stream sequence the durable's acknowledgements reached. */
  streamSequence: number;
  /** Whether the durable was deleted afterwards. */
  durableDeleted: boolean;
}

export interface SelectiveConsumerStats {
  /** Messages handed to the handler. */
  processed: number;
  /** Messages another consumer owns (acknowledged without calling the handler). */
  skipped: number;
  /** Messages held because the route view could not decide them yet. */
  held: number;
  /** Holds that reached `holdTimeoutMs`. */
  holdTimeouts: number;
  /** Handler calls that threw (the message was `nak`ed and is redelivered). */
  failed: number;
  /**
   * Deliveries of a message this consumer had already processed (JetStream redelivered it):
   * acknowledged without calling the handler again.
   */
  duplicates: number;
}

/** The handler of owned messages. Resolve to acknowledge; throw to have the message redelivered. */
export type MessageHandler = (msg: JsMsg) => unknown;

/** A JetStream consumer that processes only the messages this process owns. */
export interface SelectiveConsumer {
  /** The durable this consumer reads (derived for sandbox consumers). */
  readonly durable: string;
  readonly stream: string;
  readonly service: string;
  readonly sandbox: string | undefined;
  readonly stats: SelectiveConsumerStats;
  /**
   * Creates the durable if needed and starts delivering owned messages to `handler`, inside each
   * message's context. Resolves once consuming has started. Do not `ack` in the handler: the
   * consumer does after it returns.
   */
  consume(handler: MessageHandler): Promise<void>;
  /** Stops consuming; resolves when the message being handled is done. The durable stays. */
  stop(): Promise<void>;
  /** Resolves when a deleted sandbox's consumer has drained and stopped; never for baseline. */
  readonly drained: Promise<DrainResult>;
  /** Whether this consumer is draining (its sandbox was deleted). */
  isDraining(): boolean;
}
