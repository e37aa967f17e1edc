import { isValidRoutingKey } from '@branchline/core';
import { logger, type ResourceContext, type ResourceHook } from '@branchline/core/transport';
import type { Admin } from 'kafkajs';
import type { KafkaAdminTarget } from './types.js';

const SEPARATOR = '.sandbox.';

/**
 * The consumer group of sandbox `sandbox` for a consumer whose baseline group is `groupId`.
 * Stable across restarts, so a sandbox consumer resumes where it stopped; sandbox names are DNS
 * labels (no dots), so the suffix identifies the sandbox unambiguously.
 */
export function sandboxGroupId(groupId: string, sandbox: string): string {
  if (!isValidRoutingKey(sandbox)) {
    throw new TypeError(
      `branchline: sandbox ${JSON.stringify(sandbox)} is not a sandbox name (lowercase letters, digits, inner hyphens)`,
    );
  }
  return `${groupId}${SEPARATOR}${sandbox}`;
}

/** The sandbox a consumer group id belongs to, or undefined for a baseline group. */
export function sandboxOfGroupId(groupId: string): string | undefined {
  const i = groupId.lastIndexOf(SEPARATOR);
  if (i <= 0) return undefined;
  const name = groupId.slice(i + SEPARATOR.length);
  return isValidRoutingKey(name) ? name : undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Deletes consumer groups, retrying while a member is still leaving (the broker refuses to
 * delete a non-empty group). Returns the ids it deleted; a group that does not exist counts.
 */
export async function deleteGroups(admin: Admin, groupIds: string[], attempts = 10): Promise<string[]> {
  const done: string[] = [];
  let pending = [...groupIds];
  for (let i = 0; i < attempts && pending.length; i++) {
    if (i > 0) await sleep(Math.min(2000, 200 * 2 ** (i - 1)));
    const next: string[] = [];
    for (const id of pending) {
      try {
        await admin.deleteGroups([id]);
        done.push(id);
      } catch (err) {
        const e = err as { groups?: { groupId: string; error?: { type?: string } }[]; type?: string };
        const type = e.groups?.find((g) => g.groupId === id)?.error?.type ?? e.type;
        if (type === 'GROUP_ID_NOT_FOUND') done.push(id);
        else next.push(id);
      }
    }
    pending = next;
  }
  if (pending.length)
    logger().warn('branchline: could not delete kafka consumer groups (members still active?)', {
      groups: pending,
    });
  return done;
}

/** Every consumer group of sandbox `sandbox` on the cluster (any baseline group id). */
export async function listSandboxGroups(admin: Admin, sandbox: string): Promise<string[]> {
  const { groups } = await admin.listGroups();
  return groups.map((g) => g.groupId).filter((id) => sandboxOfGroupId(id) === sandbox);
}

async function withAdmin<R>(target: KafkaAdminTarget, fn: (admin: Admin) => Promise<R>): Promise<R> {
  let admin: Admin;
  if ('kafka' in target) admin = target.kafka.admin();
  else {
    // kafkajs is a peer dependency; load it only when the hook builds its own client.
    const mod = (await import('kafkajs')) as typeof import('kafkajs') & {
      default?: typeof import('kafkajs');
    };
    const Kafka = mod.Kafka ?? mod.default?.Kafka;
    admin = new Kafka(target).admin();
  }
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

export interface KafkaConsumerGroupsHookOptions {
  /**
   * Baseline consumer group ids whose sandbox groups this hook manages. Default: every group
   * named `<group>.sandbox.<sandbox>` on the cluster. Set it when several apps share a cluster.
   */
  groups?: string[];
  /**
   * A drained sandbox consumer deletes its own group, so an empty group left by a deleted
   * sandbox belongs to a consumer that stopped (crashed, was torn down) before it finished
   * draining. The hook keeps such a group this long after it first saw it, so a restarted
   * consumer can resume from its offsets and finish; then it deletes it, and the messages that
   * consumer had not processed yet are not processed by anyone. Default 600000 (10 minutes).
   */
  abandonAfterMs?: number;
}

/** core's `ResourceHook` contract, with the methods this hook implements made required. */
export interface KafkaConsumerGroupsHook extends ResourceHook {
  type: 'kafka-consumer-groups';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<Record<string, unknown>>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  sweep(liveSandboxes: string[]): Promise<void>;
}

/**
 * A registry resource hook (type `kafka-consumer-groups`) that deletes a sandbox's consumer
 * groups when the registry deletes the sandbox or it expires, and sweeps groups of sandboxes
 * that no longer exist. Declare it on a sandbox as
 * `"resources": {"kafka": {"type": "kafka-consumer-groups", "spec": {}}}` and register it with
 * `createRegistryServer({ resourceHooks: [kafkaConsumerGroupsHook({ brokers: [...] })] })`.
 * Optional spec: `{"groups": ["orders", ...]}` limits it to those baseline group ids.
 */
export function kafkaConsumerGroupsHook(
  target: KafkaAdminTarget,
  options: KafkaConsumerGroupsHookOptions = {},
): KafkaConsumerGroupsHook {
  const baseGroups = options.groups ? new Set(options.groups) : undefined;
  const abandonAfterMs = options.abandonAfterMs ?? 600_000;
  if (!Number.isFinite(abandonAfterMs) || abandonAfterMs < 0)
    throw new TypeError(
      `kafka-consumer-groups: option abandonAfterMs must be a number of milliseconds >= 0 (got ${String(options.abandonAfterMs)})`,
    );
  /** Whether the hook may touch `groupId` (a sandbox group of one of the configured baseline groups). */
  const inScope = (groupId: string): boolean => {
    if (!baseGroups) return true;
    const s = sandboxOfGroupId(groupId);
    return s !== undefined && baseGroups.has(groupId.slice(0, groupId.length - SEPARATOR.length - s.length));
  };
  /** When this hook first found each leftover empty group (for abandonAfterMs). */
  const firstSeen = new Map<string, number>();

  /**
   * Deletes the groups among `ids` that may go now. Returns those that must stay: groups with
   * members (a consumer draining) and empty ones still within abandonAfterMs.
   */
  async function remove(admin: Admin, ids: string[], attempts: number) {
    const { groups } = await admin.describeGroups(ids);
    const now = Date.now();
    const active: string[] = [];
    const waiting: string[] = [];
    const ready: string[] = [];
    for (const g of groups) {
      if (g.state === 'Dead') {
        firstSeen.delete(g.groupId);
        continue; // does not exist (any more)
      }
      if (g.members.length > 0) {
        active.push(g.groupId);
        continue;
      }
      const first = firstSeen.get(g.groupId) ?? now;
      firstSeen.set(g.groupId, first);
      if (now - first >= abandonAfterMs) ready.push(g.groupId);
      else waiting.push(g.groupId);
    }
    const deleted = new Set(ready.length ? await deleteGroups(admin, ready, attempts) : []);
    for (const id of deleted) firstSeen.delete(id);
    if (deleted.size)
      logger().info('branchline: deleted kafka consumer groups of deleted sandboxes', {
        groups: [...deleted],
      });
    return { active: [...active, ...ready.filter((id) => !deleted.has(id))], waiting };
  }

  return {
    type: 'kafka-consumer-groups',
    validate(spec) {
      const groups = spec.groups;
      if (groups === undefined) return;
      if (!Array.isArray(groups) || groups.some((g) => typeof g !== 'string' || g.length === 0)) {
        throw new Error(
          `kafka-consumer-groups: spec.groups must be a list of baseline consumer group ids such as ["orders"] (got ${JSON.stringify(groups)})`,
        );
      }
    },
    // Groups are created by the sandbox's consumers when they first run; nothing to make here.
    async provision(ctx) {
      return { prefix: `*${SEPARATOR}${ctx.sandbox.name}` };
    },
    async deprovision(ctx) {
      const only = ctx.resource.spec.groups as string[] | undefined;
      await withAdmin(target, async (admin) => {
        const ids = only
          ? only.map((g) => sandboxGroupId(g, ctx.sandbox.name))
          : (await listSandboxGroups(admin, ctx.sandbox.name)).filter(inScope);
        if (ids.length === 0) return;
        const { active, waiting } = await remove(admin, ids, 4);
        // Deleting a group's offsets while its consumer still needs them would make it start
        // over (or lose what it had not drained): fail, so the registry retries later.
        if (active.length)
          throw new Error(
            `kafka-consumer-groups: consumer groups ${active.join(', ')} of sandbox ${ctx.sandbox.name} still have active members (a consumer is draining); retry after it leaves`,
          );
        if (waiting.length)
          throw new Error(
            `kafka-consumer-groups: consumer groups ${waiting.join(', ')} of sandbox ${ctx.sandbox.name} were left by a consumer that stopped before it drained; kept for ${abandonAfterMs} ms so it can be restarted to finish (restart the sandbox's consumer, or lower abandonAfterMs)`,
          );
      });
    },
    async sweep(liveSandboxes) {
      const live = new Set(liveSandboxes);
      await withAdmin(target, async (admin) => {
        const { groups } = await admin.listGroups();
        const orphans = groups
          .map((g) => g.groupId)
          .filter((id) => {
            const s = sandboxOfGroupId(id);
            return s !== undefined && !live.has(s) && inScope(id);
          });
        if (orphans.length) await remove(admin, orphans, 1);
      });
    },
  };
}
