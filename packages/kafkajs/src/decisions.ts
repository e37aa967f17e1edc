import {
  HoldTimeoutError as CoreHoldTimeoutError,
  type FinalSelection,
  type HoldSelection,
  type MessageSelector,
} from '@branchline/core';
import type { KafkaMessage } from 'kafkajs';
import type { HoldTimeoutAction } from './types.js';

/** Thrown (and retried by kafkajs) when a message stayed undecidable for `holdTimeoutMs`. */
export class HoldTimeoutError extends CoreHoldTimeoutError {
  constructor(
    reason: 'never-synced' | 'view-behind-message',
    readonly topic: string,
    readonly partition: number,
    readonly offset: string,
    holdTimeoutMs: number,
  ) {
    super(
      reason,
      holdTimeoutMs,
      `${topic}[${partition}]@${offset}`,
      reason === 'never-synced'
        ? `branchline: held ${topic}[${partition}]@${offset} for ${holdTimeoutMs} ms because this consumer has no route table yet; check BRANCHLINE_REGISTRY / BRANCHLINE_ROUTES and the registry's health (or raise holdTimeoutMs)`
        : `branchline: held ${topic}[${partition}]@${offset} for ${holdTimeoutMs} ms because the route view is not complete up to the message's time; the registry watch is stale or the producer's clock is ahead (use LogAppendTime topics, or raise holdTimeoutMs)`,
    );
    this.name = 'HoldTimeoutError';
  }
}

/** The message's time: its Kafka timestamp (CreateTime or LogAppendTime), ms. */
export function timeOf(message: KafkaMessage): number | undefined {
  const t = Number(message.timestamp);
  return Number.isFinite(t) && t >= 0 ? t : undefined;
}

/** Decides a held message: waits (heartbeating) until the route view can, bounded. */
export type Settle = (
  topic: string,
  partition: number,
  message: KafkaMessage,
  key: string | undefined,
  heartbeat: () => Promise<void>,
  first: HoldSelection,
) => Promise<FinalSelection>;

export function createSettle(
  selector: MessageSelector,
  onHoldTimeout: HoldTimeoutAction,
  signal: () => AbortSignal,
): Settle {
  return (topic, partition, message, key, heartbeat, first) =>
    selector.hold(key, timeOf(message), {
      first,
      heartbeat,
      signal: signal(),
      onTimeout: onHoldTimeout,
      where: `${topic}[${partition}]@${message.offset}`,
      timeoutError: (reason, holdTimeoutMs) =>
        new HoldTimeoutError(reason, topic, partition, message.offset, holdTimeoutMs),
    });
}
