import { logger, type OwnersChange } from '@branchline/core';
import { stopConsumer } from './connection.js';
import type { SelectiveConsumerImpl } from './consumer.js';
import { removeSandboxQueue, sandboxQueueName, sleep } from './queues.js';
import type { SandboxQueueCleanupResult } from './types.js';

// ---- route changes: sandboxes that start or stop overriding the service -----------------------

/** Follows the sandboxes that override the consumer's service; returns an unsubscribe. */
export function watchRoutes(c: SelectiveConsumerImpl): () => void {
  return c.selector.onOwnersChanged((change) => onOwnersChanged(c, change));
}

function onOwnersChanged(c: SelectiveConsumerImpl, change: OwnersChange): void {
  if (c.sandbox !== undefined) {
    if (change.removed.some((o) => o.sandbox === c.sandbox)) void stopConsumer(c, 'sandbox-deleted');
    return;
  }
  for (const o of change.removed) {
    c.declared.delete(sandboxQueueName(c.baselineQueue, o.sandbox));
    scheduleCleanup(c, o.sandbox);
  }
  // A sandbox that starts routing again is a new incarnation whose queue may be gone.
  for (const o of change.added) c.declared.delete(sandboxQueueName(c.baselineQueue, o.sandbox));
}

/**
 * A sandbox stopped routing this service in our view: once our own moves to it have settled,
 * return what waits in its queue to the baseline and remove the queue. Every baseline replica
 * does this when it sees the change, so a replica that re-created the queue with an older view
 * also removes it once its view catches up.
 */
function scheduleCleanup(c: SelectiveConsumerImpl, sandbox: string): void {
  if (c.cleanups.has(sandbox)) return;
  const run = async () => {
    const pending = c.moves.get(sandbox);
    if (pending?.size) await Promise.allSettled([...pending]);
    for (let attempt = 0; ; attempt++) {
      const model = await c.liveModel();
      if (!model) return;
      try {
        const r: SandboxQueueCleanupResult = await removeSandboxQueue(model, c.baselineQueue, sandbox);
        c.stats.returned += r.returned;
        c.emit('sandbox-queue-removed', r);
        return;
      } catch (err) {
        logger().warn('branchline: could not return a deleted sandbox queue yet; retrying', {
          sandbox,
          err: String(err),
        });
        await sleep(c.selector.retryDelayMs(Math.min(attempt, 6)));
      }
    }
  };
  const p = run().finally(() => c.cleanups.delete(sandbox));
  c.cleanups.set(sandbox, p);
}
