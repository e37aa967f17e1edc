import {
  amqpQueueResourceHook,
  createSelectiveConsumer,
  instrumentChannel,
  removeSandboxQueues,
  SANDBOX_EXCHANGE,
  type SelectiveConsumer,
  sandboxQueueName,
  sandboxQueuesCleanup,
} from '@branchline/amqplib';
import { createRuntime, getRoutingKey, type RouteTableSpec, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { barrier, until } from '@branchline/test-utils';
import { createTestVhost, queueExists, type TestVhost } from '@branchline/test-utils/amqp';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const SERVICE = 'orders';
const ep = { http: 'http://127.0.0.1:1' };
const sandboxes: RouteTableSpec['sandboxes'] = [
  { name: 'sb-a', key: 'sb-a', overrides: { orders: ep }, createdAt: 1 },
  { name: 'sb-b', key: 'sb-b', overrides: { orders: ep }, labels: { feature: 'checkout' }, createdAt: 2 },
  // Producer-only: it changes another service, so the baseline consumer of orders keeps its messages.
  {
    name: 'prod-only',
    key: 'prod-only',
    overrides: { billing: ep },
    labels: { feature: 'checkout' },
    createdAt: 3,
  },
];
const groups: RouteTableSpec['groups'] = [
  { name: 'checkout', key: 'checkout', match: { labels: { feature: 'checkout' } }, createdAt: 1 },
];

let vhost: TestVhost;
let conn: ChannelModel;
let pub: ConfirmChannel;
const runtime = createRuntime({ service: SERVICE, routes: { sandboxes: [] } });
const consumers: SelectiveConsumer[] = [];
let queueSeq = 0;

interface Seen {
  by: string;
  key: string | undefined;
  exchange: string;
  routingKey: string;
  redelivered: boolean;
}

beforeAll(async () => {
  vhost = await createTestVhost('bl-amqp-select');
  conn = await amqp.connect(vhost.url);
  pub = instrumentChannel(await conn.createConfirmChannel());
});

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await conn?.close().catch(() => undefined);
  await vhost?.destroy();
});

/** The application's own topology, declared by every baseline consumer on each (re)connect. */
function topology(queue: string) {
  return async (ch: Channel) => {
    await ch.assertQueue(queue, { durable: true });
    await ch.assertExchange(`${queue}.direct`, 'direct', { durable: false });
    await ch.assertExchange(`${queue}.topic`, 'topic', { durable: false });
    await ch.assertExchange(`${queue}.fanout`, 'fanout', { durable: false });
    await ch.bindQueue(queue, `${queue}.direct`, 'order.created');
    await ch.bindQueue(queue, `${queue}.topic`, 'order.#');
    await ch.bindQueue(queue, `${queue}.fanout`, '');
    await ch.assertExchange(`${queue}.headers`, 'headers', { durable: false });
    await ch.bindQueue(queue, `${queue}.headers`, '', { 'x-match': 'all', kind: 'order' });
  };
}

function start(
  queue: string,
  sandbox: string | null,
  routes: StaticRouteSource,
  seen: Map<string, Seen[]>,
  handler?: (m: ConsumeMessage, ch: Channel) => boolean,
): SelectiveConsumer {
  const name = sandbox ?? 'baseline';
  const c = createSelectiveConsumer({
    connection: vhost.url,
    queue,
    service: SERVICE,
    sandbox,
    routes,
    runtime,
    setup: sandbox === null ? topology(queue) : undefined,
    onMessage(m, ch) {
      const id = String(m.properties.messageId);
      if (handler && !handler(m, ch)) return;
      const list = seen.get(id) ?? [];
      list.push({
        by: name,
        key: getRoutingKey(),
        exchange: m.fields.exchange,
        routingKey: m.fields.routingKey,
        redelivered: m.fields.redelivered,
      });
      seen.set(id, list);
      ch.ack(m);
    },
  });
  consumers.push(c);
  return c;
}

async function publishAll(list: { id: string; key?: string; send: (o: object) => void }[]): Promise<void> {
  for (const m of list) {
    const o = { messageId: m.id, persistent: true };
    if (m.key) withRoutingKey(m.key, () => m.send(o));
    else m.send(o);
  }
  await pub.waitForConfirms();
}

describe('selective consumption on RabbitMQ', () => {
  it('routes each message to exactly one consumer by key, for default-exchange, direct, topic, fanout and headers-exchange publishing', async () => {
    const queue = `orders-${++queueSeq}`;
    const routes = new StaticRouteSource({ sandboxes, groups });
    const seen = new Map<string, Seen[]>();
    const baseline = start(queue, null, routes, seen);
    await baseline.ready();
    const a = start(queue, 'sb-a', routes, seen);
    const b = start(queue, 'sb-b', routes, seen);
    await Promise.all([a.ready(), b.ready()]);

    const how: Record<string, (o: object) => void> = {
      queue: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o),
      direct: (o) => pub.publish(`${queue}.direct`, 'order.created', Buffer.from('{}'), o),
      topic: (o) => pub.publish(`${queue}.topic`, 'order.paid.eu', Buffer.from('{}'), o),
      fanout: (o) => pub.publish(`${queue}.fanout`, '', Buffer.from('{}'), o),
      headers: (o) =>
        pub.publish(`${queue}.headers`, '', Buffer.from('{}'), { ...o, headers: { kind: 'order' } }),
    };
    const expected: Record<string, string> = {
      none: 'baseline',
      'sb-a': 'sb-a',
      'sb-b': 'sb-b',
      checkout: 'sb-b', // the route group's member that overrides orders
      'prod-only': 'baseline',
      'no-such-sandbox': 'baseline',
    };
    const list: { id: string; key?: string; send: (o: object) => void }[] = [];
    for (const [via, send] of Object.entries(how))
      for (const key of Object.keys(expected))
        list.push({ id: `${via}/${key}`, key: key === 'none' ? undefined : key, send });
    await publishAll(list);
    await until(() => seen.size === list.length, `${list.length} messages processed`);
    // A duplicate would have to come before a marker published after everything else, to each
    // consumer: the queue and each sandbox queue deliver in order.
    await barrier({
      paths: [undefined, 'sb-a', 'sb-b'],
      send: (marker, key) => publishAll([{ id: marker, key, send: how.queue! }]),
      arrived: (marker) => seen.has(marker),
      what: 'one per consumer',
    });

    const wantExchange: Record<string, [string, string]> = {
      queue: ['', queue],
      direct: [`${queue}.direct`, 'order.created'],
      topic: [`${queue}.topic`, 'order.paid.eu'],
      fanout: [`${queue}.fanout`, ''],
      headers: [`${queue}.headers`, ''],
    };
    for (const m of list) {
      const [via, key] = m.id.split('/') as [string, string];
      const got = seen.get(m.id)!;
      expect(
        got.map((s) => s.by),
        m.id,
      ).toEqual([expected[key]]);
      // The handler runs in the message's context and sees the fields of the original delivery.
      expect(got[0]!.key, m.id).toBe(m.key);
      expect([got[0]!.exchange, got[0]!.routingKey], m.id).toEqual(wantExchange[via]);
    }
    // 15 moves and the two sandbox markers. A move is counted when the broker confirms the copy,
    // which can come after the sandbox consumer already has it: wait for the count, then check it.
    await until(
      () => baseline.stats.moved >= 15 + 2,
      () => `17 moves counted, got ${baseline.stats.moved}`,
    );
    expect(baseline.stats.moved).toBe(15 + 2);
  });

  it('a requeued message comes back to the consumer that owns it', async () => {
    const queue = `orders-${++queueSeq}`;
    const routes = new StaticRouteSource({ sandboxes, groups });
    const seen = new Map<string, Seen[]>();
    const attempts = new Map<string, number>();
    const nackFirst = (m: ConsumeMessage, ch: Channel) => {
      const id = String(m.properties.messageId);
      const n = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, n);
      if (n === 1) {
        ch.nack(m, false, true);
        return false;
      }
      return true;
    };
    const baseline = start(queue, null, routes, seen, nackFirst);
    await baseline.ready();
    await start(queue, 'sb-a', routes, seen, nackFirst).ready();
    await publishAll([
      { id: 'base', send: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o) },
      { id: 'sand', key: 'sb-a', send: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o) },
    ]);
    await until(() => seen.size === 2, 'both messages processed after one requeue each');
    expect(seen.get('base')).toMatchObject([{ by: 'baseline', redelivered: true }]);
    expect(seen.get('sand')).toMatchObject([{ by: 'sb-a', redelivered: true, key: 'sb-a' }]);
    expect(attempts.get('base')).toBe(2);
    expect(attempts.get('sand')).toBe(2);
  });

  it('with autoAck, a handler that resolves acks and one that throws is requeued to the same owner', async () => {
    const queue = `orders-${++queueSeq}`;
    const routes = new StaticRouteSource({ sandboxes, groups });
    const calls: { id: string; by: string; redelivered: boolean }[] = [];
    const make = (sandbox: string | null) => {
      const c = createSelectiveConsumer({
        connection: vhost.url,
        queue,
        service: SERVICE,
        sandbox,
        routes,
        runtime,
        autoAck: true,
        requeueOnError: true,
        setup: sandbox === null ? topology(queue) : undefined,
        async onMessage(m) {
          calls.push({
            id: String(m.properties.messageId),
            by: sandbox ?? 'baseline',
            redelivered: m.fields.redelivered,
          });
          if (!m.fields.redelivered) throw new Error('first attempt fails');
        },
      });
      consumers.push(c);
      return c;
    };
    await make(null).ready();
    await make('sb-b').ready();
    await publishAll([
      { id: 'auto-base', send: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o) },
      { id: 'auto-group', key: 'checkout', send: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o) },
    ]);
    await until(() => calls.length === 4, 'two attempts per message');
    await until(
      async () => (await pub.checkQueue(queue)).messageCount === 0,
      'the baseline queue acked empty',
    );
    expect(calls.filter((c) => c.id === 'auto-base').map((c) => [c.by, c.redelivered])).toEqual([
      ['baseline', false],
      ['baseline', true],
    ]);
    expect(calls.filter((c) => c.id === 'auto-group').map((c) => [c.by, c.redelivered])).toEqual([
      ['sb-b', false],
      ['sb-b', true],
    ]);
    expect((await pub.checkQueue(sandboxQueueName(queue, 'sb-b'))).messageCount).toBe(0);
  });

  it('holds a keyed message until the route view covers its time, then routes it', async () => {
    const queue = `orders-${++queueSeq}`;
    const routes = new StaticRouteSource({ sandboxes, groups, completeUntil: Date.now() - 60_000 });
    const seen = new Map<string, Seen[]>();
    const baseline = start(queue, null, routes, seen);
    await baseline.ready();
    await start(queue, 'sb-a', routes, seen).ready();
    await publishAll([
      { id: 'late', key: 'sb-a', send: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o) },
      { id: 'plain', send: (o) => pub.sendToQueue(queue, Buffer.from('{}'), o) },
    ]);
    await until(
      () => seen.has('plain') && baseline.stats.held === 1,
      'the keyless message processed, the keyed one held',
    );
    expect(seen.has('late')).toBe(false);
    routes.update({ sandboxes, groups, completeUntil: Date.now() + 60_000 });
    await until(() => seen.has('late'), 'the held message processed');
    expect(seen.get('late')!.map((s) => s.by)).toEqual(['sb-a']);
  });

  it('when a sandbox is deleted, messages waiting in its queue go back to baseline and its queue is removed', async () => {
    const queue = `orders-${++queueSeq}`;
    const routes = new StaticRouteSource({ sandboxes, groups });
    const seen = new Map<string, Seen[]>();
    const baseline = start(queue, null, routes, seen);
    await baseline.ready();
    // sb-a's workload is not consuming: its messages wait in its queue.
    const list = Array.from({ length: 30 }, (_, i) => ({
      id: `w${i}`,
      key: 'sb-a',
      send: (o: object) => pub.publish(`${queue}.topic`, 'order.waiting', Buffer.from('{}'), o),
    }));
    await publishAll(list);
    await until(() => baseline.stats.moved === 30, '30 messages moved to sb-a');
    const sq = sandboxQueueName(queue, 'sb-a');
    expect((await pub.checkQueue(sq)).messageCount).toBe(30);
    expect(seen.size).toBe(0);

    routes.update({
      sandboxes: [{ ...sandboxes![0]!, deletedAt: Date.now() }, ...sandboxes!.slice(1)],
      groups,
    });
    await until(() => seen.size === 30, 'the 30 waiting messages processed by baseline');
    for (const s of seen.values())
      expect(s).toMatchObject([{ by: 'baseline', key: 'sb-a', routingKey: 'order.waiting' }]);
    await baseline.cleanupsSettled();
    expect(baseline.stats.returned).toBe(30);
    expect(await queueExists(conn, sq)).toBe(false);
  });

  it('the amqp-queue resource hook creates a sandbox queue, and on deletion returns its messages and removes it; removeSandboxQueues is idempotent', async () => {
    const queue = `orders-${++queueSeq}`;
    const sq = sandboxQueueName(queue, 'gone');
    const ch = await conn.createChannel();
    await ch.assertQueue(queue, { durable: true });
    const hook = amqpQueueResourceHook({ connection: vhost.url });
    expect(() => hook.validate({ queues: [] })).toThrow(/spec.queues must list the baseline queue names/);
    const ctx = {
      sandbox: { name: 'gone', key: 'gone', labels: {} },
      resource: { name: 'orders-queue', type: 'amqp-queue', spec: { queues: [queue] } },
      report: () => undefined,
      signal: new AbortController().signal,
    };
    expect(await hook.provision(ctx)).toEqual({ queues: [sq] });
    // Moves reach it through the sandbox exchange before any sandbox workload consumes.
    for (let i = 0; i < 25; i++)
      ch.publish(SANDBOX_EXCHANGE, sq, Buffer.from(String(i)), { messageId: `g${i}` });
    await until(
      async () => (await ch.checkQueue(sq)).messageCount === 25,
      '25 messages in the sandbox queue',
    );

    await hook.deprovision(ctx);
    expect((await ch.checkQueue(queue)).messageCount).toBe(25);
    expect(await queueExists(conn, sq)).toBe(false);
    // The registry's onSandboxDeleted listener form does the same, and is as idempotent.
    await sandboxQueuesCleanup({ connection: vhost.url, queues: [queue] })({ name: 'gone' });
    const [again] = await removeSandboxQueues(conn, { queue, sandbox: 'gone' });
    expect(again).toMatchObject({ sandboxQueue: sq, returned: 0, deleted: false });
    await ch.close();
  });
});
