import {
  amqpQueueResourceHook,
  createSelectiveConsumer,
  instrumentChannel,
  sandboxQueueName,
} from '@branchline/amqplib';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { createRegistrySource } from '@branchline/core/transport';
import { createRegistryServer, type RegistryServer } from '@branchline/registry';
import { until } from '@branchline/test-utils';
import { createTestVhost, queueExists, type TestVhost } from '@branchline/test-utils/amqp';
import amqp, { type ChannelModel } from 'amqplib';
import { afterAll, beforeAll, expect, it } from 'vitest';

let vhost: TestVhost;
let registry: RegistryServer;
let conn: ChannelModel;

beforeAll(async () => {
  vhost = await createTestVhost('bl-amqp-registry');
  registry = createRegistryServer({
    store: ':memory:',
    resourceHooks: [amqpQueueResourceHook({ connection: vhost.url })],
    log: () => undefined,
  });
  await registry.listen(0);
  conn = await amqp.connect(vhost.url);
});

afterAll(async () => {
  await conn?.close().catch(() => undefined);
  await registry?.close();
  await vhost?.destroy();
});

async function api(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: { resources?: Record<string, { status?: string }> } | undefined }> {
  const res = await fetch(`${registry.url}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

it('with the real registry: the amqp-queue resource creates the sandbox queue, and deleting the sandbox returns its waiting messages to baseline', async () => {
  const queue = 'orders-reg';
  const routes = createRegistrySource({ registry: registry.url });
  const runtime = createRuntime({ service: 'orders', routes: routes });
  const processed: string[] = [];
  const baseline = createSelectiveConsumer({
    connection: vhost.url,
    queue,
    service: 'orders',
    sandbox: null,
    routes,
    runtime,
    setup: async (ch) => {
      await ch.assertQueue(queue, { durable: true });
    },
    onMessage(m, ch) {
      processed.push(String(m.properties.messageId));
      ch.ack(m);
    },
  });
  try {
    await baseline.ready();
    const created = await api('PUT', '/v1/sandboxes/pr-7', {
      key: 'pr-7',
      overrides: { orders: { http: 'http://127.0.0.1:1' } },
      resources: { 'orders-queue': { type: 'amqp-queue', spec: { queues: [queue] } } },
    });
    expect(created.status).toBe(201);
    await until(
      async () =>
        (await api('GET', '/v1/sandboxes/pr-7')).json?.resources?.['orders-queue']?.status === 'ready',
      'the amqp-queue resource ready',
    );
    const sq = sandboxQueueName(queue, 'pr-7');
    expect(await queueExists(conn, sq)).toBe(true);
    await until(() => routes.table?.sandbox('pr-7') !== undefined, 'the consumer view to see pr-7');

    // No pr-7 workload consumes yet: its messages are moved and wait in its queue.
    const pub = instrumentChannel(await conn.createConfirmChannel());
    for (let i = 0; i < 10; i++)
      withRoutingKey('pr-7', () => pub.sendToQueue(queue, Buffer.from('x'), { messageId: `r${i}` }));
    pub.sendToQueue(queue, Buffer.from('x'), { messageId: 'plain' });
    await pub.waitForConfirms();
    await until(() => baseline.stats.moved === 10 && processed.includes('plain'), 'ten moved, one processed');
    expect(processed).toEqual(['plain']);

    const deleted = await api('DELETE', '/v1/sandboxes/pr-7');
    expect([200, 202]).toContain(deleted.status);
    await until(() => processed.length === 11, 'the ten waiting messages processed by baseline');
    expect(processed.slice(1).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `r${i}`).sort());
    await baseline.cleanupsSettled();
    await until(async () => !(await queueExists(conn, sq)), 'the sandbox queue removed');
    await pub.close();
  } finally {
    await baseline.close();
    await routes.close();
  }
});
