/**
 * AMQP headers Branchline reads and writes besides `baggage`. All are prefixed `x-branchline-`
 * so they are easy to recognise in a broker's UI and never collide with application headers.
 */

/** Publish time in ms, stamped on keyed messages; ownership is decided at this time. */
export const TIME_HEADER = 'x-branchline-time';
/** Set on a message a baseline consumer moved to a sandbox queue: the baseline queue it came from. */
export const MOVED_FROM_HEADER = 'x-branchline-moved-from';
/** Correlates a moved copy with its original until the broker confirms it. */
export const MOVE_ID_HEADER = 'x-branchline-move-id';
/** The exchange and routing key the original was published with, restored for the sandbox handler. */
export const EXCHANGE_HEADER = 'x-branchline-exchange';
export const ROUTING_KEY_HEADER = 'x-branchline-routing-key';
/** The original had already been delivered once (amqplib's `redelivered`), so the copy may repeat. */
export const REDELIVERED_HEADER = 'x-branchline-redelivered';
/**
 * Set on a message returned from a deleted sandbox's queue to the baseline queue (value: the
 * sandbox). The baseline consumer processes it without deciding again.
 */
export const RETURNED_HEADER = 'x-branchline-returned-from';
