import { logger } from '@branchline/core';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import type { ConfirmedMover } from './queues.js';

/** One connection's worth of state; replaced on every reconnect. */
export interface Session {
  model: ChannelModel;
  channel: Channel;
  mover?: ConfirmedMover;
  open: boolean;
  consumerTag?: string;
  closed: Promise<void>;
  /** Aborted when the session ends: its held messages will be redelivered, their holds end. */
  holds: AbortController;
  /** Marks the session dead and closes its connection (idempotent). */
  end: () => void;
}

export const noop = () => {};

// Per-message tracing costs an object per message, so it is decided once, at load.
export const TRACE = process.env.BRANCHLINE_LOG_LEVEL === 'debug';

export function trace(event: string, msg: ConsumeMessage | undefined, fields: Record<string, unknown>): void {
  logger().debug(`branchline: ${event}`, { id: msg?.properties.messageId, ...fields });
}
