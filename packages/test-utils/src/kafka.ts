import { type Admin, Kafka, type KafkaMessage, logLevel, type Producer } from 'kafkajs';
import { uniqueName } from './index.js';

/** The broker the tests use (the vitest global setup starts it when it is down). */
export const brokers = [process.env.BRANCHLINE_KAFKA_BROKER ?? '127.0.0.1:9092'];
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';

/** A kafkajs client for the test broker; quiet unless KAFKAJS_LOG is set. */
export function kafkaClient(clientId = 'branchline-test'): Kafka {
  return new Kafka({
    clientId,
    brokers,
    logLevel: process.env.KAFKAJS_LOG ? logLevel.INFO : logLevel.NOTHING,
    retry: { retries: 8 },
  });
}

/** A topic or group name no other test run uses (both live on in the broker). */
export const unique = uniqueName;

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

/** Consumer settings that keep rebalances and fetches short in tests. */
export const consumerTuning = {
  sessionTimeout: 10_000,
  heartbeatInterval: 1_000,
  maxWaitTimeInMs: 100,
  retry: { retries: 8 },
};

/** A header as a string (kafkajs hands them over as Buffers, strings or arrays of either). */
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

/** The partitions of a topic, to send a barrier marker down each of them. */
export async function partitionsOf(admin: Admin, topic: string): Promise<number[]> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.map((o) => o.partition).sort((a, b) => a - b);
}

/**
 * Sends one barrier marker to one partition, with the marker as its `id` header and, when
 * `key` is given, the routing key in its baggage (so it reaches the consumer that owns `key`).
 */
export async function sendMarker(
  producer: Producer,
  topic: string,
  partition: number,
  marker: string,
  key?: string,
): Promise<void> {
  const headers: Record<string, string> = { id: marker };
  if (key !== undefined) headers.baggage = `branchline=${key}`;
  await producer.send({ topic, messages: [{ partition, key: marker, value: marker, headers }] });
}
