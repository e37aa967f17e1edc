import type {
  BackoffOptions,
  BranchlineRuntime,
  DeprecatedBackoffOptions,
  RouteSource,
  RouteTable,
  RouteTableSpec,
} from '@branchline/core';
import type { Channel, ChannelModel, ConsumeMessage, Options } from 'amqplib';

/** Options of `instrumentChannel` / `instrumentConnection`. */
export interface PublishInstrumentationOptions {
  /** Baggage member name; default the runtime's (`BRANCHLINE_BAGGAGE_KEY`, else `branchline`). */
  baggageKey?: string;
  /**
   * Stamp keyed messages with the publish time (header `x-branchline-time`, ms) so every
   * consumer decides ownership at that time and replicas with different views agree. Default true.
   */
  stampTime?: boolean;
}

/** How the consumer reaches the broker: an AMQP URL / connect options, or a function that connects. */
export type ConnectTarget = string | Options.Connect | (() => Promise<ChannelModel>);

/**
 * Backoff for reconnecting: core's `BackoffOptions` (`initialMs` default 100, `maxMs` default
 * 5000, `factor` default 2). The older names `initialDelayMs` and `maxDelayMs` are still
 * accepted (deprecated; one warning per process).
 */
export type ReconnectOptions = BackoffOptions & DeprecatedBackoffOptions;

/** A delivery handed to `onMessage`: amqplib's message, running inside its routing context. */
export type SelectiveMessageHandler = (message: ConsumeMessage, channel: Channel) => void | Promise<void>;

export interface SelectiveConsumerOptions {
  /** The broker: `amqp://guest:guest@127.0.0.1:5672`, amqplib connect options, or `() => amqp.connect(...)`. */
  connection: ConnectTarget;
  /** amqplib socket options (TLS, `clientProperties`, …) when `connection` is a URL or options. */
  socketOptions?: Record<string, unknown>;
  /**
   * The baseline queue of this service. A baseline consumer reads it; a sandbox consumer reads
   * the sandbox's own queue derived from it (see `sandboxQueueName`).
   */
  queue: string;
  /** Called for every message this consumer processes, inside the message's context. */
  onMessage: SelectiveMessageHandler;
  /**
   * Declares what the application needs (exchanges, the baseline queue, bindings) on every
   * (re)connect, before consuming. Runs on a channel that is closed afterwards.
   */
  setup?: (channel: Channel) => Promise<void>;
  /** This process's service; default the runtime's (`BRANCHLINE_SERVICE`). */
  service?: string;
  /** This process's sandbox; `null` forces baseline. Default the runtime's (`BRANCHLINE_SANDBOX`). */
  sandbox?: string | null;
  /** Where route tables come from (a source, a table or a table document); default the runtime's. */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  /** Runtime to take service, sandbox, routes and key reader from; default `defaultRuntime()`. */
  runtime?: BranchlineRuntime;
  /** Unacknowledged messages per consumer (amqplib `prefetch`). Default 20. */
  prefetch?: number;
  /**
   * Ack after `onMessage` resolves; on a throw or rejection, nack (requeue per `requeueOnError`).
   * Default false: the handler acks with `channel.ack(message)`, as with plain amqplib.
   */
  autoAck?: boolean;
  /** With `autoAck`, whether a failed message is requeued. Default false. */
  requeueOnError?: boolean;
  /**
   * How long a baseline consumer holds a keyed message whose time its route view does not
   * cover yet (or before the first sync). After that it is requeued and counted. Default 30000.
   */
  holdTimeoutMs?: number;
  /** How long `close()` (or a sandbox consumer ending) waits for running handlers, ms. Default 10000. */
  closeTimeoutMs?: number;
  /**
   * Backoff for reconnecting after the connection drops (and for retrying a sandbox queue's
   * cleanup): `{ initialMs, maxMs, factor }`, default `{ initialMs: 100, maxMs: 5000, factor: 2 }`.
   */
  reconnect?: ReconnectOptions;
  /** Extra `x-arguments` for sandbox queues (for example `{ 'x-queue-type': 'quorum' }`). */
  sandboxQueueArguments?: Record<string, unknown>;
  /** Extra amqplib consume options (`consumerTag`, `priority`, …); `noAck` is not supported. */
  consumeOptions?: Omit<Options.Consume, 'noAck'>;
}

/** Running totals of one consumer, for tests, health endpoints and logs. */
export interface SelectiveConsumerStats {
  /** Messages handed to `onMessage`. */
  processed: number;
  /** Messages a baseline consumer moved to a sandbox's queue (confirmed, then acked). */
  moved: number;
  /** Messages a baseline consumer processed because their owner's queue was gone (mandatory return). */
  unroutableMoves: number;
  /** Messages whose owner no longer routes this service in the consumer's view; processed by baseline. */
  ownerGone: number;
  /** Messages held because the route view did not cover their time yet. */
  held: number;
  /** Held messages requeued after `holdTimeoutMs`. */
  holdTimeouts: number;
  /** Messages moved back from sandbox queues by this consumer's cleanups. */
  returned: number;
  /** Successful (re)connections. */
  connects: number;
}

export interface SandboxQueueCleanupOptions {
  /** The baseline queue(s) whose sandbox queue should be returned and removed. */
  queue: string | string[];
  /** The deleted sandbox's name. */
  sandbox: string;
  /**
   * Give up after this long while a consumer is still attached to the sandbox queue (the
   * sandbox's workload still running). Default 60000.
   */
  timeoutMs?: number;
}

export interface SandboxQueueCleanupResult {
  queue: string;
  sandboxQueue: string;
  /** Messages moved back to the baseline queue. */
  returned: number;
  /** The sandbox queue was deleted by this call (false: it did not exist). */
  deleted: boolean;
}
