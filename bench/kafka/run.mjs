// Consumer throughput of a plain kafkajs consumer vs Branchline's selective consumer on the same
// topics in the same run (every message for the baseline; half of them skipped), and producer
// overhead of instrumentProducer. Target (issue #5): the selective consumer at >= 95% of plain.
// Needs the broker: `bash scripts/kafka.sh start` (this script starts it when it is down).
// Env: BENCH_KAFKA_MESSAGES (default 50000) messages per topic; BENCH_KAFKA_ROUNDS (5) rounds;
// BENCH_KAFKA_PRODUCER_MESSAGES (20000) messages per producer sample.

import { execFileSync, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withRoutingKey } from '@branchline/core';
import { createSelectiveConsumer, instrumentProducer } from '@branchline/kafkajs';
import { Kafka, logLevel } from 'kafkajs';
import { fmt, interleavedRounds, knob, percentile, printTable, saveResults, smoke } from '../lib.mjs';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const N = knob('BENCH_KAFKA_MESSAGES', 50_000, 300);
const ROUNDS = knob('BENCH_KAFKA_ROUNDS', 5, 1);
const SEND_BATCH = 100;
const PRODUCER_MESSAGES = knob('BENCH_KAFKA_PRODUCER_MESSAGES', 20_000, 200);
// The wrapper-alone part: messages per round and rounds.
const WRAPPER_MESSAGES = smoke ? 1000 : 100_000;
const WRAPPER_ROUNDS = smoke ? 1 : 7;

const up = await new Promise((resolve) => {
  const s = connect({ host: '127.0.0.1', port: 9092 });
  s.once('connect', () => resolve(s.destroy() || true));
  s.once('error', () => resolve(false));
});
if (!up) execFileSync('bash', [join(root, 'scripts', 'kafka.sh'), 'start'], { stdio: 'inherit' });

const kafka = new Kafka({ clientId: 'bench', brokers: ['127.0.0.1:9092'], logLevel: logLevel.NOTHING });
const admin = kafka.admin();
await admin.connect();
const run = `${Date.now().toString(36)}`;
const topics = { all: `bench-all-${run}`, half: `bench-half-${run}`, producer: `bench-producer-${run}` };
await admin.createTopics({
  waitForLeaders: true,
  topics: Object.values(topics).map((topic) => ({
    topic,
    numPartitions: 3,
    configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }],
  })),
});

// The route table: sandbox pr-1 overrides "orders"; key "nobody" has no rule.
const routes = {
  sandboxes: [
    {
      name: 'pr-1',
      key: 'pr-1',
      overrides: { orders: { http: 'http://127.0.0.1:1' } },
      createdAt: 0,
      history: { orders: [{ from: 0 }] },
    },
  ],
};

// ---- fill the topics -------------------------------------------------------------------------
const filler = kafka.producer();
await filler.connect();
const value = 'x'.repeat(100);
async function fill(topic, keyOf) {
  for (let i = 0; i < N; i += 1000) {
    const messages = [];
    for (let j = i; j < Math.min(N, i + 1000); j++) {
      const key = keyOf(j);
      messages.push({ key: String(j), value, headers: key ? { baggage: `branchline=${key}` } : {} });
    }
    await filler.send({ topic, messages, acks: 1 });
  }
}
// Every message carries a key, so the selective consumer decides every one of them.
await fill(topics.all, (i) => (i % 2 ? 'nobody' : 'other'));
await fill(topics.half, (i) => (i % 2 ? 'pr-1' : 'nobody'));
await filler.disconnect();

// ---- consumers -------------------------------------------------------------------------------
/** Runs one consumer in its own process (consume-worker.mjs) and resolves with its result. */
function consume(kind, topic, mode) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'consume-worker.mjs'), kind, topic, mode, String(N)], {
      env: { ...process.env, BENCH_KAFKA_ROUTES: JSON.stringify(routes) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`consume-worker ${kind} ${mode} exited ${code}: ${out}`));
      resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

const consumerRows = [];
const consumerResults = {};
for (const mode of ['eachMessage', 'eachBatch']) {
  for (const [label, topic] of [
    ['all for baseline', topics.all],
    ['half skipped', topics.half],
  ]) {
    const plain = [];
    const selective = [];
    const ratios = [];
    let handled = 0;
    for (let r = 0; r < ROUNDS; r++) {
      // Both consumers read the same topic at the same time, each in its own process, so load
      // from other processes hits both alike; the ratio is taken per pair.
      const [plainRun, sel] = await Promise.all([
        consume('plain', topic, mode),
        consume('selective', topic, mode),
      ]);
      const p = plainRun.rate;
      handled = sel.handled;
      plain.push(p);
      selective.push(sel.rate);
      ratios.push(sel.rate / p);
    }
    plain.sort((a, b) => a - b);
    selective.sort((a, b) => a - b);
    ratios.sort((a, b) => a - b);
    const p = percentile(plain, 50);
    const s = percentile(selective, 50);
    const ratio = percentile(ratios, 50);
    consumerResults[`${mode} / ${label}`] = {
      plainMsgsPerSec: p,
      selectiveMsgsPerSec: s,
      ratio,
      pairRatios: ratios,
      handled,
    };
    consumerRows.push({
      handler: mode,
      messages: label,
      'plain msg/s': fmt(p, 0),
      'selective msg/s': fmt(s, 0),
      'selective/plain (median of pairs)': fmt(ratio, 3),
      'handler calls': `${handled}/${N}`,
    });
  }
}

// ---- producer --------------------------------------------------------------------------------
async function produceRate(producer, key) {
  const start = performance.now();
  const send = async () => {
    for (let i = 0; i < PRODUCER_MESSAGES; i += SEND_BATCH) {
      const messages = [];
      for (let j = 0; j < SEND_BATCH; j++) messages.push({ key: String(i + j), value, headers: { a: 'b' } });
      await producer.send({ topic: topics.producer, messages, acks: 1 });
    }
  };
  await (key ? withRoutingKey(key, send) : send());
  return PRODUCER_MESSAGES / ((performance.now() - start) / 1000);
}
const plainProducer = kafka.producer();
const instrumented = instrumentProducer(kafka.producer());
await plainProducer.connect();
await instrumented.connect();
await produceRate(plainProducer); // warm-up
await produceRate(instrumented, 'pr-1');
const { samples: prod, ratios: prodRatios } = await interleavedRounds(
  {
    plain: () => produceRate(plainProducer),
    noKey: () => produceRate(instrumented),
    withKey: () => produceRate(instrumented, 'pr-1'),
  },
  ROUNDS,
  'plain',
);
await plainProducer.disconnect();
await instrumented.disconnect();
const pp = percentile(prod.plain, 50);
const pn = percentile(prod.noKey, 50);
const pk = percentile(prod.withKey, 50);
const producerRows = [
  { producer: 'plain kafkajs', 'msg/s': fmt(pp, 0), 'vs plain': '1.000' },
  {
    producer: 'instrumented, no key in context',
    'msg/s': fmt(pn, 0),
    'vs plain': fmt(percentile(prodRatios.noKey, 50), 3),
  },
  {
    producer: 'instrumented, key in context',
    'msg/s': fmt(pk, 0),
    'vs plain': fmt(percentile(prodRatios.withKey, 50), 3),
  },
];

// ---- the wrapper alone -----------------------------------------------------------------------
// Broker throughput on a shared machine is noisy; this isolates what the selective consumer adds
// per message: its eachMessage/eachBatch wrappers driven directly (kafkajs's consumer object
// replaced by a stub that only captures the run config), against calling the handler itself.
async function wrapperOverhead(mode, keyed) {
  let captured;
  const stub = {
    on() {},
    events: {},
    connect: async () => {},
    subscribe: async () => {},
    run: async (c) => {
      captured = c;
    },
    disconnect: async () => {},
  };
  const c = createSelectiveConsumer(
    { consumer: () => stub, admin: () => ({}) },
    { groupId: 'g', service: 'orders', routes },
  );
  let handled = 0;
  const handler = async () => {
    handled++;
  };
  await c.run(
    mode === 'eachMessage'
      ? { eachMessage: handler }
      : {
          eachBatch: async ({ batch }) => {
            for (const _m of batch.messages) handled++;
          },
        },
  );
  const M = WRAPPER_MESSAGES;
  const ts = String(Date.now() - 1000);
  const msgs = Array.from({ length: M }, (_, i) => ({
    offset: String(i),
    timestamp: ts,
    value: Buffer.from(value),
    headers: keyed ? { baggage: Buffer.from(i % 2 ? 'branchline=nobody' : 'branchline=pr-1') } : {},
  }));
  const heartbeat = async () => {};
  const pause = () => () => {};
  const drive = async (wrapped) => {
    const t0 = performance.now();
    if (mode === 'eachMessage') {
      for (const message of msgs) await wrapped({ topic: 't', partition: 0, message, heartbeat, pause });
    } else {
      for (let i = 0; i < M; i += 500) {
        await wrapped({
          batch: { topic: 't', partition: 0, messages: msgs.slice(i, i + 500) },
          resolveOffset() {},
          heartbeat,
          pause,
          isRunning: () => true,
          isStale: () => false,
        });
      }
    }
    return ((performance.now() - t0) * 1e6) / M;
  };
  const plainFn =
    mode === 'eachMessage'
      ? handler
      : async ({ batch }) => {
          for (const _m of batch.messages) handled++;
        };
  const sel = [];
  const raw = [];
  for (let r = 0; r < WRAPPER_ROUNDS; r++) {
    sel.push(await drive(captured[mode]));
    raw.push(await drive(plainFn));
  }
  if (handled === 0) throw new Error(`the ${mode} wrapper never called the handler`);
  sel.sort((a, b) => a - b);
  raw.sort((a, b) => a - b);
  return { selectiveNs: percentile(sel, 50), plainNs: percentile(raw, 50) };
}
const overheadRows = [];
const overhead = {};
for (const mode of ['eachMessage', 'eachBatch']) {
  for (const keyed of [false, true]) {
    const r = await wrapperOverhead(mode, keyed);
    overhead[`${mode} / ${keyed ? 'keyed (half skipped)' : 'no key'}`] = {
      ...r,
      addedNs: r.selectiveNs - r.plainNs,
    };
    overheadRows.push({
      handler: mode,
      messages: keyed ? 'keyed, half skipped' : 'no key',
      'plain ns/msg': fmt(r.plainNs, 0),
      'selective ns/msg': fmt(r.selectiveNs, 0),
      'added ns/msg': fmt(r.selectiveNs - r.plainNs, 0),
    });
  }
}

await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
await admin.disconnect();

printTable(
  `consumer throughput, ${N} messages x 3 partitions, median of ${ROUNDS} (target selective/plain >= 0.95)`,
  consumerRows,
);
printTable(
  `producer throughput, ${PRODUCER_MESSAGES} messages in sends of ${SEND_BATCH}, median of ${ROUNDS}`,
  producerRows,
);
printTable(
  `what the selective wrapper adds per message (no broker; median of ${WRAPPER_ROUNDS} rounds of ${WRAPPER_MESSAGES})`,
  overheadRows,
);
const worst = Math.min(...Object.values(consumerResults).map((r) => r.ratio));
console.log(`\nworst consumer ratio ${fmt(worst, 3)} (${worst >= 0.95 ? 'meets' : 'BELOW'} the 0.95 target)`);
saveResults('kafka', {
  messages: N,
  rounds: ROUNDS,
  consumer: consumerResults,
  producer: {
    plainMsgsPerSec: pp,
    instrumentedNoKeyMsgsPerSec: pn,
    instrumentedWithKeyMsgsPerSec: pk,
    ratioNoKey: percentile(prodRatios.noKey, 50),
    ratioWithKey: percentile(prodRatios.withKey, 50),
  },
  wrapperOverhead: overhead,
  worstConsumerRatio: worst,
  note: 'measured on a shared 2-core machine while other jobs ran; broker on the same machine',
});
