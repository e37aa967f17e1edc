import { StaticRouteSource } from '@branchline/core/transport';
import { createSelectiveConsumer, type SelectiveConsumer } from '@branchline/kafkajs';
import { seededRandom, sleep, until } from '@branchline/test-utils';
import {
  consumerTuning,
  createTopic,
  groupLag,
  header,
  kafkaClient,
  unique,
} from '@branchline/test-utils/kafka';
import { endpoint, LaggingView, RegistrySim } from '@branchline/test-utils/registry-sim';
import type { Admin, Message, Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The guarantee under churn: while sandboxes are created and deleted under continuous traffic,
 * with every consumer's registry view lagging by a different amount, and with every consumer
 * stopped and started again twice, each message is processed exactly once, by exactly one of
 * {baseline, owning sandbox}.
 */

const TOTAL = 20_000;
const SANDBOXES = 60; // every sixth is producer-only (overrides another service): 50 consumers
const SPAWN_EVERY_MS = 1000;
const PER_TICK = 20;
const TICK_MS = 60;

const kafka = kafkaClient('churn');
let admin: Admin;
let producer: Producer;

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
  producer = kafka.producer();
  await producer.connect();
});

afterAll(async () => {
  await producer.disconnect();
  await admin.disconnect();
});

interface Holder {
  name: string;
  consumer: SelectiveConsumer;
  view: LaggingView;
  done: boolean;
  starts: number;
}

describe('kafka churn (real broker)', () => {
  it(`processes each of ${TOTAL} messages exactly once while ${SANDBOXES} sandboxes come and go and consumers restart twice`, async () => {
    // Every random choice (lags, lifetimes, keys) comes from one seeded generator: a failure
    // prints the seed, and BRANCHLINE_TEST_SEED=<seed> repeats the same choices.
    const random = seededRandom();
    const topic = unique('churn');
    await createTopic(admin, topic, 3);
    const groupId = unique('orders');
    const reg = new RegistrySim();
    const processedBy = new Map<string, string[]>();
    const stats = { processed: 0, skipped: 0, held: 0 };
    const record = (id: string, who: string) => {
      const list = processedBy.get(id);
      if (list) list.push(who);
      else processedBy.set(id, [who]);
    };
    const addStats = (c: SelectiveConsumer) => {
      stats.processed += c.stats.processed;
      stats.skipped += c.stats.skipped;
      stats.held += c.stats.held;
    };

    async function startConsumer(source: StaticRouteSource, sandbox?: string): Promise<SelectiveConsumer> {
      const c = createSelectiveConsumer(kafka, {
        groupId,
        service: 'orders',
        sandbox,
        routes: source,
        startMarginMs: 1000,
        drainGraceMs: 0,
        holdTimeoutMs: 60_000,
        ...consumerTuning,
      });
      await c.connect();
      // The topic is new to this test: the baseline group reads it from the start, so messages
      // produced before its first join are not skipped by kafkajs's "latest" default.
      await c.subscribe({ topics: [topic], fromBeginning: true });
      const who = sandbox ?? 'baseline';
      await c.run({
        eachMessage: async ({ message }) => {
          record(header(message, 'id')!, who);
        },
      });
      return c;
    }

    // The baseline: its view refreshes every 150 ms and now and then lags for up to 800 ms.
    const baseSource = new StaticRouteSource();
    const baseView = new LaggingView(baseSource, reg, 150);
    let baseline = await startConsumer(baseSource);
    let baselineStarts = 1;
    let stopLagging = false;
    const lagger = (async () => {
      while (!stopLagging) {
        await sleep(random.int(300, 1500));
        baseView.pause();
        await sleep(random.int(100, 800));
        baseView.resume();
      }
    })();

    // Traffic: keys of sandboxes around the current one (not yet created, live, deleted),
    // unknown keys and no key.
    let spawned = 0;
    let sent = 0;
    const producing = (async () => {
      while (sent < TOTAL) {
        const messages: Message[] = [];
        for (let i = 0; i < PER_TICK && sent < TOTAL; i++, sent++) {
          const r = random();
          const headers: Record<string, string> = { id: String(sent) };
          if (r >= 0.3 && r < 0.4) headers.baggage = 'branchline=nobody';
          else if (r >= 0.4) {
            const n = Math.min(SANDBOXES - 1, Math.max(0, spawned + random.int(-3, 2)));
            headers.baggage = `team=x,branchline=sb-${n}`;
          }
          messages.push({ key: String(sent), value: String(sent), headers });
        }
        await producer.send({ topic, messages });
        await sleep(TICK_MS);
      }
    })();

    // Sandboxes: one every second, each alive 1.5-3.5 s; its consumer hears of the deletion
    // 0-700 ms late, drains what it owns and leaves.
    const holders = new Set<Holder>();
    const lifecycles: Promise<void>[] = [];
    async function lifecycle(i: number): Promise<void> {
      const name = `sb-${i}`;
      const producerOnly = i % 6 === 5;
      reg.create(name, producerOnly ? { payments: endpoint } : { orders: endpoint });
      let h: Holder | undefined;
      if (!producerOnly) {
        const source = new StaticRouteSource();
        const view = new LaggingView(source, reg, random.int(80, 250));
        h = { name, consumer: await startConsumer(source, name), view, done: false, starts: 1 };
        holders.add(h);
      }
      await sleep(random.int(1500, 3500));
      h?.view.pause();
      reg.delete(name);
      if (!h) return;
      await sleep(random.int(0, 700));
      h.view.resume();
      while (!h.done) {
        const c = h.consumer;
        const r = await Promise.race([c.drained, sleep(250).then(() => undefined)]);
        if (r && c === h.consumer) {
          h.done = true;
          addStats(c);
        }
      }
      h.view.stop();
    }
    const spawning = (async () => {
      for (; spawned < SANDBOXES; spawned++) {
        lifecycles.push(lifecycle(spawned));
        await sleep(SPAWN_EVERY_MS);
      }
    })();

    // Twice midway: stop every consumer gracefully and start it again.
    async function restartAll(): Promise<void> {
      const old = baseline;
      await old.disconnect();
      addStats(old);
      baseline = await startConsumer(baseSource);
      baselineStarts++;
      await Promise.all(
        [...holders]
          .filter((h) => !h.done && !h.consumer.isDraining())
          .map(async (h) => {
            const c = h.consumer;
            await c.disconnect();
            if (h.done) return;
            addStats(c);
            h.consumer = await startConsumer(h.view.source as StaticRouteSource, h.name);
            h.starts++;
          }),
      );
    }
    await until(
      () => sent >= TOTAL / 3,
      () => `a third sent (${sent})`,
      { timeoutMs: 120_000 },
    );
    await restartAll();
    await until(
      () => sent >= (2 * TOTAL) / 3,
      () => `two thirds sent (${sent})`,
      { timeoutMs: 120_000 },
    );
    await restartAll();

    await producing;
    await spawning;
    await Promise.all(lifecycles);
    // Every sandbox consumer has drained; once the baseline group has committed the whole
    // topic, nothing is in flight any more and the counts are final.
    await until(
      async () => (await groupLag(admin, groupId, topic)) === 0,
      () => `the baseline to commit the whole topic (${processedBy.size} distinct ids processed)`,
      { timeoutMs: 120_000 },
    );
    stopLagging = true;
    await lagger;
    await baseline.disconnect();
    addStats(baseline);
    baseView.stop();

    const twice = [...processedBy].filter(([, who]) => who.length > 1);
    const missing: number[] = [];
    for (let i = 0; i < TOTAL; i++) if (!processedBy.has(String(i))) missing.push(i);
    const perConsumer: Record<string, number> = {};
    for (const [, who] of processedBy) for (const w of who) perConsumer[w] = (perConsumer[w] ?? 0) + 1;
    const sandboxProcessed = Object.entries(perConsumer)
      .filter(([k]) => k !== 'baseline')
      .reduce((n, [, v]) => n + v, 0);
    const restarts = [...holders].filter((h) => h.starts > 1).length;
    const report = {
      messages: TOTAL,
      distinctProcessed: processedBy.size,
      processedTwice: twice.length,
      missing: missing.length,
      byBaseline: perConsumer.baseline ?? 0,
      bySandboxes: sandboxProcessed,
      sandboxesCreatedAndDeleted: SANDBOXES,
      sandboxConsumers: holders.size,
      sandboxesThatProcessed: Object.keys(perConsumer).length - 1,
      sandboxConsumersRestarted: restarts,
      baselineStarts,
      skippedDecisions: stats.skipped,
      heldMessages: stats.held,
    };
    console.log(`kafka churn: ${JSON.stringify(report)}`);
    expect(twice.slice(0, 5)).toEqual([]);
    expect(missing.slice(0, 5)).toEqual([]);
    expect(processedBy.size).toBe(TOTAL);
    expect(holders.size).toBeGreaterThanOrEqual(50);
    expect(sandboxProcessed).toBeGreaterThan(0);
    expect(baselineStarts).toBe(3);
    // Every drained sandbox group was deleted by its consumer.
    const { groups } = await admin.listGroups();
    expect(groups.map((g) => g.groupId).filter((g) => g.startsWith(`${groupId}.sandbox.`))).toEqual([]);
  }, 300_000);
});
