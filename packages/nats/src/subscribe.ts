import type { BackoffOptions, BranchlineRuntime, RouteTableSpec } from '@branchline/core';
import { createMessageSelector, logger, type RouteSource, type RouteTable } from '@branchline/core/transport';
import type { Msg, NatsConnection, Subscription, SubscriptionOptions } from '@nats-io/transport-node';
import { natsHeadersGetter } from './headers.js';

export interface SelectiveSubscriptionOptions {
  /** This process's service (default `BRANCHLINE_SERVICE`). Required. */
  service?: string;
  /** This process's sandbox (default `BRANCHLINE_SANDBOX`); `null` forces baseline. */
  sandbox?: string | null;
  /** Where routes come from (default: the runtime's source, from the environment). */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  /** A runtime from `createRuntime`; options above win over it. */
  runtime?: BranchlineRuntime;
  /**
   * Queue group of the baseline subscription; a sandbox subscription joins
   * `<queue>_sandbox_<sandbox>` so each sandbox gets its own copy of the subject's messages.
   */
  queue?: string;
  /** Other `nc.subscribe` options (`max`, `timeout`); `callback` and `queue` are set here. */
  subscription?: Omit<SubscriptionOptions, 'callback' | 'queue'>;
  backoff?: BackoffOptions;
}

export interface SelectiveSubscription {
  readonly subscription: Subscription;
  readonly service: string;
  readonly sandbox: string | undefined;
  readonly stats: { processed: number; skipped: number; failed: number };
  /** Stops the subscription after the messages already received (NATS `drain`). */
  drain(): Promise<void>;
  unsubscribe(): void;
}

/**
 * A core NATS subscription that calls `handler` only for the messages this process owns, inside
 * the message's context. Core NATS has no server timestamp and no redelivery, so each message is
 * decided by the route table the subscriber holds when it arrives (never held): see
 * docs/nats.md for what this can and cannot promise. Use `createSelectiveConsumer` on a
 * JetStream stream when every message must be processed exactly once.
 */
export function selectiveSubscribe(
  nc: NatsConnection,
  subject: string,
  handler: (msg: Msg) => unknown,
  options: SelectiveSubscriptionOptions = {},
): SelectiveSubscription {
  if (typeof handler !== 'function')
    throw new TypeError(
      'branchline: selectiveSubscribe(nc, subject, handler, options) needs a handler function',
    );
  const selector = createMessageSelector({
    service: options.service,
    sandbox: options.sandbox,
    routes: options.routes,
    runtime: options.runtime,
    backoff: options.backoff,
    transport: 'nats',
  });
  const stats = { processed: 0, skipped: 0, failed: 0 };
  const { sandbox } = selector;
  const queue =
    options.queue === undefined
      ? undefined
      : sandbox === undefined
        ? options.queue
        : `${options.queue}_sandbox_${sandbox}`;
  const subscription = nc.subscribe(subject, {
    ...options.subscription,
    ...(queue === undefined ? {} : { queue }),
    callback(err, msg) {
      if (err) return;
      const key = selector.readKey(msg.headers, natsHeadersGetter);
      const d = selector.decideNow(key);
      if (d.action === 'skip') {
        stats.skipped++;
        selector.noteSkipped();
        return;
      }
      stats.processed++;
      selector.noteProcessed();
      try {
        const r = selector.run(key, () => handler(msg));
        if (r instanceof Promise)
          r.catch((e) => {
            stats.failed++;
            reportFailure(subject, e);
          });
      } catch (e) {
        stats.failed++;
        reportFailure(subject, e);
      }
    },
  });
  return {
    subscription,
    service: selector.service,
    sandbox,
    stats,
    async drain() {
      await subscription.drain();
      selector.close();
    },
    unsubscribe() {
      subscription.unsubscribe();
      selector.close();
    },
  };
}

function reportFailure(subject: string, err: unknown): void {
  // Core NATS cannot redeliver: the message is gone for this subscriber.
  logger().error('branchline: NATS subscription handler threw; core NATS does not redeliver it', {
    subject,
    err: String(err),
  });
}
