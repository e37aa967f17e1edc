import { withRoutingKey } from '@branchline/core';
import { RouteTable, StaticRouteSource } from '@branchline/core/transport';
import { until } from '@branchline/test-utils';
import { endpoint, LaggingView, RegistrySim } from '@branchline/test-utils/registry-sim';
import {
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createSelectiveConsumer,
  instrumentJetStream,
  messageTimeMs,
  type SelectiveConsumer,
} from '../src/index.js';
import { createStream, natsConnect, sleep, unique } from './helpers.js';

/** mulberry32: a small seeded generator, so a failing run can be replayed with its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const MESSAGES = Number(process.env.NATS_CHURN_MESSAGES ?? 20_000);
const SANDBOXES = 30; // 30 creations + 30 deletions = 60 events
const seed = Number(process.env.NATS_CHURN_SEED ?? Math.floor(Math.random() * 2 ** 31));

interface Processing {
  by: string; // 'baseline' or the sandbox
  at: number;
  key: string | undefined;
  redelivered: boolean;
  seq: number;
  deliveries: number;
  time: number;
}

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const f of cleanup.reverse()) await f().catch(() => {});
});

describe('selective JetStream consumption under churn (real server)', () => {
  it(`${MESSAGES} messages, ${SANDBOXES * 2} sandbox creations/deletions, forced reconnects: none lost, none processed twice`, async () => {
    const random = rng(seed);
    const started = Date.now();
    const connections: NatsConnection[] = [];
    const conn = async (name: string) => {
      const nc = await natsConnect(name);
      connections.push(nc);
      cleanup.push(() => nc.close());
      return nc;
    };
    const producer = instrumentJetStream(jetstream(await conn('churn-producer')));
    const baseNc = await conn('churn-baseline');
    const sandboxNc = await conn('churn-sandboxes');
    let reconnected = 0;
    for (const nc of [baseNc, sandboxNc])
      (async () => {
        for await (const st of nc.status()) if (st.type === 'reconnect') reconnected++;
      })();
    const jsm: JetStreamManager = await jetstreamManager(connections[0]!);
    const stream = unique('CHURN');
    await createStream(jsm, stream, [`${stream}.>`]);
    cleanup.push(() => jsm.streams.delete(stream));

    const registry = new RegistrySim();
    const processed = new Map<number, Processing[]>();
    const record = (by: string) => async (m: JsMsg) => {
      const id = Number(m.string());
      // Sandbox handlers are slow now and then, so a deleted sandbox's consumer still has work.
      if (by !== 'baseline' && id % 25 === 0) await sleep(40);
      const list = processed.get(id) ?? [];
      list.push({
        by,
        at: messageTimeMs(m),
        key: undefined,
        redelivered: m.redelivered,
        seq: m.seq,
        deliveries: m.info.deliveryCount,
        time: Date.now(),
      });
      processed.set(id, list);
    };
    const common = {
      stream,
      durable: 'orders',
      service: 'orders',
      startMarginMs: 500,
      drainGraceMs: 200,
      holdTimeoutMs: 5_000,
      consumerConfig: { ack_wait: 3_000_000_000 },
    };
    const view = (every = 100) => {
      const source = new StaticRouteSource();
      const v = new LaggingView(source, registry, every);
      cleanup.push(async () => v.stop());
      return source;
    };

    const baseline = createSelectiveConsumer(jetstream(baseNc), { ...common, sandbox: null, routes: view() });
    await baseline.consume(record('baseline'));
    cleanup.push(() => baseline.stop());

    const consumers = new Map<string, SelectiveConsumer>();
    const drains: Promise<unknown>[] = [];
    const live: string[] = [];
    const starting = new Set<Promise<void>>();
    let created = 0;
    let deleted = 0;
    const sandboxJs: JetStreamClient = jetstream(sandboxNc);

    function create(): void {
      const name = `churn-${created++}`;
      registry.create(name, { orders: endpoint });
      const c = createSelectiveConsumer(sandboxJs, {
        ...common,
        sandbox: name,
        routes: view(50 + Math.floor(random() * 100)),
      });
      consumers.set(name, c);
      cleanup.push(() => c.stop());
      // Some sandbox consumers start late: the baseline has skipped their first messages.
      const delay = Math.floor(random() * 300);
      const p = sleep(delay)
        .then(() => c.consume(record(name)))
        .then(() => {
          live.push(name);
          starting.delete(p);
        });
      starting.add(p);
    }
    function remove(): void {
      const i = Math.floor(random() * live.length);
      const [name] = live.splice(i, 1);
      registry.delete(name!);
      deleted++;
      drains.push(consumers.get(name!)!.drained);
    }

    // Produce in chunks, with sandbox events and two forced reconnects in between.
    const CHUNK = 100;
    const chunks = MESSAGES / CHUNK;
    const eventEvery = Math.max(1, Math.floor(chunks / (SANDBOXES * 2 + 4)));
    const keyOf = (): string | undefined => {
      const r = random();
      if (r < 0.3 || created === 0) return undefined;
      if (r < 0.8 && live.length) return live[Math.floor(random() * live.length)];
      return `churn-${Math.floor(random() * (created + 3))}`; // dead, alive but not started, or unknown
    };
    const keys = new Map<number, string | undefined>();
    let reconnects = 0;
    for (let c = 0; c < chunks; c++) {
      if (c % eventEvery === 0) {
        if (created < SANDBOXES && (live.length < 3 || random() < 0.5)) create();
        else if (live.length) remove();
      }
      if (c === Math.floor(chunks * 0.4)) {
        await baseNc.reconnect();
        reconnects++;
      }
      if (c === Math.floor(chunks * 0.7)) {
        await sandboxNc.reconnect();
        reconnects++;
      }
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < CHUNK; i++) {
        const id = c * CHUNK + i;
        const key = keyOf();
        keys.set(id, key);
        const send = () => producer.publish(`${stream}.o`, String(id));
        sends.push(key === undefined ? send() : withRoutingKey(key, send));
      }
      await Promise.all(sends);
      await sleep(20);
    }
    await Promise.all([...starting]);
    while (created < SANDBOXES) {
      create();
      await Promise.all([...starting]);
    }
    while (live.length) remove();
    const produceMs = Date.now() - started;

    const twiceExamples: string[] = [];
    const summary = () => {
      twiceExamples.length = 0;
      let lost = 0;
      let twice = 0;
      let redeliveries = 0;
      for (let id = 0; id < MESSAGES; id++) {
        const list = processed.get(id);
        if (!list) lost++;
        else
          for (const p of list.slice(1)) {
            if (p.redelivered) redeliveries++;
            else {
              twice++;
              if (twiceExamples.length < 3) twiceExamples.push(`#${id}: ${JSON.stringify(list)}`);
            }
          }
      }
      return { lost, twice, redeliveries };
    };
    const ctx = () =>
      `seed ${seed} (replay with NATS_CHURN_SEED=${seed}); ${JSON.stringify(summary())}; created ${created}, deleted ${deleted}`;
    let drainsDone = false;
    void Promise.all(drains).then(() => {
      drainsDone = true;
    });
    await until(
      () => drainsDone,
      () => `every deleted sandbox's consumer to drain: ${ctx()}`,
      { timeoutMs: 60_000 },
    );
    await until(
      () => summary().lost === 0,
      () => `every message processed: ${ctx()}`,
      { timeoutMs: 30_000 },
    );
    await sleep(500);

    // Who should have processed each message: the final history at the message's server time.
    const table = RouteTable.from(registry.snapshot());
    let wrongOwner = 0;
    const examples: string[] = [];
    for (let id = 0; id < MESSAGES; id++) {
      const first = processed.get(id)![0]!;
      const key = keys.get(id);
      const owner = key === undefined ? undefined : table.owner('orders', key, first.at);
      for (const p of processed.get(id)!)
        if (p.by !== (owner ?? 'baseline')) {
          wrongOwner++;
          if (examples.length < 5) examples.push(`#${id} key ${key} at ${p.at}: by ${p.by}, owner ${owner}`);
        }
    }
    const { lost, twice, redeliveries } = summary();
    const bySandboxes = [...consumers.values()].reduce((n, c) => n + c.stats.processed, 0);
    const duplicates = [baseline, ...consumers.values()].reduce((n, c) => n + c.stats.duplicates, 0);
    console.log(
      `nats churn: seed ${seed}, ${MESSAGES} messages, ${created} created / ${deleted} deleted, ${reconnects} forced reconnects (${reconnected} seen); ` +
        `baseline processed ${baseline.stats.processed}, sandboxes ${bySandboxes}; lost ${lost}, twice ${twice}, ` +
        `redeliveries ${redeliveries}, deliveries of processed messages acknowledged ${duplicates}, wrong owner ${wrongOwner}; produced in ${produceMs} ms, total ${Date.now() - started} ms`,
    );
    expect(created + deleted, ctx()).toBeGreaterThanOrEqual(50);
    expect(reconnected, ctx()).toBe(2);
    expect(lost, ctx()).toBe(0);
    expect(twice, `${ctx()}; ${twiceExamples.join('; ')}`).toBe(0);
    expect(wrongOwner, `${ctx()}; ${examples.join('; ')}`).toBe(0);
    expect(bySandboxes, ctx()).toBeGreaterThan(0);
    for (const [name, c] of consumers) expect(c.isDraining(), name).toBe(true);
  }, 120_000);
});
