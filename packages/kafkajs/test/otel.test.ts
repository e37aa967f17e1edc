import { ensureOpenTelemetry } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { consumerTuning, createTopic, header, kafkaClient, unique } from '@branchline/test-utils/kafka';
import { context, propagation } from '@opentelemetry/api';
import type { Admin, Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSelectiveConsumer, instrumentProducer, type SelectiveConsumer } from '../src/index.js';

// This file runs in its own worker: here an OpenTelemetry context manager and propagator are
// registered (as an app with the NodeSDK has), so contexts flow through OpenTelemetry's API.
ensureOpenTelemetry();

const kafka = kafkaClient('otel-test');
let admin: Admin;
let producer: Producer;
let consumer: SelectiveConsumer;
let reader: ReturnType<typeof kafka.consumer>;

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
  producer = instrumentProducer(kafka.producer());
  await producer.connect();
});

afterAll(async () => {
  await consumer?.disconnect();
  await reader?.disconnect();
  await producer.disconnect();
  await admin.disconnect();
});

describe('with OpenTelemetry managing context', () => {
  it('the handler runs in the message context (OpenTelemetry baggage) and what it produces carries the key', async () => {
    const topic = unique('otel');
    const next = unique('otel-next');
    await createTopic(admin, topic, 1);
    await createTopic(admin, next, 1);
    const seen: { id: string; member: string | undefined }[] = [];
    consumer = createSelectiveConsumer(kafka, {
      groupId: unique('orders'),
      service: 'orders',
      routes: new StaticRouteSource({ sandboxes: [] }),
      ...consumerTuning,
    });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const id = header(message, 'id')!;
        seen.push({ id, member: propagation.getBaggage(context.active())?.getEntry('branchline')?.value });
        await producer.send({ topic: next, messages: [{ value: id, headers: { id } }] });
      },
    });
    const forwarded: Record<string, string | undefined> = {};
    reader = kafka.consumer({ groupId: unique('reader'), ...consumerTuning });
    await reader.connect();
    await reader.subscribe({ topics: [next], fromBeginning: true });
    await reader.run({
      eachMessage: async ({ message }) => {
        forwarded[header(message, 'id')!] = header(message, 'baggage');
      },
    });
    await producer.send({
      topic,
      messages: [
        { value: 'a', headers: { id: 'keyed', baggage: Buffer.from('branchline=pr-5,team=blue') } },
        { value: 'b', headers: { id: 'plain' } },
      ],
    });
    await until(
      () => Object.keys(forwarded).length >= 2,
      () => JSON.stringify({ seen, forwarded }),
    );
    expect(seen).toEqual([
      { id: 'keyed', member: 'pr-5' },
      { id: 'plain', member: undefined },
    ]);
    expect(forwarded).toEqual({ keyed: 'branchline=pr-5', plain: undefined });
  });
});
