// One consumer of bench/kafka in its own process, so that a plain and a selective consumer can
// read the same topic at the same moment under the same machine load. Prints one JSON line.
// usage: node consume-worker.mjs <plain|selective> <topic> <eachMessage|eachBatch> <messages>
import { createSelectiveConsumer } from '@branchline/kafkajs';
import { Kafka, logLevel } from 'kafkajs';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const [kind, topic, mode, total] = process.argv.slice(2);
const N = Number(total);
const routes = JSON.parse(process.env.BENCH_KAFKA_ROUTES ?? '{"sandboxes":[]}');
const kafka = new Kafka({
  clientId: `bench-${kind}`,
  brokers: ['127.0.0.1:9092'],
  logLevel: logLevel.NOTHING,
});
const groupId = `bench-${kind}-${mode}-${Math.random().toString(36).slice(2)}`;
const tuning = { groupId, maxWaitTimeInMs: 100 };
const consumer =
  kind === 'plain'
    ? kafka.consumer(tuning)
    : createSelectiveConsumer(kafka, { ...tuning, service: 'orders', routes });
await consumer.connect();
await consumer.subscribe({ topics: [topic], fromBeginning: true });
let handled = 0;
let first = 0;
let last = 0;
let done;
const finished = new Promise((r) => {
  done = r;
});
// Skipped messages never reach the handler: count the selective consumer's decisions. Both kinds
// are timed by the same kafkajs events, first batch start to the end of the completing batch.
const decided = () => (kind === 'plain' ? handled : consumer.stats.processed + consumer.stats.skipped);
consumer.on(consumer.events.START_BATCH_PROCESS, () => {
  if (!first) first = performance.now();
});
consumer.on(consumer.events.END_BATCH_PROCESS, () => {
  if (!last && decided() >= N) {
    last = performance.now();
    done();
  }
});
if (mode === 'eachMessage') {
  await consumer.run({
    eachMessage: async () => {
      handled++;
    },
  });
} else {
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const _m of batch.messages) handled++;
    },
  });
}
await finished;
await consumer.disconnect();
console.log(JSON.stringify({ kind, mode, rate: N / ((last - first) / 1000), handled }));
process.exit(0);
