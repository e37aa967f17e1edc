import { randomBytes } from 'node:crypto';
import { type Admin, Kafka, type KafkaMessage, logLevel } from 'kafkajs';

export const brokers = [process.env.BRANCHLINE_KAFKA_BROKER ?? '127.0.0.1:9092'];
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

export function kafkaClient(clientId = 'branchline-test'): Kafka {
  return new Kafka({
    clientId,
    brokers,
    logLevel: process.env.KAFKAJS_LOG ? logLevel.INFO : logLevel.NOTHING,
    retry: { retries: 8 },
  });
}

/** A name no other test run uses (topics and groups live on in the broker). */
export function unique(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/**
 * Creates a topic whose timestamps the broker sets on append (LogAppendTime), as the docs
 * recommend for selective consumption: message time and registry time share one clock.
 */
export async function createTopic(admin: Admin, topic: string, numPartitions = 3): Promise<void> {
  await admin.createTopics({
    waitForLeaders: true,
    topics: [
      {
        topic,
        numPartitions,
        replicationFactor: 1,
        configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }],
      },
    ],
  });
}

/** Polls `check` until it returns true; fails with `what` and the last state after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, what: () => string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
}

export const consumerTuning = {
  sessionTimeout: 10_000,
  heartbeatInterval: 1_000,
  maxWaitTimeInMs: 100,
  retry: { retries: 8 },
};

export function header(m: KafkaMessage, name: string): string | undefined {
  const v = m.headers?.[name];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.map(String).join('|') : String(v);
}

/** Sum of a group's committed offsets minus the topic's end offsets (0 = everything committed). */
export async function groupLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const ends = await admin.fetchTopicOffsets(topic);
  const [mine] = await admin.fetchOffsets({ groupId, topics: [topic] });
  let lag = 0;
  for (const e of ends) {
    const c = Number(mine?.partitions.find((p) => p.partition === e.partition)?.offset ?? -1);
    lag += Number(e.high) - Math.max(0, c);
  }
  return lag;
}
