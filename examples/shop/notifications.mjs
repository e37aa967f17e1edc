// notifications — a RabbitMQ consumer (amqplib). No sandbox overrides it, so its baseline
// consumer processes every message, and the routing key still arrives with each one: a call the
// handler made would carry it on to the next service.
import { createSelectiveConsumer } from '@branchline/amqplib';
import { getRoutingKey } from '@branchline/core';
import { onShutdown, ready, reportRules, trace } from './lib.mjs';

const env = process.env;
const consumer = createSelectiveConsumer({
  connection: env.AMQP_URL,
  queue: env.AMQP_QUEUE,
  autoAck: true,
  setup: async (channel) => {
    await channel.assertExchange(env.AMQP_EXCHANGE, 'topic', { durable: false });
    await channel.assertQueue(env.AMQP_QUEUE, { durable: false });
    await channel.bindQueue(env.AMQP_QUEUE, env.AMQP_EXCHANGE, 'order.*');
  },
  onMessage: (message) => {
    const { order } = JSON.parse(message.content.toString());
    const key = getRoutingKey();
    trace(order, 'AMQP', `confirmation e-mail sent${key ? ` (key ${key} travelled with it)` : ''}`, key);
  },
});

reportRules();
await consumer.ready();
ready(`RabbitMQ queue ${env.AMQP_QUEUE}`);

onShutdown(() => consumer.close());
