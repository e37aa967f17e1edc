import type { ResourceContext, ResourceHook } from '@branchline/core/transport';
import type { ChannelModel } from 'amqplib';
import { connectTo, declareSandboxQueue, quiet, removeSandboxQueues, sandboxQueueName } from './queues.js';
import type { ConnectTarget } from './types.js';

/** The resource-hook context (core's `ResourceContext`), under the name this package exported. */
export type AmqpResourceContext = ResourceContext;

/** core's `ResourceHook` contract, with the methods this hook implements made required. */
export interface AmqpQueueResourceHook extends ResourceHook {
  type: 'amqp-queue';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<Record<string, unknown>>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
}

export interface AmqpQueueResourceHookOptions {
  /** The broker, as for `createSelectiveConsumer`. */
  connection: ConnectTarget;
  socketOptions?: Record<string, unknown>;
  /** Extra `x-arguments` for sandbox queues; must match the consumers' `sandboxQueueArguments`. */
  sandboxQueueArguments?: Record<string, unknown>;
  /** How long deprovisioning waits for a still-attached sandbox consumer, ms. Default 60000. */
  timeoutMs?: number;
}

function queuesOf(spec: Record<string, unknown>): string[] {
  const q = spec.queues ?? spec.queue;
  const list = typeof q === 'string' ? [q] : Array.isArray(q) ? q : undefined;
  if (!list || list.length === 0 || !list.every((x) => typeof x === 'string' && x.length > 0)) {
    throw new Error(
      `amqp-queue resource: spec.queues must list the baseline queue names whose messages this sandbox consumes, for example {"queues": ["orders"]} (got ${JSON.stringify(q)})`,
    );
  }
  return list as string[];
}

function open(options: AmqpQueueResourceHookOptions): Promise<ChannelModel> {
  return connectTo(options.connection, options.socketOptions);
}

/**
 * A registry resource hook of type `amqp-queue` (spec `{"queues": ["orders"]}`): creates the
 * sandbox's queues when the sandbox is created, so its messages are kept even before its
 * workload consumes, and when the sandbox is deleted or expires returns what still waits in
 * them to the baseline queues and removes them. Register it with
 * `createRegistryServer({ resourceHooks: [amqpQueueResourceHook({ connection })] })`.
 */
export function amqpQueueResourceHook(options: AmqpQueueResourceHookOptions): AmqpQueueResourceHook {
  if (!options || options.connection === undefined)
    throw new TypeError('branchline: amqpQueueResourceHook needs { connection: "amqp://…" }');
  return {
    type: 'amqp-queue',
    validate(spec) {
      queuesOf(spec);
    },
    async provision(ctx) {
      const queues = queuesOf(ctx.resource.spec);
      const model = await open(options);
      try {
        const ch = quiet(await model.createChannel());
        const created: string[] = [];
        for (const q of queues) {
          const name = sandboxQueueName(q, ctx.sandbox.name);
          await declareSandboxQueue(ch, name, options.sandboxQueueArguments);
          created.push(name);
          ctx.report({ phase: 'declared', done: created.length, total: queues.length, unit: 'queues' });
        }
        await ch.close();
        return { queues: created };
      } finally {
        await model.close().catch(() => undefined);
      }
    },
    async deprovision(ctx) {
      const queues = queuesOf(ctx.resource.spec);
      const model = await open(options);
      try {
        const results = await removeSandboxQueues(model, {
          queue: queues,
          sandbox: ctx.sandbox.name,
          timeoutMs: options.timeoutMs,
        });
        const returned = results.reduce((n, r) => n + r.returned, 0);
        ctx.report({
          phase: 'removed',
          done: results.length,
          total: queues.length,
          unit: 'queues',
          message: `${returned} waiting messages returned to baseline`,
        });
      } finally {
        await model.close().catch(() => undefined);
      }
    },
  };
}

/**
 * A listener for the registry's `onSandboxDeleted`: returns the waiting messages of the deleted
 * sandbox's queues to the baseline queues and removes them, for queues not declared as
 * `amqp-queue` resources. `server.onSandboxDeleted(sandboxQueuesCleanup({ connection, queues: ['orders'] }))`.
 */
export function sandboxQueuesCleanup(
  options: AmqpQueueResourceHookOptions & { queues: string[] },
): (sandbox: { name: string }) => Promise<void> {
  const queues = queuesOf({ queues: options.queues });
  return async (sandbox) => {
    const model = await open(options);
    try {
      await removeSandboxQueues(model, {
        queue: queues,
        sandbox: sandbox.name,
        timeoutMs: options.timeoutMs,
      });
    } finally {
      await model.close().catch(() => undefined);
    }
  };
}
