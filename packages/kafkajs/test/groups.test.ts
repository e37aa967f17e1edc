import type { ResourceContext } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { brokers, consumerTuning, createTopic, kafkaClient, unique } from '@branchline/test-utils/kafka';
import type { Admin } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSelectiveConsumer,
  kafkaConsumerGroupsHook,
  sandboxGroupId,
  sandboxOfGroupId,
} from '../src/index.js';

const kafka = kafkaClient('groups-test');
let admin: Admin;
let topic: string;

/** The context the registry passes to a hook, for sandbox `name` (as in core's ResourceContext). */
const ctx = (name: string): ResourceContext => ({
  sandbox: { name, key: name, labels: {} },
  resource: { name: 'kafka', type: 'kafka-consumer-groups', spec: {} },
  report() {},
  signal: new AbortController().signal,
});

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
  topic = unique('groups');
  await createTopic(admin, topic, 1);
});

afterAll(async () => {
  await admin.disconnect();
});

/**
 * A consumer group that exists on the broker with a committed offset and no members. (kafkajs's
 * setOffsets waits for one empty fetch, about 5 s, so tests make several at once.)
 */
async function committedGroup(groupId: string): Promise<void> {
  await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '0' }] });
}

async function groupIds(): Promise<string[]> {
  return (await admin.listGroups()).groups.map((g) => g.groupId);
}

describe('sandbox consumer group ids', () => {
  it('derive from the baseline group id and the sandbox name, and back', () => {
    expect(sandboxGroupId('orders.v2', 'pr-42')).toBe('orders.v2.sandbox.pr-42');
    expect(sandboxOfGroupId('orders.v2.sandbox.pr-42')).toBe('pr-42');
    expect(sandboxOfGroupId('orders.v2')).toBeUndefined();
    expect(() => sandboxGroupId('orders', 'PR 42')).toThrow(/not a sandbox name/);
  });
});

describe('kafkaConsumerGroupsHook (registry resource hook, real broker)', () => {
  it('deletes every consumer group of the deleted sandbox and nothing else', async () => {
    const a = unique('orders');
    const b = unique('billing');
    const hook = kafkaConsumerGroupsHook({ brokers }, { groups: [a, b], abandonAfterMs: 0 });
    await Promise.all(
      [a, sandboxGroupId(a, 'pr-1'), sandboxGroupId(b, 'pr-1'), sandboxGroupId(a, 'pr-2')].map(
        committedGroup,
      ),
    );
    await hook.deprovision(ctx('pr-1'));
    const left = await groupIds();
    expect(left).not.toContain(sandboxGroupId(a, 'pr-1'));
    expect(left).not.toContain(sandboxGroupId(b, 'pr-1'));
    expect(left).toContain(sandboxGroupId(a, 'pr-2'));
    expect(left).toContain(a);
    // Idempotent: running it again (the registry retries after a crash) succeeds.
    await hook.deprovision(ctx('pr-1'));
  });

  it('refuses (so the registry retries) while a sandbox consumer is still in its group, e.g. draining', async () => {
    const a = unique('orders');
    const hook = kafkaConsumerGroupsHook({ kafka }, { groups: [a], abandonAfterMs: 0 });
    const consumer = createSelectiveConsumer(kafka, {
      groupId: a,
      service: 'orders',
      sandbox: 'pr-3',
      routes: {
        sandboxes: [{ name: 'pr-3', key: 'pr-3', overrides: { orders: { http: 'http://127.0.0.1:1' } } }],
      },
      ...consumerTuning,
    });
    await consumer.connect();
    await consumer.subscribe({ topics: [topic] });
    await consumer.run({ eachMessage: async () => {} });
    try {
      await expect(hook.deprovision(ctx('pr-3'))).rejects.toThrow(/still have active members/);
      expect(await groupIds()).toContain(sandboxGroupId(a, 'pr-3'));
    } finally {
      await consumer.disconnect();
    }
    await hook.deprovision(ctx('pr-3'));
    expect(await groupIds()).not.toContain(sandboxGroupId(a, 'pr-3'));
  });

  it('keeps a group left by a consumer that stopped before draining for abandonAfterMs, then deletes it', async () => {
    const a = unique('orders');
    const hook = kafkaConsumerGroupsHook({ brokers }, { groups: [a], abandonAfterMs: 1500 });
    const id = sandboxGroupId(a, 'pr-4');
    await committedGroup(id);
    await expect(hook.deprovision(ctx('pr-4'))).rejects.toThrow(/stopped before it drained/);
    expect(await groupIds()).toContain(id);
    await new Promise((r) => setTimeout(r, 1600));
    await hook.deprovision(ctx('pr-4'));
    expect(await groupIds()).not.toContain(id);
  });

  it('sweeps the groups of sandboxes that no longer exist', async () => {
    const a = unique('orders');
    const hook = kafkaConsumerGroupsHook({ brokers }, { groups: [a], abandonAfterMs: 0 });
    await Promise.all([a, sandboxGroupId(a, 'live-1'), sandboxGroupId(a, 'gone-1')].map(committedGroup));
    await hook.sweep(['live-1']);
    await until(
      async () => !(await groupIds()).includes(sandboxGroupId(a, 'gone-1')),
      () => 'the orphan group to be swept',
    );
    const left = await groupIds();
    expect(left).toContain(sandboxGroupId(a, 'live-1'));
    expect(left).toContain(a);
  });

  it('rejects a spec whose groups are not a list of names, with the value in the message', () => {
    const hook = kafkaConsumerGroupsHook({ brokers });
    expect(hook.type).toBe('kafka-consumer-groups');
    expect(() => hook.validate({ groups: 'orders' })).toThrow(/spec.groups must be a list.*"orders"/);
    expect(() => hook.validate({ groups: ['orders'] })).not.toThrow();
  });
});
