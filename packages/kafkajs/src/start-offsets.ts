import { logger, type MessageSelector } from '@branchline/core';
import type { Admin, Kafka } from 'kafkajs';

/** The topic names a consumer subscribed to, patterns expanded against the cluster's topics. */
export async function subscribedTopicNames(
  admin: Admin,
  topics: readonly (string | RegExp)[],
): Promise<string[]> {
  const names = topics.filter((t): t is string => typeof t === 'string');
  const patterns = topics.filter((t): t is RegExp => t instanceof RegExp);
  if (patterns.length) {
    for (const t of await admin.listTopics()) if (patterns.some((re) => re.test(t))) names.push(t);
  }
  return [...new Set(names)];
}

export interface StartOffsetsInput {
  kafka: Kafka;
  selector: MessageSelector;
  groupId: string;
  topics: readonly (string | RegExp)[];
  startMarginMs: number;
}

/**
 * A sandbox group that has no committed offset for a partition starts at the offset of the
 * sandbox's activation time (minus a margin), not at "latest": messages it owns may already
 * be waiting, and the baseline consumer has skipped them. `resumed` says whether the group had
 * committed offsets already (it ran before).
 */
export async function prepareSandboxOffsets(input: StartOffsetsInput): Promise<{ resumed: boolean }> {
  const { kafka, selector, groupId, topics, startMarginMs } = input;
  const holdTimeoutMs = selector.holdTimeoutMs;
  const table = await selector.ready(holdTimeoutMs);
  if (!table)
    throw new Error(
      `branchline: sandbox consumer ${groupId} has no route table after ${holdTimeoutMs} ms, so it cannot know where its sandbox's messages start; check BRANCHLINE_REGISTRY / BRANCHLINE_ROUTES`,
    );
  const admin = kafka.admin();
  await admin.connect();
  let resumed = false;
  try {
    const names = await subscribedTopicNames(admin, topics);
    if (names.length === 0) return { resumed };
    const startAt = Math.max(0, selector.activationTime(table) - startMarginMs);
    const current = await admin.fetchOffsets({ groupId, topics: names });
    // kafkajs's setOffsets runs a short-lived member of the group and waits for one fetch
    // (about 5 s). It happens once, the first time a sandbox group runs; one topic at a time,
    // since two such members would find the group busy.
    for (const t of current) {
      const missing = t.partitions.filter((p) => Number(p.offset) < 0).map((p) => p.partition);
      if (missing.length < t.partitions.length) resumed = true;
      if (missing.length === 0) continue;
      const byTime = await admin.fetchTopicOffsetsByTimestamp(t.topic, startAt);
      const partitions = byTime.filter((p) => missing.includes(p.partition));
      await admin.setOffsets({ groupId, topic: t.topic, partitions });
      logger().debug('branchline: sandbox consumer group starts at its activation time', {
        groupId,
        topic: t.topic,
        startAt,
        partitions,
      });
    }
  } finally {
    await admin.disconnect().catch(() => {});
  }
  return { resumed };
}
