// orders — Fastify, with PostgreSQL. It saves the order, charges it through payments (gRPC),
// then announces it on Kafka (for shipping) and RabbitMQ (for notifications). Every one of those
// calls carries the request's routing key, put there by the Branchline packages — the handler
// itself never touches a header.
//
// The sandbox `pr-103` runs a new version with a schema change the baseline's code cannot live
// with: `cents` is split into `amount_cents` and `currency`. Its sandbox declares a database of
// its own (a copy of the baseline's), which its routed pool uses for every query, so it migrates
// and writes there while the baseline keeps its schema.
import { fileURLToPath } from 'node:url';
import { instrumentConnection } from '@branchline/amqplib';
import { announceWorkload, getRoutingKey } from '@branchline/core';
import { branchline } from '@branchline/fastify';
import { createRoutedClient } from '@branchline/grpc';
import { instrumentProducer } from '@branchline/kafkajs';
import { createRoutedPool } from '@branchline/pg';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import Fastify from 'fastify';
import { log, onShutdown, ready, reportRules, sandbox, trace } from './lib.mjs';

const env = process.env;
const proto = fileURLToPath(new URL('./payments.proto', import.meta.url));
const { shop } = grpc.loadPackageDefinition(protoLoader.loadSync(proto, { longs: Number }));

// Calls to payments go to the sandbox endpoint the key selects, else to the baseline target.
const payments = createRoutedClient(shop.Payments, { service: 'payments', target: env.PAYMENTS_TARGET });
const charge = (request) =>
  new Promise((resolve, reject) =>
    payments.charge(request, (err, reply) => (err ? reject(err) : resolve(reply))),
  );

// Queries go to the sandbox's own database when its sandbox declares one (pr-103 does); in a
// sandbox process every query goes there, so its migration never reaches the baseline.
const db = env.PG_URL
  ? createRoutedPool({ connectionString: env.PG_URL, max: 4, prefix: env.PG_PREFIX || undefined })
  : undefined;

// The new schema of the sandbox version: cents → amount_cents + currency (not backward compatible:
// the baseline's INSERT names `cents`). Idempotent, as a migration tool would make it.
const newSchema = sandbox !== undefined && db !== undefined;
if (newSchema) {
  const where = (await db.query('SELECT current_database() AS db')).rows[0].db;
  if (where === db.source) throw new Error(`refusing to migrate the baseline database ${where}`);
  await db.query(`DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'demo_orders' AND column_name = 'cents') THEN
      ALTER TABLE demo_orders RENAME COLUMN cents TO amount_cents;
      ALTER TABLE demo_orders ADD COLUMN currency text NOT NULL DEFAULT 'EUR';
    END IF;
  END $$`);
  log('migrated', where);
}

let producer;
if (env.KAFKA_BROKER) {
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({ clientId: 'orders', brokers: [env.KAFKA_BROKER], logLevel: logLevel.NOTHING });
  producer = instrumentProducer(kafka.producer({ allowAutoTopicCreation: false }));
  await producer.connect();
}

let amqp;
if (env.AMQP_URL) {
  const { default: amqplib } = await import('amqplib');
  const connection = instrumentConnection(await amqplib.connect(env.AMQP_URL));
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange(env.AMQP_EXCHANGE, 'topic', { durable: false });
  amqp = { connection, channel };
}

const app = Fastify();
await app.register(branchline);

app.post('/orders', async (request) => {
  const { order, item, cents } = request.body;
  const key = getRoutingKey();
  let stored = 'kept in memory (no PostgreSQL)';
  if (newSchema) {
    await db.query(
      'INSERT INTO demo_orders (id, item, amount_cents, currency, routing_key) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING',
      [order, item, cents, 'EUR', key ?? null],
    );
    stored = `saved in PostgreSQL (${db.databaseFor(key)}, new schema: amount_cents + currency)`;
  } else if (db) {
    await db.query(
      'INSERT INTO demo_orders (id, item, cents, routing_key) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING',
      [order, item, cents, key ?? null],
    );
    stored = `saved in PostgreSQL (${db.databaseFor(key)})`;
  }
  trace(order, 'HTTP', `${item}, ${stored}`, key);
  const payment = await charge({ order, cents });
  const event = Buffer.from(JSON.stringify({ order, item, cents }));
  if (producer) await producer.send({ topic: env.KAFKA_TOPIC, messages: [{ key: order, value: event }] });
  if (amqp) {
    amqp.channel.publish(env.AMQP_EXCHANGE, 'order.placed', event, { contentType: 'application/json' });
    await amqp.channel.waitForConfirms();
  }
  return { order, payment };
});

await app.listen({ port: Number(env.PORT), host: '127.0.0.1' });
reportRules();
// A sandbox process announces its endpoint to the registry; in the baseline this does nothing.
const announcement = announceWorkload({ http: `http://127.0.0.1:${env.PORT}` });
await announcement.announced(10_000);
ready(`HTTP http://127.0.0.1:${env.PORT}`);

onShutdown(async () => {
  await announcement.stop();
  await app.close();
  payments.close();
  await Promise.allSettled([db?.end(), producer?.disconnect(), amqp?.connection.close()]);
  log('closed');
});
