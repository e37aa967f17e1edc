/** Why a message is held: no route table yet, or a view that does not reach the message's time. */
export type HoldReason = 'never-synced' | 'view-behind-message';

/**
 * A message stayed undecidable for `holdTimeoutMs`. The transport hands the message back to its
 * broker's redelivery path (a retry, a requeue, a visibility timeout): nothing is guessed.
 */
export class HoldTimeoutError extends Error {
  constructor(
    readonly reason: HoldReason,
    readonly holdTimeoutMs: number,
    /** Which message, for the log: `orders[2]@1234`, a queue name and message id, … */
    readonly where: string,
    message?: string,
  ) {
    super(
      message ??
        (reason === 'never-synced'
          ? `branchline: held ${where} for ${holdTimeoutMs} ms because this consumer has no route table yet; check BRANCHLINE_REGISTRY / BRANCHLINE_ROUTES and the registry's health (or raise holdTimeoutMs)`
          : `branchline: held ${where} for ${holdTimeoutMs} ms because the route view is not complete up to the message's time; the registry watch is stale or the producer's clock is ahead (or raise holdTimeoutMs)`),
    );
    this.name = 'HoldTimeoutError';
  }
}

/** The consumer stopped while a message was held; the broker redelivers it. */
export class HoldAbandonedError extends Error {
  constructor(where?: string) {
    super(
      `branchline: the consumer stopped while ${where ?? 'a message'} was held; the broker will redeliver it`,
    );
    this.name = 'HoldAbandonedError';
  }
}
