import { logger, safeHook } from '@branchline/core';
import type { Kafka } from 'kafkajs';
import { deleteGroups } from './groups.js';
import { subscribedTopicNames } from './start-offsets.js';
import type { DrainResult } from './types.js';

export const tp = (topic: string, partition: number) => `${topic}:${partition}`;

const sleep = (ms: number) =>
  new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    t.unref?.();
  });

export interface DrainInput {
  kafka: Kafka;
  groupId: string;
  sandbox: string;
  topics: readonly (string | RegExp)[];
  /** The partitions this member is assigned, by topic (undefined before it joined). */
  assignment: () => Map<string, number[]> | undefined;
  /** Offsets this member committed, by `topic:partition` (kept current by the consumer). */
  committed: Map<string, string>;
  stopping: () => boolean;
  /** Leaves the group (called outside any handler). */
  disconnect: () => Promise<void>;
  drainGraceMs: number;
  deleteGroupOnDrain: boolean;
  onDrained?: (result: DrainResult) => void;
}

export interface Drainer {
  readonly drained: Promise<DrainResult>;
  isDraining(): boolean;
  /** Starts draining what the deleted sandbox owns: every message with a time before `until`. */
  start(until: number): void;
}

/**
 * A deleted sandbox's consumer processes what it owns before it leaves: it fixes target offsets
 * at a wall time past `until` (plus `drainGraceMs` for producer clocks), waits until its group
 * has committed them, then leaves and deletes the group.
 */
export function createDrainer(input: DrainInput): Drainer {
  let draining = false;
  let resolveDrained!: (r: DrainResult) => void;
  const drained = new Promise<DrainResult>((r) => {
    resolveDrained = r;
  });

  async function drain(until: number): Promise<void> {
    const { kafka, groupId, committed } = input;
    const wait = until + input.drainGraceMs - Date.now();
    if (wait > 0) await sleep(wait);
    const admin = kafka.admin();
    await admin.connect();
    try {
      // Offsets at a wall time past `until`: every message appended later has a later time
      // (exactly so for LogAppendTime topics), so nothing it owns lies beyond them.
      const targets = new Map<string, number>();
      for (const topic of await subscribedTopicNames(admin, input.topics))
        for (const p of await admin.fetchTopicOffsets(topic))
          targets.set(tp(topic, p.partition), Number(p.high));
      for (const t of await admin.fetchOffsets({
        groupId,
        topics: [...new Set([...targets.keys()].map((k) => k.slice(0, k.lastIndexOf(':'))))],
      }))
        for (const p of t.partitions)
          if (!committed.has(tp(t.topic, p.partition))) committed.set(tp(t.topic, p.partition), p.offset);
      const mine = () => {
        const assignment = input.assignment();
        if (!assignment) return [...targets.keys()];
        const out: string[] = [];
        for (const [topic, parts] of assignment) for (const p of parts) out.push(tp(topic, p));
        return out;
      };
      const reached = () =>
        mine().every((k) => {
          const target = targets.get(k) ?? 0;
          return target <= 0 || Number(committed.get(k) ?? -1) >= target;
        });
      while (!reached()) {
        if (input.stopping()) return;
        await sleep(200);
      }
      const offsets: Record<string, string> = {};
      for (const k of mine()) offsets[k] = committed.get(k) ?? '-1';
      // Leave outside any handler (disconnect waits for the running handler to return).
      await input.disconnect();
      let groupDeleted = false;
      if (input.deleteGroupOnDrain) groupDeleted = (await deleteGroups(admin, [groupId])).includes(groupId);
      const result: DrainResult = { groupId, sandbox: input.sandbox, until, offsets, groupDeleted };
      logger().info('branchline: deleted sandbox drained; consumer left', { ...result });
      resolveDrained(result);
      safeHook('onDrained', input.onDrained, result);
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  return {
    drained,
    isDraining: () => draining,
    start(until) {
      if (draining) return;
      draining = true;
      logger().info('branchline: sandbox deleted; draining what it owns before leaving', {
        groupId: input.groupId,
        until,
      });
      drain(until).catch((err) => {
        logger().error('branchline: drain of a deleted sandbox failed; the consumer keeps running', {
          groupId: input.groupId,
          err: String(err),
        });
        draining = false;
      });
    },
  };
}
