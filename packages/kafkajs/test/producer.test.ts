import { withRoutingKey } from '@branchline/core';
import { until } from '@branchline/test-utils';
import { consumerTuning, createTopic, header, kafkaClient, unique } from '@branchline/test-utils/kafka';
import type { Admin, KafkaMessage, Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instrumentProducer, kafkaHeadersSetter } from '../src/index.js';

const kafka = kafkaClient('producer-test');
let admin: Admin;
let producer: Producer;
const topic = unique('producer');
const received = new Map<string, KafkaMessage>();
const consumer = kafka.consumer({ groupId: unique('producer-reader'), ...consumerTuning });

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
  await createTopic(admin, topic, 1);
  producer = instrumentProducer(kafka.producer());
  await producer.connect();
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message }) => {
      received.set(String(message.key), message);
    },
  });
});

afterAll(async () => {
  await consumer.disconnect();
  await producer.disconnect();
  await admin.disconnect();
});

async function receivedMessage(id: string): Promise<KafkaMessage> {
  await until(
    () => received.has(id),
    () => `message ${id} (have ${[...received.keys()].join(', ')})`,
  );
  return received.get(id)!;
}

describe('an instrumented kafkajs producer', () => {
  it('adds the active routing key to send() as a baggage header', async () => {
    await withRoutingKey('pr-7', () => producer.send({ topic, messages: [{ key: 'send', value: 'x' }] }));
    expect(header(await receivedMessage('send'), 'baggage')).toBe('branchline=pr-7');
  });

  it('leaves messages without a key in context untouched', async () => {
    await producer.send({ topic, messages: [{ key: 'plain', value: 'x', headers: { a: 'b' } }] });
    const m = await receivedMessage('plain');
    expect(header(m, 'baggage')).toBeUndefined();
    expect(header(m, 'a')).toBe('b');
  });

  it('merges into a baggage header the application set, keeping its members, in one header', async () => {
    await withRoutingKey('pr-7', () =>
      producer.send({ topic, messages: [{ key: 'merge', value: 'x', headers: { Baggage: 'team=blue' } }] }),
    );
    const m = await receivedMessage('merge');
    expect(Object.keys(m.headers ?? {}).filter((k) => k.toLowerCase() === 'baggage')).toEqual(['baggage']);
    expect(header(m, 'baggage')).toBe('team=blue,branchline=pr-7');
  });

  it('never overwrites a routing key the application set explicitly', async () => {
    await withRoutingKey('pr-7', () =>
      producer.send({
        topic,
        messages: [{ key: 'explicit', value: 'x', headers: { baggage: Buffer.from('branchline=pr-9') } }],
      }),
    );
    expect(header(await receivedMessage('explicit'), 'baggage')).toBe('branchline=pr-9');
  });

  it('does not change the message objects the application passed in', async () => {
    const msg = { key: 'reuse-1', value: 'x', headers: { a: 'b' } };
    await withRoutingKey('pr-7', () => producer.send({ topic, messages: [msg] }));
    expect(msg.headers).toEqual({ a: 'b' });
    msg.key = 'reuse-2';
    await withRoutingKey('pr-8', () => producer.send({ topic, messages: [msg] }));
    expect(header(await receivedMessage('reuse-1'), 'baggage')).toBe('branchline=pr-7');
    expect(header(await receivedMessage('reuse-2'), 'baggage')).toBe('branchline=pr-8');
  });

  it('adds the key to every message of sendBatch()', async () => {
    await withRoutingKey('pr-3', () =>
      producer.sendBatch({
        topicMessages: [
          {
            topic,
            messages: [
              { key: 'batch-1', value: 'x' },
              { key: 'batch-2', value: 'y', headers: { baggage: 'k=v' } },
            ],
          },
        ],
      }),
    );
    expect(header(await receivedMessage('batch-1'), 'baggage')).toBe('branchline=pr-3');
    expect(header(await receivedMessage('batch-2'), 'baggage')).toBe('k=v,branchline=pr-3');
  });

  it('adds the key to transactional sends', async () => {
    const tx = instrumentProducer(
      kafka.producer({ transactionalId: unique('tx'), idempotent: true, maxInFlightRequests: 1 }),
    );
    await tx.connect();
    try {
      const t = await tx.transaction();
      await withRoutingKey('pr-5', async () => {
        await t.send({ topic, messages: [{ key: 'tx-send', value: 'x' }] });
        await t.sendBatch({ topicMessages: [{ topic, messages: [{ key: 'tx-batch', value: 'y' }] }] });
      });
      await t.commit();
    } finally {
      await tx.disconnect();
    }
    expect(header(await receivedMessage('tx-send'), 'baggage')).toBe('branchline=pr-5');
    expect(header(await receivedMessage('tx-batch'), 'baggage')).toBe('branchline=pr-5');
  });

  it('instruments a producer only once', () => {
    const send = producer.send;
    expect(instrumentProducer(producer)).toBe(producer);
    expect(producer.send).toBe(send);
  });
});

describe('kafkaHeadersSetter', () => {
  it('replaces every spelling and repeated value of a header with one string', () => {
    const h: Record<string, string | Buffer | (string | Buffer)[] | undefined> = {
      BAGGAGE: ['a=1', Buffer.from('b=2')],
      other: 'x',
    };
    kafkaHeadersSetter.set(h, 'baggage', 'a=1,b=2,branchline=k');
    expect(h).toEqual({ other: 'x', baggage: 'a=1,b=2,branchline=k' });
  });
});
