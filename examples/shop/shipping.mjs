// shipping — a Kafka consumer (kafkajs). The baseline ships with the usual carrier; the sandbox
// `pr-102` tries a new one. Branchline's selective consumer makes each message go to exactly one
// of them: the sandbox's consumer gets the messages its key owns, the baseline all the others.
import { createServer } from 'node:http';
import { announceWorkload, getRoutingKey } from '@branchline/core';
import { createSelectiveConsumer } from '@branchline/kafkajs';
import { Kafka, logLevel } from 'kafkajs';
import { log, onShutdown, ready, reportRules, sandbox, trace } from './lib.mjs';

const env = process.env;
const carrier = sandbox ? 'DHL Express, next day (new carrier)' : 'PostNL, 2–3 days';

// A consumer has no HTTP endpoint of its own to route to; this small health endpoint is what the
// sandbox announces to the registry (an override needs an endpoint), and what a probe would hit.
const health = createServer((_req, res) => res.end('ok'));
await new Promise((r) => health.listen(Number(env.PORT), '127.0.0.1', r));

const kafka = new Kafka({
  clientId: `shipping-${sandbox ?? 'baseline'}`,
  brokers: [env.KAFKA_BROKER],
  logLevel: logLevel.NOTHING,
});
const consumer = createSelectiveConsumer(kafka, {
  groupId: env.KAFKA_GROUP,
  sessionTimeout: 10_000,
  heartbeatInterval: 1000,
  maxWaitTimeInMs: 100,
});
consumer.on(consumer.events.GROUP_JOIN, () => ready(`Kafka group ${consumer.groupId}`));
consumer.on(consumer.events.CRASH, (e) => log('consumer crashed', e.payload.error));

reportRules();
// A sandbox process announces its endpoint to the registry (heartbeats with a lease, withdrawn on
// SIGTERM or stop()); in the baseline process this does nothing.
const announcement = announceWorkload({ http: `http://127.0.0.1:${env.PORT}` });
await announcement.announced(10_000);
await consumer.connect();
await consumer.subscribe({ topic: env.KAFKA_TOPIC, fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    const { order } = JSON.parse(message.value.toString());
    trace(order, 'Kafka', `label printed with ${carrier}`, getRoutingKey());
  },
});

onShutdown(async () => {
  await announcement.stop();
  await consumer.disconnect();
  health.close();
});
