import {
  createSelectiveConsumer,
  instrumentChannel,
  type SelectiveConsumer,
  TIME_HEADER,
} from '@branchline/amqplib';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { RouteTable, StaticRouteSource } from '@branchline/core/transport';
import { barrier, seededRandom, sleep, until } from '@branchline/test-utils';
import { createTestVhost, type TestVhost } from '@branchline/test-utils/amqp';
import { endpoint, LaggingView, RegistrySim } from '@branchline/test-utils/registry-sim';
import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib';
import { afterAll, beforeAll, expect, it } from 'vitest';

/**
 * The guarantee under churn: ≥20,000 messages, ≥50 sandbox create/delete events, two baseline
 * replicas whose route views lag the registry by different amounts, sandbox workloads that start
 * late or stop early, and a forced drop of every connection midway. Every message must be
 * processed by exactly one of {baseline, owning sandbox}; only redeliveries after the drop may
 * repeat one, and those are counted separately.
 */

const SERVICE = 'orders';
const TOTAL = 20_000;
const PUBLISH_MS = 30_000;
const BATCH = 100;

let vhost: TestVhost;
const runtime = createRuntime({ service: SERVICE, routes: { sandboxes: [] } });

beforeAll(async () => {
  vhost = await createTestVhost('bl-amqp-churn');
});
afterAll(async () => {
  await vhost?.destroy();
});

interface Processing {
  by: string;
  redelivered: boolean;
  afterDrop: boolean;
  at: number | undefined;
}

it('churn: every message is processed by exactly one of baseline or its owning sandbox, through sandbox churn and a connection drop', {
  timeout: 170_000,
}, async () => {
  const queue = `orders-churn-${Date.now().toString(36)}`;
  // Every random choice (lags, start delays, lifetimes, keys) comes from one seeded generator: a
  // failure prints the seed, and BRANCHLINE_TEST_SEED=<seed> repeats the same choices.
  const random = seededRandom();
  const started = Date.now();
  const registry = new RegistrySim();
  registry.create('prod', { billing: endpoint }); // producer-only
  registry.group('grp', { team: 'blue' });
  // Each view follows the registry's changes and its 100 ms heartbeat, each delivery after its
  // own random lag of up to `maxLagMs`, in order.
  const views: LaggingView<StaticRouteSource>[] = [];
  const view = (maxLagMs: number) => {
    const v = new LaggingView(new StaticRouteSource(), registry, {
      events: true,
      everyMs: 100,
      maxLagMs,
      random,
    });
    views.push(v);
    return v.source;
  };
  const processed = new Map<string, Processing[]>();
  let dropped = false;
  let busy = false;
  let markDropDone!: () => void;
  const dropDone = new Promise<void>((r) => {
    markDropDone = r;
  });

  const record = (by: string) => (m: amqp.ConsumeMessage, ch: amqp.Channel) => {
    const id = String(m.properties.messageId);
    let list = processed.get(id);
    if (!list) {
      list = [];
      processed.set(id, list);
    }
    const at = m.properties.headers?.[TIME_HEADER];
    list.push({
      by,
      redelivered: m.fields.redelivered,
      afterDrop: dropped,
      at: typeof at === 'number' ? at : undefined,
    });
    if (!busy) {
      ch.ack(m);
      return;
    }
    // Around the drop, handlers are slow: their messages are unacked when the connections die.
    return dropDone.then(() => {
      try {
        ch.ack(m);
      } catch {
        // the channel died with the connection; the broker redelivers the message
      }
    });
  };

  const baselines = [60, 400].map((lag, i) =>
    createSelectiveConsumer({
      connection: vhost.url,
      queue,
      service: SERVICE,
      sandbox: null,
      routes: view(lag),
      runtime,
      prefetch: 50,
      reconnect: { initialMs: 50, maxMs: 1000 },
      setup: async (ch) => {
        await ch.assertQueue(queue, { durable: true });
        await ch.assertExchange(`${queue}.topic`, 'topic', { durable: false });
        await ch.bindQueue(queue, `${queue}.topic`, 'order.#');
      },
      onMessage: record(`baseline-${i}`),
    }),
  );
  await Promise.all(baselines.map((b) => b.ready()));
  const sandboxView = view(250);

  // Sandbox workloads: created with their sandbox (sometimes late), stopped by their own view
  // seeing the deletion, or (sometimes) torn down a little before the registry deletes them.
  const workloads = new Map<string, { consumer?: SelectiveConsumer; starting?: Promise<void> }>();
  const allSandboxConsumers: SelectiveConsumer[] = [];
  let events = 0;
  let seq = 0;
  const churn = async (stopAt: number) => {
    const pending: Promise<void>[] = [];
    while (Date.now() < stopAt) {
      const name = `c${++seq}`;
      registry.create(name, { [SERVICE]: endpoint }, seq % 3 === 0 ? { team: 'blue' } : {});
      events++;
      const w: { consumer?: SelectiveConsumer; starting?: Promise<void> } = {};
      workloads.set(name, w);
      w.starting = (async () => {
        await sleep(random() * 300);
        const c = createSelectiveConsumer({
          connection: vhost.url,
          queue,
          service: SERVICE,
          sandbox: name,
          routes: sandboxView,
          runtime,
          prefetch: 50,
          reconnect: { initialMs: 50, maxMs: 1000 },
          onMessage: record(name),
        });
        w.consumer = c;
        allSandboxConsumers.push(c);
        await c.ready().catch(() => undefined);
      })();
      const lifetime = random.between(1200, 3200);
      pending.push(
        (async () => {
          await sleep(lifetime);
          await w.starting; // a workload never starts after its sandbox is gone (see docs: limits)
          if (seq % 4 === 0) {
            await w.consumer?.close();
            await sleep(random() * 200);
          }
          registry.delete(name);
          events++;
        })(),
      );
      await sleep(random.between(450, 650));
      if (registry.live(SERVICE).length > 5) await Promise.race(pending);
    }
    await Promise.all(pending);
  };

  // Publisher: keys drawn from live sandboxes, recently deleted ones, the route group, a
  // producer-only sandbox, unknown keys and no key; topic-exchange and direct-to-queue publishing.
  let pubConn: ChannelModel = await amqp.connect(vhost.url);
  let pub: ConfirmChannel = instrumentChannel(await pubConn.createConfirmChannel());
  const keyFor = (i: number): string | undefined => {
    const r = random();
    if (r < 0.3) return undefined;
    if (r < 0.75) {
      const live = registry.live(SERVICE);
      return live.length ? live[i % live.length] : undefined;
    }
    if (r < 0.85) {
      const dead = registry.deleted();
      return dead.length ? dead[dead.length - 1 - (i % Math.min(3, dead.length))] : 'nobody';
    }
    if (r < 0.93) return 'grp';
    if (r < 0.97) return 'prod';
    return 'nobody';
  };

  const churnDone = churn(started + PUBLISH_MS + 1000);
  let dropAt = 0;
  try {
    const t0 = Date.now();
    for (let i = 0; i < TOTAL; i += BATCH) {
      if (i === TOTAL / 2 - 3 * BATCH) busy = true;
      if (i === TOTAL / 2) {
        await pub.waitForConfirms();
        dropAt = Date.now();
        dropped = true;
        await vhost.closeAllConnections();
        markDropDone();
        await pubConn.close().catch(() => undefined);
        await until(async () => {
          try {
            pubConn = await amqp.connect(vhost.url);
            return true;
          } catch {
            return false;
          }
        }, 'the publisher to reconnect');
        pub = instrumentChannel(await pubConn.createConfirmChannel());
        busy = false;
      }
      for (let j = i; j < i + BATCH; j++) {
        const key = keyFor(j);
        keys.set(`m${j}`, key);
        const send = () =>
          j % 2 === 0
            ? pub.sendToQueue(queue, Buffer.from('x'), { messageId: `m${j}`, persistent: true })
            : pub.publish(`${queue}.topic`, 'order.created', Buffer.from('x'), {
                messageId: `m${j}`,
                persistent: true,
              });
        if (key) withRoutingKey(key, send);
        else send();
      }
      await pub.waitForConfirms();
      const due = t0 + ((i + BATCH) / TOTAL) * PUBLISH_MS - Date.now();
      if (due > 0) await sleep(due);
    }
    await churnDone;
    for (const name of registry.live(SERVICE)) {
      registry.delete(name);
      events++;
    }
    await Promise.all(views.map((v) => v.settled()));

    try {
      await until(() => processed.size === TOTAL, `all ${TOTAL} messages processed`, { timeoutMs: 60_000 });
    } catch (err) {
      const missing = Array.from({ length: TOTAL }, (_, j) => `m${j}`).filter((id) => !processed.has(id));
      console.log(
        '[amqp churn] never processed:',
        missing.slice(0, 30).map((id) => `${id}(${keys.get(id) ?? '-'})`),
      );
      console.log('[amqp churn] queues:', JSON.stringify(await vhost.listQueues()));
      console.log('[amqp churn] baselines:', JSON.stringify(baselines.map((b) => b.stats)));
      throw err;
    }
    await Promise.all(allSandboxConsumers.map((c) => c.close()));
    await Promise.all(baselines.map((b) => b.cleanupsSettled()));
    // Every sandbox consumer is closed and its queue returned: a late duplicate could only come
    // through the main queue, ahead of a marker published to it now (the queue is FIFO).
    await barrier({
      paths: [queue],
      send: async (marker) => {
        pub.sendToQueue(queue, Buffer.from('x'), { messageId: marker, persistent: true });
        await pub.waitForConfirms();
      },
      arrived: (marker) => processed.has(marker),
      what: 'the baseline queue',
    });
  } finally {
    for (const v of views) v.stop();
    await Promise.all(allSandboxConsumers.map((c) => c.close()));
    await Promise.all(baselines.map((b) => b.close()));
    await pubConn.close().catch(() => undefined);
  }

  // ---- the verdict ----
  const final = RouteTable.from(registry.snapshot());
  const ownerAt = (id: string, at: number | undefined) =>
    at === undefined ? undefined : final.owner(SERVICE, keys.get(id), at);
  let byBaseline = 0;
  let bySandbox = 0;
  let repeats = 0;
  let repeatsBeforeDrop = 0;
  let redelivered = 0;
  let sandboxOwnedToBaseline = 0;
  const violations: string[] = [];
  for (let j = 0; j < TOTAL; j++) {
    const id = `m${j}`;
    const list = processed.get(id);
    if (!list) {
      violations.push(`${id}: processed by nobody`);
      continue;
    }
    const fresh = list.filter((p) => !p.redelivered);
    if (fresh.length > 1)
      violations.push(
        `${id}: processed ${fresh.length} times without a redelivery: ${list.map((p) => p.by)}`,
      );
    repeats += list.length - 1;
    repeatsBeforeDrop += list.filter((p, k) => k > 0 && !p.afterDrop).length;
    redelivered += list.filter((p) => p.redelivered).length;
    for (const p of list) {
      // A sandbox only ever processes what it owned at the message's publish time.
      if (!p.by.startsWith('baseline') && ownerAt(id, p.at) !== p.by)
        violations.push(`${id}: processed by ${p.by} but owned by ${ownerAt(id, p.at) ?? 'baseline'}`);
    }
    if (list[0]!.by.startsWith('baseline')) {
      byBaseline++;
      if (ownerAt(id, list[0]!.at) !== undefined) sandboxOwnedToBaseline++;
    } else bySandbox++;
  }

  const sum = (f: (c: SelectiveConsumer) => number) => baselines.reduce((n, b) => n + f(b), 0);
  const leftovers = (await vhost.listQueues()).filter((q) => q.name.startsWith(`${queue}.sandbox.`));
  const counts = {
    published: TOTAL,
    sandboxEvents: events,
    sandboxes: seq,
    processedByBaseline: byBaseline,
    processedBySandboxes: bySandbox,
    sandboxOwnedProcessedByBaseline: sandboxOwnedToBaseline,
    movedBySandboxBaseline: sum((b) => b.stats.moved),
    returnedFromDeletedSandboxQueues: sum((b) => b.stats.returned),
    unroutableMoves: sum((b) => b.stats.unroutableMoves),
    ownerGoneAtDecision: sum((b) => b.stats.ownerGone),
    held: sum((b) => b.stats.held),
    holdTimeouts: sum((b) => b.stats.holdTimeouts),
    processingsFlaggedRedelivered: redelivered,
    redeliveryRepeats: repeats,
    repeatsBeforeDrop,
    baselineReconnects: sum((b) => b.stats.connects) - baselines.length,
    dropAtMs: dropAt - started,
    durationMs: Date.now() - started,
    sandboxQueuesLeft: leftovers.length,
  };
  console.log('[amqp churn]', JSON.stringify(counts, null, 2));
  expect(violations.slice(0, 20)).toEqual([]);
  expect(events).toBeGreaterThanOrEqual(50);
  expect(counts.baselineReconnects).toBeGreaterThanOrEqual(2);
  expect(repeatsBeforeDrop).toBe(0);
  expect(redelivered).toBeGreaterThan(0); // the drop did hit unacked messages, and they came back
  expect(bySandbox).toBeGreaterThan(1000);
  expect(leftovers).toEqual([]);
});

const keys = new Map<string, string | undefined>();
