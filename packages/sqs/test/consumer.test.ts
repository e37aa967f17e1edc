import { type Message, SendMessageCommand } from '@aws-sdk/client-sqs';
import { createRuntime, getRoutingKey, type SandboxSpec, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { afterAll, expect, it } from 'vitest';
import {
  createSqsSelectiveConsumer,
  type SqsMessageInfo,
  type SqsSelectiveConsumer,
  sandboxQueueName,
  withRouting,
} from '../src/index.js';
import {
  countMessages,
  createTestQueue,
  deleteQueues,
  eventually,
  listQueues,
  receiveRaw,
  testClient,
  uniqueQueue,
} from './sqs.js';

const SERVICE = 'orders';
const ep = { http: 'http://127.0.0.1:1' };
const { client } = testClient();
withRouting(client);
const prefix = uniqueQueue('bl-cons');
const runtime = createRuntime({ service: SERVICE, routes: { sandboxes: [] } });
const consumers: SqsSelectiveConsumer[] = [];
afterAll(async () => {
  await Promise.all(consumers.map((c) => c.close()));
  await deleteQueues(client, prefix);
});

function sandbox(name: string, from: number, to?: number): SandboxSpec {
  return {
    name,
    key: name,
    overrides: { [SERVICE]: ep },
    createdAt: from,
    ...(to === undefined ? {} : { deletedAt: to }),
    history: { [SERVICE]: [to === undefined ? { from } : { from, to }] },
  };
}

interface Seen {
  body: string;
  by: string;
  key: string | undefined;
  info: SqsMessageInfo;
}

function consumer(
  queue: string,
  sb: string | null,
  routes: StaticRouteSource,
  seen: Seen[],
  extra: Partial<Parameters<typeof createSqsSelectiveConsumer>[0]> = {},
): SqsSelectiveConsumer {
  const c = createSqsSelectiveConsumer({
    client,
    queue,
    service: SERVICE,
    sandbox: sb,
    routes,
    runtime,
    waitTimeMs: 1000,
    drainGraceMs: 300,
    onMessage: (m: Message, info) => {
      seen.push({ body: m.Body!, by: sb ?? 'baseline', key: getRoutingKey(), info });
    },
    ...extra,
  });
  consumers.push(c);
  return c;
}

async function send(url: string, body: string, key?: string): Promise<void> {
  const cmd = new SendMessageCommand({ QueueUrl: url, MessageBody: body });
  await (key ? withRoutingKey(key, () => client.send(cmd)) : client.send(cmd));
}

it('baseline processes keyless and unowned messages; the owning sandbox processes its own, in their context', async () => {
  const queue = `${prefix}-a`;
  const url = await createTestQueue(client, queue);
  const routes = new StaticRouteSource({ sandboxes: [sandbox('sb1', 0)] });
  const seen: Seen[] = [];
  const base = consumer(queue, null, routes, seen);
  await base.ready();
  const sb = consumer(queue, 'sb1', routes, seen);
  await sb.ready();
  await send(url, 'plain');
  await send(url, 'other', 'nobody');
  for (let i = 0; i < 5; i++) await send(url, `mine${i}`, 'sb1');
  await eventually(() => seen.length >= 7, '7 messages processed');
  await new Promise((r) => setTimeout(r, 300));
  const by = Object.fromEntries(seen.map((s) => [s.body, s.by]));
  expect(by).toEqual({
    plain: 'baseline',
    other: 'baseline',
    mine0: 'sb1',
    mine1: 'sb1',
    mine2: 'sb1',
    mine3: 'sb1',
    mine4: 'sb1',
  });
  expect(seen.find((s) => s.body === 'mine0')?.key).toBe('sb1');
  expect(seen.find((s) => s.body === 'other')?.key).toBe('nobody');
  expect(base.stats.moved).toBe(5);
  expect(sb.queue).toBe(sandboxQueueName(queue, 'sb1'));
  expect(await countMessages(client, url)).toBe(0);
});

it('moves owned messages to the sandbox queue and, when the sandbox is deleted, returns them with their original time', async () => {
  const queue = `${prefix}-b`;
  const url = await createTestQueue(client, queue);
  const created = Date.now() - 1000;
  const routes = new StaticRouteSource({ sandboxes: [sandbox('sb2', created)] });
  const seen: Seen[] = [];
  const base = consumer(queue, null, routes, seen);
  await base.ready();
  // No sandbox consumer runs: the moved messages wait in the sandbox queue.
  for (let i = 0; i < 12; i++) await send(url, `m${i}`, 'sb2');
  const sentAt = new Map<string, number>();
  await eventually(() => base.stats.moved === 12, '12 moves');
  const sbUrl = (await listQueues(client, sandboxQueueName(queue, 'sb2')))[0]!;
  expect(await countMessages(client, sbUrl)).toBe(12);
  const peek = await receiveRaw(client, sbUrl, 0, 0); // a look that leaves them visible
  for (const m of peek)
    sentAt.set(m.Body!, Number(/t=(\d+)/.exec(m.MessageAttributes!.branchline!.StringValue!)![1]));
  expect(peek[0]?.MessageAttributes?.branchline?.StringValue).toMatch(/m=.*;f=/);
  expect(seen).toEqual([]);
  const deletedAt = Date.now();
  routes.update({ sandboxes: [sandbox('sb2', created, deletedAt)] });
  await eventually(() => seen.length === 12, 'the 12 returned messages processed by baseline', 40_000);
  await base.cleanupsSettled();
  expect(new Set(seen.map((s) => s.by))).toEqual(new Set(['baseline']));
  expect(seen.every((s) => s.info.returnedFrom === 'sb2' && s.key === 'sb2')).toBe(true);
  for (const s of seen) {
    expect(s.info.time).toBeLessThan(deletedAt);
    if (sentAt.has(s.body)) expect(s.info.time).toBe(sentAt.get(s.body));
  }
  expect(base.stats.returned).toBe(12);
  expect(await listQueues(client, sandboxQueueName(queue, 'sb2'))).toEqual([]);
}, 60_000);

it('holds a message its route view cannot decide, extending its visibility, and returns it on the hold timeout', async () => {
  const queue = `${prefix}-c`;
  const url = await createTestQueue(client, queue);
  const routes = new StaticRouteSource(); // never syncs
  const seen: Seen[] = [];
  const c = consumer(queue, null, routes, seen, {
    visibilityTimeoutMs: 1000,
    holdTimeoutMs: 3500,
    pollers: 1,
  });
  await c.ready();
  await send(url, 'held', 'pr-1');
  await eventually(() => c.stats.held === 1, 'the hold');
  // Three visibility timeouts later the message is still invisible to everybody else.
  const other = testClient().client;
  const until = Date.now() + 3000;
  while (Date.now() < until) expect(await receiveRaw(other, url, 1)).toEqual([]);
  expect(c.stats.extended).toBeGreaterThanOrEqual(2);
  // After the hold timeout it is visible again: the consumer receives it and holds it again.
  await eventually(
    () => c.stats.holdTimeouts >= 1 && c.stats.held >= 2,
    'a timeout and a second hold',
    10_000,
  );
  expect(seen).toEqual([]);
  // Closing returns a held message at once.
  await c.close();
  const back = await receiveRaw(other, url, 2);
  expect(back.map((m) => m.Body)).toEqual(['held']);
  expect(Number(back[0]!.Attributes!.ApproximateReceiveCount)).toBeGreaterThanOrEqual(3);
}, 30_000);

it('extends the visibility of a message while a long handler runs, and redelivers one whose handler threw', async () => {
  const queue = `${prefix}-d`;
  const url = await createTestQueue(client, queue);
  const routes = new StaticRouteSource({ sandboxes: [] });
  const calls: { body: string; redelivered: boolean }[] = [];
  const c = createSqsSelectiveConsumer({
    client,
    queue,
    service: SERVICE,
    sandbox: null,
    routes,
    runtime,
    waitTimeMs: 1000,
    visibilityTimeoutMs: 1000,
    pollers: 1,
    backoff: { initialMs: 100, maxMs: 200 },
    onMessage: async (m, info) => {
      calls.push({ body: m.Body!, redelivered: info.redelivered });
      if (m.Body === 'slow') await new Promise((r) => setTimeout(r, 3500));
      if (m.Body === 'fails' && !info.redelivered) throw new Error('first attempt fails');
    },
  });
  consumers.push(c);
  await c.ready();
  await send(url, 'slow');
  await eventually(() => calls.length === 1, 'the slow handler to start');
  const other = testClient().client;
  const until = Date.now() + 3000;
  while (Date.now() < until) expect(await receiveRaw(other, url, 1)).toEqual([]);
  await eventually(async () => (await countMessages(client, url)) === 0, 'the slow message deleted');
  expect(calls).toEqual([{ body: 'slow', redelivered: false }]);
  expect(c.stats.extended).toBeGreaterThanOrEqual(2);

  await send(url, 'fails');
  await eventually(() => calls.length === 3, 'the failed message received again');
  expect(calls.slice(1)).toEqual([
    { body: 'fails', redelivered: false },
    { body: 'fails', redelivered: true },
  ]);
  await eventually(async () => (await countMessages(client, url)) === 0, 'the message deleted after success');
}, 30_000);

it('rejects bad options with a clear message', () => {
  expect(() =>
    createSqsSelectiveConsumer({ client, queue: 'https://sqs/x', onMessage: () => {}, service: SERVICE }),
  ).toThrow(/not an SQS queue name/);
  expect(() =>
    createSqsSelectiveConsumer({
      client,
      queue: 'q',
      onMessage: () => {},
      service: SERVICE,
      visibilityTimeoutMs: 10,
    }),
  ).toThrow(/visibilityTimeoutMs/);
  expect(sandboxQueueName('orders', 'pr-1')).toBe('orders-sandbox-pr-1');
  const long = sandboxQueueName('q'.repeat(60), 's'.repeat(63));
  expect(long.length).toBeLessThanOrEqual(80);
  expect(long).not.toBe(sandboxQueueName('q'.repeat(60), `${'s'.repeat(62)}t`));
});

it('says which queue is missing when the baseline queue does not exist', async () => {
  const c = createSqsSelectiveConsumer({
    client,
    queue: `${prefix}-missing`,
    service: SERVICE,
    sandbox: null,
    routes: new StaticRouteSource({ sandboxes: [] }),
    runtime,
    onMessage: () => {},
  });
  consumers.push(c);
  await expect(c.ready()).rejects.toThrow(/queue "bl-cons-.*-missing" does not exist; create it/);
});
