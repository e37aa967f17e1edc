import { logger, type ResourceContext, type ResourceHook } from '@branchline/core/transport';
import type { ConsumerInfo, JetStreamManager } from '@nats-io/jetstream';
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node';
import { sandboxOfDurableName } from './names.js';

const SEPARATOR = '_sandbox_';

/** Where the hook reaches NATS: a connection of yours (left open), or options for one of its own. */
export type NatsHookTarget =
  | { connection: NatsConnection }
  | ({ servers: string | string[] } & ConnectionOptions);

export interface NatsDurablesHookOptions {
  /** Streams whose consumers the hook looks at. Default: every stream on the server. */
  streams?: string[];
  /**
   * Baseline durable names whose sandbox durables this hook manages. Default: every durable
   * named `<durable>_sandbox_<sandbox>`. Set it when several apps share a server.
   */
  durables?: string[];
  /**
   * A drained sandbox consumer deletes its own durable, so a sandbox durable left behind with
   * messages still pending belongs to a consumer that stopped before it drained. The hook keeps
   * such a durable this long after it first saw it, so the sandbox's consumer can be restarted to
   * resume from it and finish; then it deletes it and logs how many messages were left
   * unprocessed. Default 600000 (10 minutes).
   */
  abandonAfterMs?: number;
}

/** core's `ResourceHook` contract, with the methods this hook implements made required. */
export interface NatsDurablesHook extends ResourceHook {
  type: 'nats-durables';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<Record<string, unknown>>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  sweep(liveSandboxes: string[]): Promise<void>;
}

interface Durable {
  stream: string;
  name: string;
  sandbox: string;
}

/** Messages a durable has not finished: not delivered yet plus delivered and not acknowledged. */
export function pendingOf(info: ConsumerInfo): number {
  return (info.num_pending ?? 0) + (info.num_ack_pending ?? 0);
}

/** A client is attached: a pull request waiting, or a push consumer bound to its subject. */
function inUse(info: ConsumerInfo): boolean {
  return (info.num_waiting ?? 0) > 0 || info.push_bound === true;
}

async function withManager<R>(target: NatsHookTarget, fn: (jsm: JetStreamManager) => Promise<R>): Promise<R> {
  const { jetstreamManager } = await import('@nats-io/jetstream');
  if ('connection' in target) return fn(await jetstreamManager(target.connection));
  const { connect } = await import('@nats-io/transport-node');
  const nc = await connect({ name: 'branchline-nats-durables-hook', ...target });
  try {
    return await fn(await jetstreamManager(nc));
  } finally {
    await nc.close().catch(() => undefined);
  }
}

/**
 * A registry resource hook (type `nats-durables`) that deletes a sandbox's JetStream durable
 * consumers when the registry deletes the sandbox while its consumer is not running, and sweeps
 * durables of sandboxes that no longer exist. A drained durable (nothing pending) is deleted at
 * once. One with messages pending is kept for `abandonAfterMs` so the sandbox consumer can be
 * restarted to drain it (the hook fails meanwhile, and the registry retries it), then deleted with
 * a warning naming how many messages were left unprocessed. One a client is still attached to
 * (a consumer draining) is never deleted: the hook fails and is retried.
 * Declare it on a sandbox as `"resources": {"nats": {"type": "nats-durables", "spec": {}}}` and
 * register it with `createRegistryServer({ resourceHooks: [natsDurablesHook({ servers: '…' })] })`.
 * Optional spec: `{"durables": ["orders", ...]}` limits it to those baseline durables.
 */
export function natsDurablesHook(
  target: NatsHookTarget,
  options: NatsDurablesHookOptions = {},
): NatsDurablesHook {
  if (!target || (!('connection' in target) && !('servers' in target)))
    throw new TypeError(
      'nats-durables: pass { servers: "host:4222" } (connection options) or { connection }',
    );
  const abandonAfterMs = options.abandonAfterMs ?? 600_000;
  if (!Number.isFinite(abandonAfterMs) || abandonAfterMs < 0)
    throw new TypeError(
      `nats-durables: option abandonAfterMs must be a number of milliseconds >= 0 (got ${String(options.abandonAfterMs)})`,
    );
  const baseDurables = options.durables ? new Set(options.durables) : undefined;
  /** When this hook first found each leftover durable with messages pending (for abandonAfterMs). */
  const firstSeen = new Map<string, number>();

  const baseOf = (d: Durable) => d.name.slice(0, d.name.length - SEPARATOR.length - d.sandbox.length);

  async function sandboxDurables(jsm: JetStreamManager, only?: Set<string>): Promise<Durable[]> {
    let streams = options.streams;
    if (!streams) {
      streams = [];
      for await (const name of jsm.streams.names()) streams.push(name);
    }
    const out: Durable[] = [];
    for (const stream of streams) {
      const infos: ConsumerInfo[] = [];
      try {
        for await (const info of jsm.consumers.list(stream)) infos.push(info);
      } catch (err) {
        if (/stream not found/i.test(String(err))) {
          logger().warn('branchline: nats-durables: a configured stream does not exist', { stream });
          continue;
        }
        throw err;
      }
      for (const info of infos) {
        const sandbox = sandboxOfDurableName(info.name);
        if (sandbox === undefined) continue;
        const d = { stream, name: info.name, sandbox };
        const scope = only ?? baseDurables;
        if (scope && !scope.has(baseOf(d))) continue;
        out.push(d);
      }
    }
    return out;
  }

  /** Deletes what may go now; returns the durables in use and those kept for abandonAfterMs. */
  async function remove(jsm: JetStreamManager, durables: Durable[]) {
    const now = Date.now();
    const active: string[] = [];
    const waiting: string[] = [];
    for (const d of durables) {
      const id = `${d.stream}/${d.name}`;
      let info: ConsumerInfo;
      try {
        info = await jsm.consumers.info(d.stream, d.name);
      } catch (err) {
        if (/consumer not found/i.test(String(err))) {
          firstSeen.delete(id);
          continue;
        }
        throw err;
      }
      if (inUse(info)) {
        active.push(id);
        continue;
      }
      const pending = pendingOf(info);
      if (pending > 0) {
        const first = firstSeen.get(id) ?? now;
        firstSeen.set(id, first);
        if (now - first < abandonAfterMs) {
          waiting.push(`${id} (${pending} pending)`);
          continue;
        }
      }
      try {
        await jsm.consumers.delete(d.stream, d.name);
      } catch (err) {
        if (!/consumer not found/i.test(String(err))) throw err;
      }
      firstSeen.delete(id);
      if (pending > 0)
        logger().warn(
          'branchline: deleted the durable of a deleted sandbox with messages left unprocessed (its consumer was not restarted within abandonAfterMs)',
          { stream: d.stream, durable: d.name, sandbox: d.sandbox, unprocessed: pending, abandonAfterMs },
        );
      else
        logger().info('branchline: deleted the drained durable of a deleted sandbox', {
          stream: d.stream,
          durable: d.name,
          sandbox: d.sandbox,
        });
    }
    return { active, waiting };
  }

  return {
    type: 'nats-durables',
    validate(spec) {
      const durables = spec.durables;
      if (durables === undefined) return;
      if (!Array.isArray(durables) || durables.some((g) => typeof g !== 'string' || g.length === 0)) {
        throw new Error(
          `nats-durables: spec.durables must be a list of baseline durable names such as ["orders"] (got ${JSON.stringify(durables)})`,
        );
      }
    },
    // Durables are created by the sandbox's consumers when they first run; nothing to make here.
    async provision(ctx) {
      return { suffix: `${SEPARATOR}${ctx.sandbox.name}` };
    },
    async deprovision(ctx) {
      const only = ctx.resource.spec.durables as string[] | undefined;
      await withManager(target, async (jsm) => {
        const durables = (await sandboxDurables(jsm, only ? new Set(only) : undefined)).filter(
          (d) => d.sandbox === ctx.sandbox.name,
        );
        if (durables.length === 0) return;
        const { active, waiting } = await remove(jsm, durables);
        // Deleting a durable its consumer still reads would lose what it had not drained: fail,
        // so the registry retries later.
        if (active.length)
          throw new Error(
            `nats-durables: durables ${active.join(', ')} of sandbox ${ctx.sandbox.name} are in use (a consumer is draining); retry after it stops`,
          );
        if (waiting.length)
          throw new Error(
            `nats-durables: durables ${waiting.join(', ')} of sandbox ${ctx.sandbox.name} were left by a consumer that stopped before it drained; kept for ${abandonAfterMs} ms so it can be restarted to finish (restart the sandbox's consumer, or lower abandonAfterMs)`,
          );
      });
    },
    async sweep(liveSandboxes) {
      const live = new Set(liveSandboxes);
      await withManager(target, async (jsm) => {
        const orphans = (await sandboxDurables(jsm)).filter((d) => !live.has(d.sandbox));
        if (orphans.length) await remove(jsm, orphans);
      });
    },
  };
}
