import { withRoutingKey } from '@branchline/core';
import { until } from '@branchline/test-utils';
import { createTestVhost, type TestVhost } from '@branchline/test-utils/amqp';
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import callbackApi from 'amqplib/callback_api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instrumentChannel, instrumentConnection, TIME_HEADER } from '../src/index.js';

let vhost: TestVhost;
let conn: ChannelModel;
let reader: Channel;
const received = new Map<string, ConsumeMessage>();
const QUEUE = 'publish-probe';

beforeAll(async () => {
  vhost = await createTestVhost('bl-publish');
  conn = await amqp.connect(vhost.url);
  reader = await conn.createChannel();
  await reader.assertQueue(QUEUE, { durable: false });
  await reader.assertExchange('probe-topic', 'topic', { durable: false });
  await reader.bindQueue(QUEUE, 'probe-topic', '#');
  await reader.consume(
    QUEUE,
    (m) => {
      if (m) received.set(String(m.properties.messageId), m);
    },
    { noAck: true },
  );
});

afterAll(async () => {
  await conn?.close().catch(() => undefined);
  await vhost?.destroy();
});

function baggageOf(id: string): string | undefined {
  const v = received.get(id)?.properties.headers?.baggage;
  return v === undefined ? undefined : String(v);
}

async function arrived(...ids: string[]): Promise<void> {
  await until(() => ids.every((id) => received.has(id)), `messages ${ids.join(', ')}`);
}

describe('publishing through an instrumented channel', () => {
  it('adds the active key as a baggage header on publish and sendToQueue (promise API)', async () => {
    const ch = instrumentChannel(await conn.createChannel());
    withRoutingKey('pr-7', () => {
      ch.sendToQueue(QUEUE, Buffer.from('a'), { messageId: 'p1' });
      ch.publish('probe-topic', 'orders.created', Buffer.from('b'), { messageId: 'p2' });
    });
    ch.publish('probe-topic', 'orders.created', Buffer.from('c'), { messageId: 'p3' });
    await arrived('p1', 'p2', 'p3');
    expect(baggageOf('p1')).toBe('branchline=pr-7');
    expect(baggageOf('p2')).toBe('branchline=pr-7');
    expect(typeof received.get('p1')!.properties.headers?.[TIME_HEADER]).toBe('number');
    // No key: the message leaves exactly as the application built it.
    expect(received.get('p3')!.properties.headers?.baggage).toBeUndefined();
    expect(received.get('p3')!.properties.headers?.[TIME_HEADER]).toBeUndefined();
    await ch.close();
  });

  it('merges into baggage the application set, never duplicates it, never overwrites its own member', async () => {
    const ch = instrumentChannel(await conn.createConfirmChannel());
    const shared = { messageId: 'm1', headers: { Baggage: 'tenant=acme,region=eu' } };
    await withRoutingKey('pr-7', async () => {
      ch.publish('', QUEUE, Buffer.from('x'), shared);
      ch.sendToQueue(QUEUE, Buffer.from('y'), {
        messageId: 'm2',
        headers: { baggage: Buffer.from('branchline=mine,tenant=acme') },
      });
      await ch.waitForConfirms();
    });
    await arrived('m1', 'm2');
    const h1 = received.get('m1')!.properties.headers!;
    expect(Object.keys(h1).filter((k) => k.toLowerCase() === 'baggage')).toEqual(['baggage']);
    expect(String(h1.baggage)).toBe('tenant=acme,region=eu,branchline=pr-7');
    expect(baggageOf('m2')).toBe('branchline=mine,tenant=acme');
    // The caller's (reusable) options object is left untouched.
    expect(shared.headers).toEqual({ Baggage: 'tenant=acme,region=eu' });
    await ch.close();
  });

  it('works on confirm channels with per-message callbacks, and on every channel of an instrumented connection', async () => {
    instrumentConnection(conn);
    const ch = await conn.createConfirmChannel();
    const confirmed = await withRoutingKey(
      'pr-9',
      () =>
        new Promise<unknown>((resolve) => {
          ch.sendToQueue(QUEUE, Buffer.from('z'), { messageId: 'c1' }, (err) => resolve(err ?? 'ok'));
        }),
    );
    expect(confirmed).toBe('ok');
    await arrived('c1');
    expect(baggageOf('c1')).toBe('branchline=pr-9');
    await ch.close();
  });

  it('works with the callback API', async () => {
    const cbConn = await new Promise<callbackApi.Connection>((resolve, reject) =>
      callbackApi.connect(vhost.url, (err: unknown, c: callbackApi.Connection) =>
        err ? reject(err) : resolve(c),
      ),
    );
    instrumentConnection(cbConn);
    const ch = await new Promise<callbackApi.ConfirmChannel>((resolve, reject) =>
      cbConn.createConfirmChannel((err: unknown, c: callbackApi.ConfirmChannel) =>
        err ? reject(err) : resolve(c),
      ),
    );
    const result = await withRoutingKey(
      'pr-11',
      () =>
        new Promise<unknown>((resolve) => {
          ch.publish('probe-topic', 'x', Buffer.from('cb'), { messageId: 'cb1' }, (err) =>
            resolve(err ?? 'ok'),
          );
        }),
    );
    expect(result).toBe('ok');
    await arrived('cb1');
    expect(baggageOf('cb1')).toBe('branchline=pr-11');
    await new Promise((r) => cbConn.close(r));
  });
});

describe('with OpenTelemetry registered (last: it installs globals for this file)', () => {
  it('a selective consumer restores the message’s whole baggage and its key inside the handler', async () => {
    const { context, propagation } = await import('@opentelemetry/api');
    const { createRuntime, ensureOpenTelemetry, getRoutingKey } = await import('@branchline/core');
    const { StaticRouteSource } = await import('@branchline/core/transport');
    const { createSelectiveConsumer } = await import('../src/index.js');
    expect(ensureOpenTelemetry()).toEqual({ contextManager: true, propagator: true });
    const queue = 'otel-probe';
    const seen: { key: string | undefined; tenant: string | undefined }[] = [];
    const consumer = createSelectiveConsumer({
      connection: vhost.url,
      queue,
      service: 'orders',
      sandbox: null,
      runtime: createRuntime({ service: 'orders', routes: new StaticRouteSource({ sandboxes: [] }) }),
      setup: async (ch) => {
        await ch.assertQueue(queue, { durable: false });
      },
      onMessage(m, ch) {
        seen.push({
          key: getRoutingKey(),
          tenant: propagation.getBaggage(context.active())?.getEntry('tenant')?.value,
        });
        ch.ack(m);
      },
    });
    await consumer.ready();
    const ch = instrumentChannel(await conn.createChannel());
    const bag = propagation.createBaggage({ tenant: { value: 'acme' }, branchline: { value: 'pr-5' } });
    context.with(propagation.setBaggage(context.active(), bag), () => {
      // The key comes from OpenTelemetry's active context; the app's propagator would write the
      // rest of the baggage, here it is in the header the application set.
      ch.sendToQueue(queue, Buffer.from('o'), { headers: { baggage: 'tenant=acme' } });
    });
    await until(() => seen.length === 1, 'the message processed');
    expect(seen).toEqual([{ key: 'pr-5', tenant: 'acme' }]);
    await consumer.close();
    await ch.close();
  });
});
