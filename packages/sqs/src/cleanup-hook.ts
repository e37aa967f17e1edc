import { ListQueuesCommand, SQSClient, type SQSClientConfig } from '@aws-sdk/client-sqs';
import { isValidRoutingKey } from '@branchline/core';
import { logger, type ResourceContext, type ResourceHook } from '@branchline/core/transport';
import { checkQueueName, removeSandboxQueue, sandboxQueueName } from './queues.js';

export interface SqsQueuesHookOptions {
  /** An SQSClient of yours (left open), or `clientConfig` for one the hook makes. */
  client?: SQSClient;
  /** Configuration for the hook's own SQSClient (region, credentials, endpoint). */
  clientConfig?: SQSClientConfig;
  /** The baseline queues (names, not URLs) whose sandbox queues this hook manages. */
  queues: string[];
  /**
   * After a sandbox queue is empty, wait this long and drain once more before deleting it, for
   * moves by baseline consumers whose route view has not seen the deletion yet. Default 10000.
   */
  drainGraceMs?: number;
  /** Give up (the hook fails and is retried) when messages stay in flight this long. Default 60000. */
  timeoutMs?: number;
  /** Visibility timeout for the messages being returned, ms. Default 30000. */
  visibilityTimeoutMs?: number;
}

/** core's `ResourceHook` contract, with the methods this hook implements made required. */
export interface SqsQueuesHook extends ResourceHook {
  type: 'sqs-queues';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<Record<string, unknown>>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  sweep(liveSandboxes: string[]): Promise<void>;
}

/**
 * A registry resource hook (type `sqs-queues`) for sandboxes deleted while no baseline consumer
 * runs to clean up after them: it returns the messages waiting in each of the sandbox's queues
 * to the baseline queue and deletes the sandbox queue (`removeSandboxQueue`); its sweep does the
 * same for sandbox queues of sandboxes that no longer exist. Declare it on a sandbox as
 * `"resources": {"sqs": {"type": "sqs-queues", "spec": {}}}` and register it with
 * `createRegistryServer({ resourceHooks: [sqsQueuesHook({ clientConfig, queues: ['orders'] })] })`.
 * Optional spec: `{"queues": ["orders"]}` limits it to some of the configured queues.
 */
export function sqsQueuesHook(options: SqsQueuesHookOptions): SqsQueuesHook {
  const { queues } = options;
  if (!options.client && !options.clientConfig)
    throw new TypeError('sqs-queues: pass client (an SQSClient) or clientConfig (its configuration)');
  if (!Array.isArray(queues) || queues.length === 0)
    throw new TypeError(
      `sqs-queues: option queues must list the baseline queue names, such as ['orders'] (got ${JSON.stringify(queues)})`,
    );
  for (const q of queues) checkQueueName(q);
  const client = options.client ?? new SQSClient(options.clientConfig ?? {});

  async function clean(pairs: { queue: string; sandbox: string }[], drainGraceMs?: number): Promise<void> {
    const failures: string[] = [];
    for (const { queue, sandbox } of pairs) {
      try {
        const r = await removeSandboxQueue(client, {
          queue,
          sandbox,
          drainGraceMs: drainGraceMs ?? options.drainGraceMs,
          timeoutMs: options.timeoutMs,
          visibilityTimeoutMs: options.visibilityTimeoutMs,
        });
        if (r.deleted)
          logger().info(
            'branchline: returned the sandbox queue of a deleted sandbox to the baseline queue and deleted it',
            {
              sandboxQueue: r.sandboxQueue,
              sandbox,
              returned: r.returned,
              to: queue,
            },
          );
      } catch (err) {
        failures.push(`${sandbox} (${queue}): ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (failures.length)
      throw new Error(
        `sqs-queues: could not remove ${failures.length} sandbox queue(s); messages not returned yet stay where they are and the next run retries: ${failures.join('; ')}`,
      );
  }

  /** Sandboxes with a queue `<queue>-sandbox-<sandbox>` (shortened, hashed names cannot be attributed). */
  async function sandboxesWithQueues(queue: string): Promise<string[]> {
    const head = `${queue}-sandbox-`;
    const out: string[] = [];
    let NextToken: string | undefined;
    do {
      const res = await client.send(
        new ListQueuesCommand({ QueueNamePrefix: head, MaxResults: 1000, NextToken }),
      );
      for (const url of res.QueueUrls ?? []) {
        const name = url.slice(url.lastIndexOf('/') + 1);
        const sandbox = name.slice(head.length);
        if (name.startsWith(head) && isValidRoutingKey(sandbox)) out.push(sandbox);
      }
      NextToken = res.NextToken;
    } while (NextToken);
    return out;
  }

  return {
    type: 'sqs-queues',
    validate(spec) {
      const only = spec.queues;
      if (only === undefined) return;
      if (!Array.isArray(only) || only.some((q) => typeof q !== 'string' || !queues.includes(q)))
        throw new Error(
          `sqs-queues: spec.queues must be a list of queues this hook manages (${queues.join(', ')}) (got ${JSON.stringify(only)})`,
        );
    },
    // Sandbox queues are created by the consumers; nothing to make here.
    async provision(ctx) {
      const only = (ctx.resource.spec.queues as string[] | undefined) ?? queues;
      return { queues: only.map((q) => sandboxQueueName(q, ctx.sandbox.name)) };
    },
    async deprovision(ctx) {
      const only = (ctx.resource.spec.queues as string[] | undefined) ?? queues;
      await clean(only.map((queue) => ({ queue, sandbox: ctx.sandbox.name })));
    },
    async sweep(liveSandboxes) {
      const live = new Set(liveSandboxes);
      const pairs: { queue: string; sandbox: string }[] = [];
      for (const queue of queues)
        for (const sandbox of await sandboxesWithQueues(queue))
          if (!live.has(sandbox)) pairs.push({ queue, sandbox });
      // A sandbox gone for a sweep interval is past every view's lag: no grace needed.
      if (pairs.length) await clean(pairs, 0);
    },
  };
}
