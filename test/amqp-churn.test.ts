import {
  createSelectiveConsumer,
  instrumentChannel,
  type SelectiveConsumer,
  TIME_HEADER,
} from '@branchline/amqplib';
import {
  createRuntime,
  RouteTable,
  type RouteTableSpec,
  type SandboxSpec,
  StaticRouteSource,
  withRoutingKey,
} from '@branchline/core';
import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestVhost, eventually, type TestVhost } from '../packages/amqplib/test/broker.js';

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
const ep = { http: 'http://127.0.0.1:1' };

let vhost: TestVhost;
const runtime = createRuntime({ service: SERVICE, routeSource: { sandboxes: [] } });

beforeAll(async () => {
  vhost = await createTestVhost('bl-amqp-churn');
});
afterAll(async () => {
  await vhost?.destroy();
});

/** A registry stand-in: sandboxes with history and tombstones, and views that lag it. */
class FakeRegistry {
  readonly sandboxes: SandboxSpec[] = [
    { name: 'prod', key: 'prod', overrides: { billing: ep }, createdAt: 0 }, // producer-only
  ];
  readonly groups: RouteTableSpec['groups'];
  private readonly views: { source: StaticRouteSource; maxLagMs: number; lastAt: number }[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(start: number) {
    this.groups = [{ name: 'grp', key: 'grp', match: { labels: { team: 'blue' } }, createdAt: start }];
  }

  view(maxLagMs: number): StaticRouteSource {
    const source = new StaticRouteSource(this.snapshot());
    this.views.push({ source, maxLagMs, lastAt: 0 });
    return source;
  }

  snapshot(): RouteTableSpec {
    // Every change up to now is in it, so the view is complete until now.
    return {
      completeUntil: Date.now(),
      sandboxes: this.sandboxes.map((s) => ({ ...s, history: structuredClone(s.history) })),
      groups: this.groups,
    };
  }

  /** Sends the current state to every view, each after its own random lag, in order. */
  publish(): void {
    const spec = this.snapshot();
    const now = Date.now();
    for (const v of this.views) {
      const at = Math.max(v.lastAt, now + Math.random() * v.maxLagMs);
      v.lastAt = at;
      const t = setTimeout(() => {
        this.timers.delete(t);
        v.source.update(spec);
      }, at - now);
      this.timers.add(t);
    }
  }

  live(): SandboxSpec[] {
    return this.sandboxes.filter((s) => s.deletedAt == null && s.overrides?.[SERVICE]);
  }

  create(name: string, blue: boolean): void {
    const now = Date.now();
    this.sandboxes.push({
      name,
      key: name,
      overrides: { [SERVICE]: ep },
      labels: blue ? { team: 'blue' } : {},
      createdAt: now,
      history: { [SERVICE]: [{ from: now }] },
    });
    this.publish();
  }

  delete(name: string): void {
    const s = this.sandboxes.find((x) => x.name === name && x.deletedAt == null)!;
    const now = Date.now();
    s.deletedAt = now;
    for (const iv of s.history![SERVICE]!) iv.to ??= now;
    this.publish();
  }

  async settle(): Promise<void> {
    const last = Math.max(...this.views.map((v) => v.lastAt));
    await new Promise((r) => setTimeout(r, Math.max(0, last - Date.now()) + 50));
  }
}

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
  const started = Date.now();
  const registry = new FakeRegistry(started);
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
      routes: registry.view(lag),
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
  const sandboxView = registry.view(250);

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
      registry.create(name, seq % 3 === 0);
      events++;
      const w: { consumer?: SelectiveConsumer; starting?: Promise<void> } = {};
      workloads.set(name, w);
      w.starting = (async () => {
        await new Promise((r) => setTimeout(r, Math.random() * 300));
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
      const lifetime = 1200 + Math.random() * 2000;
      pending.push(
        (async () => {
          await new Promise((r) => setTimeout(r, lifetime));
          await w.starting; // a workload never starts after its sandbox is gone (see docs: limits)
          if (seq % 4 === 0) {
            await w.consumer?.close();
            await new Promise((r) => setTimeout(r, Math.random() * 200));
          }
          registry.delete(name);
          events++;
        })(),
      );
      await new Promise((r) => setTimeout(r, 450 + Math.random() * 200));
      if (registry.live().length > 5) await Promise.race(pending);
    }
    await Promise.all(pending);
  };

  // Publisher: keys drawn from live sandboxes, recently deleted ones, the route group, a
  // producer-only sandbox, unknown keys and no key; topic-exchange and direct-to-queue publishing.
  let pubConn: ChannelModel = await amqp.connect(vhost.url);
  let pub: ConfirmChannel = instrumentChannel(await pubConn.createConfirmChannel());
  const keyFor = (i: number): string | undefined => {
    const r = Math.random();
    if (r < 0.3) return undefined;
    if (r < 0.75) {
      const live = registry.live();
      return live.length ? live[i % live.length]!.key : undefined;
    }
    if (r < 0.85) {
      const dead = registry.sandboxes.filter((s) => s.deletedAt != null);
      return dead.length ? dead[dead.length - 1 - (i % Math.min(3, dead.length))]!.key : 'nobody';
    }
    if (r < 0.93) return 'grp';
    if (r < 0.97) return 'prod';
    return 'nobody';
  };

  const churnDone = churn(started + PUBLISH_MS + 1000);
  const heartbeat = setInterval(() => registry.publish(), 100);
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
        await eventually(async () => {
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
      if (due > 0) await new Promise((r) => setTimeout(r, due));
    }
    await churnDone;
    for (const s of registry.live()) {
      registry.delete(s.name);
      events++;
    }
    await registry.settle();

    try {
      await eventually(() => processed.size === TOTAL, `all ${TOTAL} messages processed`, 60_000);
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
    await new Promise((r) => setTimeout(r, 300)); // late duplicates would land now
  } finally {
    clearInterval(heartbeat);
    await Promise.all(allSandboxConsumers.map((c) => c.close()));
    await Promise.all(baselines.map((b) => b.close()));
    await pubConn.close().catch(() => undefined);
  }

  // ---- the verdict ----
  const final = RouteTable.from({ sandboxes: registry.sandboxes, groups: registry.groups });
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
