import { getRoutingKey, setLogger, withRoutingKey } from '@branchline/core';
import { logger, StaticRouteSource } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { endpoint, LaggingView, RegistrySim } from '@branchline/test-utils/registry-sim';
import {
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import type { Msg, NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSelectiveConsumer,
  instrumentConnection,
  instrumentJetStream,
  type SelectiveConsumer,
  sandboxDurableName,
  sandboxOfDurableName,
  selectiveSubscribe,
} from '../src/index.js';
import { createStream, natsConnect, sleep, unique } from './helpers.js';

let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const streams: string[] = [];
const running: SelectiveConsumer[] = [];
const views: LaggingView[] = [];

beforeAll(async () => {
  nc = instrumentConnection(await natsConnect('selective-test'));
  js = instrumentJetStream(jetstream(nc));
  jsm = await jetstreamManager(nc);
});

afterAll(async () => {
  for (const c of running) await c.stop();
  for (const v of views) v.stop();
  for (const s of streams) await jsm.streams.delete(s).catch(() => {});
  await nc?.close();
});

async function stream(): Promise<string> {
  const name = unique('SEL');
  await createStream(jsm, name, [`${name}.>`]);
  streams.push(name);
  return name;
}

function view(registry: RegistrySim): { source: StaticRouteSource; view: LaggingView } {
  const source = new StaticRouteSource();
  const v = new LaggingView(source, registry, 50);
  views.push(v);
  return { source, view: v };
}

/** Received messages: payload → the routing key active inside the handler. */
type Seen = Map<string, string | undefined>;

async function start(
  name: string,
  source: StaticRouteSource,
  sandbox: string | undefined,
  seen: Seen,
  extra: Partial<Parameters<typeof createSelectiveConsumer>[1]> = {},
): Promise<SelectiveConsumer> {
  const c = createSelectiveConsumer(js, {
    stream: name,
    durable: 'orders',
    service: 'orders',
    sandbox: sandbox ?? null,
    routes: source,
    startMarginMs: 1000,
    drainGraceMs: 200,
    ...extra,
  });
  await c.consume((m: JsMsg) => {
    seen.set(m.string(), getRoutingKey());
  });
  running.push(c);
  return c;
}

const publish = (name: string, id: string, key?: string) =>
  key === undefined ? js.publish(`${name}.x`, id) : withRoutingKey(key, () => js.publish(`${name}.x`, id));

describe('selective JetStream consumption (real server)', () => {
  it('each message is processed by exactly one consumer: the baseline or the owning sandbox', async () => {
    const name = await stream();
    const registry = new RegistrySim();
    registry.create('pr-1', { orders: endpoint });
    registry.create('pr-2', { payments: endpoint });
    const base: Seen = new Map();
    const one: Seen = new Map();
    const b = await start(name, view(registry).source, undefined, base);
    const s = await start(name, view(registry).source, 'pr-1', one);
    expect(s.durable).toBe(sandboxDurableName('orders', 'pr-1'));
    expect(sandboxOfDurableName(s.durable)).toBe('pr-1');
    for (let i = 0; i < 30; i++) await publish(name, `m${i}`, [undefined, 'pr-1', 'pr-2'][i % 3]);
    await until(
      () => base.size + one.size >= 30,
      () => `30 messages (baseline ${base.size}, pr-1 ${one.size})`,
    );
    await sleep(300);
    expect(base.size + one.size).toBe(30);
    for (let i = 0; i < 30; i++) {
      const key = [undefined, 'pr-1', 'pr-2'][i % 3];
      const where = key === 'pr-1' ? one : base;
      expect(where.has(`m${i}`), `m${i} (${key}) at ${key === 'pr-1' ? 'pr-1' : 'baseline'}`).toBe(true);
      expect(where.get(`m${i}`)).toBe(key);
    }
    expect(b.stats).toMatchObject({ processed: 20, skipped: 10 });
    expect(s.stats).toMatchObject({ processed: 10, skipped: 20 });
  });

  it('a new sandbox consumer starts at its activation time; a deleted one drains, then leaves', async () => {
    const name = await stream();
    const registry = new RegistrySim();
    await publish(name, 'before', 'pr-4'); // before the sandbox: the baseline's
    await sleep(1500); // beyond the start margin
    registry.create('pr-4', { orders: endpoint });
    const base: Seen = new Map();
    const mine: Seen = new Map();
    await start(name, view(registry).source, undefined, base);
    for (let i = 0; i < 10; i++) await publish(name, `early${i}`, 'pr-4');
    await until(
      () => base.has('before'),
      () => 'the baseline to process the message from before the sandbox',
    );
    // The sandbox consumer starts late: the baseline skipped its messages, it finds them.
    const sandboxView = view(registry);
    const s = await start(name, sandboxView.source, 'pr-4', mine);
    await until(
      () => mine.size === 10,
      () => `10 early messages at pr-4 (have ${mine.size})`,
    );
    // Messages published while the deletion is on its way, and after it.
    sandboxView.view.pause();
    for (let i = 0; i < 5; i++) await publish(name, `late${i}`, 'pr-4');
    await sleep(5); // a message stamped in the deletion's millisecond is already the baseline's
    registry.delete('pr-4');
    await sleep(20);
    for (let i = 0; i < 5; i++) await publish(name, `after${i}`, 'pr-4');
    sandboxView.view.resume();
    const result = await s.drained;
    expect(result).toMatchObject({ sandbox: 'pr-4', durableDeleted: true });
    await expect(jsm.consumers.info(name, s.durable)).rejects.toThrow();
    await until(
      () => base.size === 6,
      () => `the baseline to process what came after the deletion (have ${[...base.keys()]})`,
    );
    expect([...mine.keys()].sort()).toEqual(
      [
        ...Array.from({ length: 10 }, (_, i) => `early${i}`),
        ...Array.from({ length: 5 }, (_, i) => `late${i}`),
      ].sort(),
    );
    expect([...base.keys()].sort()).toEqual(['after0', 'after1', 'after2', 'after3', 'after4', 'before']);
  });

  it('a sandbox consumer restarted after its sandbox was deleted processes what it still owned, then leaves', async () => {
    const name = await stream();
    const registry = new RegistrySim();
    registry.create('pr-5', { orders: endpoint });
    const base: Seen = new Map();
    const mine: Seen = new Map();
    await start(name, view(registry).source, undefined, base);
    const first = await start(name, view(registry).source, 'pr-5', mine);
    await publish(name, 'a', 'pr-5');
    await until(
      () => mine.has('a'),
      () => 'the first message at pr-5',
    );
    await first.stop(); // the sandbox's consumer goes down
    for (let i = 0; i < 5; i++) await publish(name, `left${i}`, 'pr-5');
    await sleep(100);
    registry.delete('pr-5');
    await publish(name, 'after', 'pr-5');
    await until(
      () => base.has('after'),
      () => 'the baseline to take the message published after the deletion',
    );
    expect(mine.size).toBe(1);
    const again = await start(name, view(registry).source, 'pr-5', mine);
    const result = await again.drained;
    expect(result.durableDeleted).toBe(true);
    expect([...mine.keys()].sort()).toEqual(['a', 'left0', 'left1', 'left2', 'left3', 'left4']);
    expect([...base.keys()]).toEqual(['after']);
  });

  it('a consumer whose view is behind holds keyed messages (processing unkeyed ones) until it catches up', async () => {
    const name = await stream();
    const registry = new RegistrySim();
    const source = new StaticRouteSource(); // never synced
    const base: Seen = new Map();
    const c = await start(name, source, undefined, base);
    await publish(name, 'keyed', 'pr-6');
    await publish(name, 'plain');
    await until(
      () => base.has('plain'),
      () => 'the unkeyed message',
    );
    await sleep(300);
    expect(base.has('keyed')).toBe(false);
    expect(c.stats.held).toBe(1);
    source.update(registry.snapshot());
    await until(
      () => base.has('keyed'),
      () => 'the held message after the table arrived',
    );
    expect(base.get('keyed')).toBe('pr-6');
  });

  it('a hold that times out naks the message; JetStream redelivers it and nothing is guessed', async () => {
    const name = await stream();
    const registry = new RegistrySim();
    registry.create('pr-8', { orders: endpoint });
    const v = view(registry);
    v.view.pause();
    const base: Seen = new Map();
    const deliveries: number[] = [];
    const c = createSelectiveConsumer(js, {
      stream: name,
      durable: 'orders',
      service: 'orders',
      routes: v.source,
      holdTimeoutMs: 200,
      backoff: { initialMs: 50, maxMs: 100 },
    });
    running.push(c);
    await c.consume((m) => {
      deliveries.push(m.info.deliveryCount);
      base.set(m.string(), getRoutingKey());
    });
    await publish(name, 'later', 'pr-9'); // nobody's sandbox, but the view cannot say so yet
    await until(
      () => c.stats.holdTimeouts >= 2,
      () => `two hold timeouts (have ${c.stats.holdTimeouts})`,
    );
    expect(base.size).toBe(0);
    v.view.resume();
    await until(
      () => base.has('later'),
      () => 'the redelivered message',
    );
    expect(deliveries[0]).toBeGreaterThan(1);
  });

  it('a processed message JetStream delivers again (its acknowledgement lost) is acknowledged, not processed twice', async () => {
    const name = await stream();
    const registry = new RegistrySim();
    const calls: { id: string; deliveries: number }[] = [];
    const c = createSelectiveConsumer(js, {
      stream: name,
      durable: 'orders',
      service: 'orders',
      sandbox: null,
      routes: view(registry).source,
      consumerConfig: { ack_wait: 1_000_000_000 },
    });
    await c.consume((m: JsMsg) => {
      calls.push({ id: m.string(), deliveries: m.info.deliveryCount });
      // The first acknowledgement is lost (as with a connection dropped before it was sent).
      if (m.string() === 'a' && m.info.deliveryCount === 1) m.ack = () => {};
    });
    running.push(c);
    await publish(name, 'a');
    await publish(name, 'b');
    await until(
      () => c.stats.duplicates === 1,
      () => `the redelivery of "a" (stats ${JSON.stringify(c.stats)})`,
      { timeoutMs: 15_000 },
    );
    await until(
      async () => (await jsm.consumers.info(name, 'orders')).num_ack_pending === 0,
      () => 'every delivery acknowledged',
      { timeoutMs: 10_000 },
    );
    expect(calls).toEqual([
      { id: 'a', deliveries: 1 },
      { id: 'b', deliveries: 1 },
    ]);
    expect(c.stats).toMatchObject({ processed: 2, duplicates: 1 });
  });

  it('says so when its durable is deleted outside it, and does not start over', async () => {
    const name = await stream();
    const seen: Seen = new Map();
    const c = await start(name, new StaticRouteSource({}), undefined, seen);
    await publish(name, 'one');
    await until(
      () => seen.has('one'),
      () => 'the first message',
    );
    const errors: string[] = [];
    const previous = logger();
    setLogger({ ...previous, error: (msg) => errors.push(msg) });
    try {
      await jsm.consumers.delete(name, c.durable);
      await publish(name, 'two');
      await until(
        () => errors.some((e) => e.includes('durable was deleted outside')),
        () => `an error saying so (have ${JSON.stringify(errors)})`,
      );
    } finally {
      setLogger(previous);
    }
    await expect(jsm.consumers.info(name, c.durable)).rejects.toThrow();
    expect(seen.has('two')).toBe(false);
  });

  it('refuses a work-queue stream and bad names with a clear message', async () => {
    const name = unique('WQ');
    await jsm.streams.add({
      name,
      subjects: [`${name}.>`],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.Memory,
    });
    streams.push(name);
    const c = createSelectiveConsumer(js, { stream: name, durable: 'orders', service: 'orders', routes: {} });
    await expect(c.consume(() => {})).rejects.toThrow(/work-queue retention/);
    expect(() => createSelectiveConsumer(js, { stream: name, durable: 'a.b', service: 'orders' })).toThrow(
      /not a JetStream durable name/,
    );
    expect(() => sandboxDurableName('orders', 'Bad_Name')).toThrow(/not a sandbox name/);
    expect(() =>
      createSelectiveConsumer(js, { stream: name, durable: 'orders', service: 'orders', startMarginMs: -1 }),
    ).toThrow(/startMarginMs/);
  });
});

describe('selective core NATS subscriptions', () => {
  it('delivers each message to the subscriber that owns it now', async () => {
    const registry = new RegistrySim();
    registry.create('pr-1', { orders: endpoint });
    const subject = `core.${Date.now().toString(36)}`;
    const base: Map<string, string | undefined> = new Map();
    const one: Map<string, string | undefined> = new Map();
    const record = (into: Map<string, string | undefined>) => (m: Msg) => {
      into.set(m.string(), getRoutingKey());
    };
    const routes = registry.snapshot();
    const b = selectiveSubscribe(nc, subject, record(base), {
      service: 'orders',
      sandbox: null,
      routes,
      queue: 'q',
    });
    const s = selectiveSubscribe(nc, subject, record(one), {
      service: 'orders',
      sandbox: 'pr-1',
      routes,
      queue: 'q',
    });
    await nc.flush();
    nc.publish(subject, 'plain');
    withRoutingKey('pr-1', () => nc.publish(subject, 'mine'));
    withRoutingKey('pr-2', () => nc.publish(subject, 'other'));
    await until(
      () => base.size + one.size === 3,
      () => `3 messages (baseline ${[...base.keys()]}, pr-1 ${[...one.keys()]})`,
      { timeoutMs: 5000 },
    );
    expect([...base.keys()].sort()).toEqual(['other', 'plain']);
    expect([...one.entries()]).toEqual([['mine', 'pr-1']]);
    expect(b.stats).toMatchObject({ processed: 2, skipped: 1 });
    expect(s.stats).toMatchObject({ processed: 1, skipped: 2 });
    await b.drain();
    await s.drain();
  });
});
