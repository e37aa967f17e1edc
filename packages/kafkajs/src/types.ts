import type { BranchlineRuntime, RouteTableSpec } from '@branchline/core';
import type { RouteSource, RouteTable } from '@branchline/core/transport';
import type {
  Consumer,
  ConsumerConfig,
  ConsumerRunConfig,
  EachBatchPayload,
  KafkaConfig,
  KafkaMessage,
} from 'kafkajs';

/** What a selective consumer does when a message stays undecidable for `holdTimeoutMs`. */
export type HoldTimeoutAction =
  /** Throw a HoldTimeoutError: kafkajs retries the message (and restarts the consumer), nothing is guessed. */
  | 'error'
  /** Decide with what the consumer knows now (current table; never synced → baseline processes). */
  | 'decide-now';

export interface SelectiveConsumerOptions extends ConsumerConfig {
  /** The baseline consumer group id. A sandbox consumer joins `sandboxGroupId(groupId, sandbox)`. */
  groupId: string;
  /** This process's service (default `BRANCHLINE_SERVICE`). Required. */
  service?: string;
  /** This process's sandbox (default `BRANCHLINE_SANDBOX`); unset = baseline. */
  sandbox?: string;
  /** Where routes come from (default: the runtime's source, from the environment). */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  /** A runtime from `createRuntime` (identity, key reader, routes); options above win over it. */
  runtime?: BranchlineRuntime;
  /** Longest time one message is held while the route view cannot decide it, ms. Default 30000. */
  holdTimeoutMs?: number;
  /** What to do when the hold times out. Default `'error'`. */
  onHoldTimeout?: HoldTimeoutAction;
  /**
   * A new sandbox consumer group starts this long before the sandbox's activation time, ms, so
   * messages whose producer clock ran slightly behind are seen too (and skipped if not owned).
   * Default 60000.
   */
  startMarginMs?: number;
  /** A sandbox consumer whose sandbox is deleted drains what it owns, then leaves. Default true. */
  drainOnDelete?: boolean;
  /**
   * After a deletion, how long past the view's `completeUntil` the drain waits before it fixes
   * its target offsets: covers producers whose timestamps (CreateTime) lag behind the broker.
   * Default 2000; 0 is right for LogAppendTime topics.
   */
  drainGraceMs?: number;
  /** Delete the sandbox's consumer group after a drain. Default true. */
  deleteGroupOnDrain?: boolean;
  /** Called once a deleted sandbox's consumer has drained and left (errors are logged). */
  onDrained?: (result: DrainResult) => void;
}

export interface DrainResult {
  groupId: string;
  sandbox: string;
  /** Registry time up to which the drain made sure every owned message was handled. */
  until: number;
  /** Offsets the group reached, per `topic:partition`. */
  offsets: Record<string, string>;
  /** Whether the consumer group was deleted afterwards. */
  groupDeleted: boolean;
}

export interface SelectiveConsumerStats {
  /** Messages handed to the handler. */
  processed: number;
  /** Messages another consumer owns (committed without calling the handler). */
  skipped: number;
  /** Messages held because the route view could not decide them yet. */
  held: number;
  /** Holds that reached `holdTimeoutMs`. */
  holdTimeouts: number;
}

/** The eachBatch payload: `batch.messages` holds only the messages this consumer owns. */
export interface SelectiveEachBatchPayload extends EachBatchPayload {
  /**
   * Runs `fn` for each owned message in order, inside the message's context (so outgoing calls
   * carry its routing key), then resolves its offset and heartbeats. Stops early when the
   * consumer stops or the partition is re-sought.
   */
  forEachMessage(fn: (message: KafkaMessage) => Promise<void>): Promise<void>;
  /** Runs `fn` inside the context of `message` (its routing key restored). */
  runInMessageContext<R>(message: KafkaMessage, fn: () => R): R;
}

export type SelectiveRunConfig = Omit<ConsumerRunConfig, 'eachBatch'> & {
  eachBatch?: (payload: SelectiveEachBatchPayload) => Promise<void>;
};

/** A kafkajs Consumer that processes only the messages this process owns. */
export type SelectiveConsumer = Omit<Consumer, 'run'> & {
  run(config?: SelectiveRunConfig): Promise<void>;
  /** The consumer group this consumer joined (derived for sandbox consumers). */
  readonly groupId: string;
  readonly service: string;
  readonly sandbox: string | undefined;
  readonly stats: SelectiveConsumerStats;
  /** Resolves when a deleted sandbox's consumer has drained and left; never for baseline. */
  readonly drained: Promise<DrainResult>;
  /** Whether this consumer is draining (its sandbox was deleted). */
  isDraining(): boolean;
};

/** How `kafkaConsumerGroupsHook` reaches the cluster: a kafkajs client, or a config to build one. */
export type KafkaAdminTarget = { kafka: { admin(): import('kafkajs').Admin } } | KafkaConfig;
