import { createRuntime } from '@branchline/core';
import {
  createSelectiveConsumer,
  kafkaConsumerGroupsHook,
  type SelectiveConsumer,
} from '@branchline/kafkajs';
import { createRegistryServer } from '@branchline/registry';
import { until } from '@branchline/test-utils';
import {
  brokers,
  consumerTuning,
  createTopic,
  groupLag,
  header,
  kafkaClient,
  unique,
} from '@branchline/test-utils/kafka';
import type { Admin, Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The selective consumer against the real registry: ownership history, tombstones and
 * completeUntil come from its watch stream, and the kafka-consumer-groups resource hook runs when
 * the sandbox is deleted.
 */

const TOKEN = 'kafka-registry-test-token';
const kafka = kafkaClient('kafka-registry');
let admin: Admin;
let producer: Producer;
const groupId = unique('orders');
const registry = createRegistryServer({
  store: ':memory:',
  tokens: [{ token: TOKEN, scopes: ['read', 'write'], name: 'test' }],
  resourceHooks: [kafkaConsumerGroupsHook({ brokers }, { groups: [groupId] })],
  heartbeatIntervalMs: 200,
  retryIntervalMs: 500,
  deleteWaitMs: 500,
});
let url: string;
const consumers: SelectiveConsumer[] = [];
const runtimes: ReturnType<typeof createRuntime>[] = [];

beforeAll(async () => {
  url = await registry.listen(0, '127.0.0.1');
  admin = kafka.admin();
  await admin.connect();
  producer = kafka.producer();
  await producer.connect();
});

afterAll(async () => {
  await Promise.allSettled(consumers.map((c) => c.disconnect()));
  await Promise.allSettled(runtimes.map((r) => r.routes.close()));
  await producer.disconnect();
  await admin.disconnect();
  await registry.close();
});

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

describe('kafka with the registry (real broker, real registry)', () => {
  it('hands a key over to the sandbox when it is created and back to the baseline when it is deleted, exactly once', async () => {
    const topic = unique('registry');
    await createTopic(admin, topic, 3);
    const processed = new Map<string, string[]>();
    const start = async (sandbox?: string) => {
      const runtime = createRuntime({ registry: url, token: TOKEN, service: 'orders', sandbox });
      runtimes.push(runtime);
      const c = createSelectiveConsumer(kafka, { groupId, runtime, drainGraceMs: 0, ...consumerTuning });
      consumers.push(c);
      await c.connect();
      await c.subscribe({ topics: [topic], fromBeginning: true });
      await c.run({
        eachMessage: async ({ message }) => {
          const id = header(message, 'id')!;
          processed.set(id, [...(processed.get(id) ?? []), sandbox ?? 'baseline']);
        },
      });
      return c;
    };
    let n = 0;
    const send = async (phase: string, count: number) => {
      const ids: string[] = [];
      for (let i = 0; i < count; i++, n++) {
        const id = `${phase}-${n}`;
        ids.push(id);
        await producer.send({
          topic,
          messages: [{ value: id, headers: { id, baggage: i % 2 ? 'branchline=pr-7' : 'team=x' } }],
        });
      }
      return ids;
    };

    await start();
    const before = await send('before', 20);
    await api('PUT', '/v1/sandboxes/pr-7', {
      overrides: { orders: { http: 'http://127.0.0.1:1' } },
      resources: { kafka: { type: 'kafka-consumer-groups', spec: {} } },
    });
    // The sandbox's first messages arrive before its consumer runs: it must still get them.
    const during = await send('during', 20);
    const sandbox = await start('pr-7');
    const during2 = await send('during', 20);
    await api('DELETE', '/v1/sandboxes/pr-7');
    const after = await send('after', 20);

    await sandbox.drained;
    await until(
      async () => (await groupLag(admin, groupId, topic)) === 0,
      () => `the baseline to commit the whole topic (${processed.size} ids processed)`,
    );
    const owner = (id: string) => processed.get(id);
    const keyed = (ids: string[]) => ids.filter((_, i) => i % 2 === 1);
    const plain = (ids: string[]) => ids.filter((_, i) => i % 2 === 0);
    for (const id of [...before, ...during, ...during2, ...after]) expect(owner(id)).toHaveLength(1);
    for (const id of [...keyed(before), ...keyed(after)]) expect(owner(id)).toEqual(['baseline']);
    for (const id of [...keyed(during), ...keyed(during2)]) expect(owner(id)).toEqual(['pr-7']);
    for (const id of [...plain(before), ...plain(during), ...plain(during2), ...plain(after)])
      expect(owner(id)).toEqual(['baseline']);
    // The sandbox's group is gone (deleted by its consumer after the drain, or by the hook),
    // and the registry finished removing the sandbox's kafka resource.
    await until(
      async () => !(await admin.listGroups()).groups.some((g) => g.groupId === `${groupId}.sandbox.pr-7`),
      () => 'the sandbox group to be deleted',
    );
    await until(
      async () => {
        const res = await fetch(`${url}/v1/sandboxes/pr-7`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        if (res.status === 404) return true;
        const doc = (await res.json()) as { resources?: Record<string, unknown> };
        return Object.keys(doc.resources ?? {}).length === 0;
      },
      () => 'the registry to finish deprovisioning the kafka resource',
    );
  }, 120_000);
});
