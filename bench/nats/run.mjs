// Consumer throughput of a raw JetStream consumer vs Branchline's selective consumer on the same
// stream in the same run (every message for the baseline; half of them skipped), and publish
// overhead of instrumentJetStream. Target: the selective consumer at >= 95% of raw.
// Needs nats-server with JetStream on 127.0.0.1:4222.
// Env: BENCH_NATS_MESSAGES (default 50000) messages per stream; BENCH_NATS_ROUNDS (5) rounds;
// BENCH_NATS_PUBLISH_MESSAGES (10000) messages per publish sample.

import { spawn } from 'node:child_process';
import { connect as tcp } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withRoutingKey } from '@branchline/core';
import { instrumentJetStream } from '@branchline/nats';
import { jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect, headers as natsHeaders } from '@nats-io/transport-node';
import { fmt, interleavedRounds, knob, percentile, printTable, saveResults } from '../lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const N = knob('BENCH_NATS_MESSAGES', 50_000, 300);
const ROUNDS = knob('BENCH_NATS_ROUNDS', 5, 1);
const PUBLISH_MESSAGES = knob('BENCH_NATS_PUBLISH_MESSAGES', 10_000, 200);
const PUBLISH_WINDOW = 100;

const up = await new Promise((resolve) => {
  const s = tcp({ host: '127.0.0.1', port: 4222 });
  s.once('connect', () => resolve(s.destroy() || true));
  s.once('error', () => resolve(false));
});
if (!up) {
  console.error('bench/nats needs nats-server with JetStream on 127.0.0.1:4222 (nats-server -js)');
  process.exit(1);
}

const nc = await connect({ servers: '127.0.0.1:4222', name: 'bench-nats' });
const js = jetstream(nc);
const jsm = await jetstreamManager(nc);
const run = Date.now().toString(36).toUpperCase();
const streams = { all: `BENCH_ALL_${run}`, half: `BENCH_HALF_${run}`, publish: `BENCH_PUB_${run}` };
for (const name of Object.values(streams))
  await jsm.streams.add({
    name,
    subjects: [`${name}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.Memory,
  });

// The route table: sandbox pr-1 overrides "orders"; keys "nobody" and "other" have no rule.
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

// ---- fill the streams ------------------------------------------------------------------------
const value = 'x'.repeat(100);
async function fill(stream, keyOf) {
  for (let i = 0; i < N; i += 500) {
    const acks = [];
    for (let j = i; j < Math.min(N, i + 500); j++) {
      const h = natsHeaders();
      h.set('baggage', `branchline=${keyOf(j)}`);
      acks.push(js.publish(`${stream}.o`, value, { headers: h }));
    }
    await Promise.all(acks);
  }
}
// Every message carries a key, so the selective consumer decides every one of them.
await fill(streams.all, (i) => (i % 2 ? 'nobody' : 'other'));
// Half for pr-1; the last message is the baseline's.
await fill(streams.half, (i) => (i % 2 ? 'nobody' : 'pr-1'));

// ---- consumers -------------------------------------------------------------------------------
function consume(kind, stream) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'consume-worker.mjs'), kind, stream, String(N)], {
      env: { ...process.env, BENCH_NATS_ROUTES: JSON.stringify(routes) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`consume-worker ${kind} exited ${code}: ${out}`));
      resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

const consumerRows = [];
const consumerResults = {};
for (const [label, stream] of [
  ['all for baseline', streams.all],
  ['half skipped', streams.half],
]) {
  const raw = [];
  const selective = [];
  const ratios = [];
  let handled = 0;
  for (let r = 0; r < ROUNDS; r++) {
    // Both consumers read the same stream at the same time, each in its own process, so load
    // from other processes hits both alike; the ratio is taken per pair.
    const [rawRun, sel] = await Promise.all([consume('raw', stream), consume('selective', stream)]);
    handled = sel.handled;
    raw.push(rawRun.rate);
    selective.push(sel.rate);
    ratios.push(sel.rate / rawRun.rate);
  }
  raw.sort((a, b) => a - b);
  selective.sort((a, b) => a - b);
  ratios.sort((a, b) => a - b);
  const p = percentile(raw, 50);
  const s = percentile(selective, 50);
  const ratio = percentile(ratios, 50);
  consumerResults[label] = { rawMsgsPerSec: p, selectiveMsgsPerSec: s, ratio, pairRatios: ratios, handled };
  consumerRows.push({
    messages: label,
    'raw msg/s': fmt(p, 0),
    'selective msg/s': fmt(s, 0),
    'selective/raw (median of pairs)': fmt(ratio, 3),
    'handler calls': `${handled}/${N}`,
  });
}

// ---- publish ---------------------------------------------------------------------------------
async function publishRate(client, key) {
  const start = performance.now();
  const send = async () => {
    for (let i = 0; i < PUBLISH_MESSAGES; i += PUBLISH_WINDOW) {
      const acks = [];
      for (let j = 0; j < PUBLISH_WINDOW; j++) acks.push(client.publish(`${streams.publish}.o`, value));
      await Promise.all(acks);
    }
  };
  await (key ? withRoutingKey(key, send) : send());
  return PUBLISH_MESSAGES / ((performance.now() - start) / 1000);
}
const plainJs = jetstream(nc);
const instrumented = instrumentJetStream(jetstream(nc));
await publishRate(plainJs);
await publishRate(instrumented, 'pr-1');
const { samples: pub, ratios: pubRatios } = await interleavedRounds(
  {
    plain: () => publishRate(plainJs),
    noKey: () => publishRate(instrumented),
    withKey: () => publishRate(instrumented, 'pr-1'),
  },
  ROUNDS,
  'plain',
);
const publishRows = [
  { publisher: 'plain js.publish', 'msg/s': fmt(percentile(pub.plain, 50), 0), 'vs plain': '1.000' },
  {
    publisher: 'instrumented, no key in context',
    'msg/s': fmt(percentile(pub.noKey, 50), 0),
    'vs plain': fmt(percentile(pubRatios.noKey, 50), 3),
  },
  {
    publisher: 'instrumented, key in context',
    'msg/s': fmt(percentile(pub.withKey, 50), 0),
    'vs plain': fmt(percentile(pubRatios.withKey, 50), 3),
  },
];

for (const name of Object.values(streams)) await jsm.streams.delete(name).catch(() => {});
await nc.drain();

printTable(`JetStream consumer throughput (${N} messages, ${ROUNDS} rounds, median)`, consumerRows);
printTable(
  `JetStream publish (${PUBLISH_MESSAGES} messages, ${PUBLISH_WINDOW} in flight, median)`,
  publishRows,
);
const target = consumerResults['all for baseline'].ratio;
console.log(`\nselective/raw, all for baseline: ${fmt(target, 3)} (target >= 0.95)`);
saveResults('nats', {
  messages: N,
  rounds: ROUNDS,
  consumer: consumerResults,
  publish: {
    plainMsgsPerSec: percentile(pub.plain, 50),
    noKeyRatio: percentile(pubRatios.noKey, 50),
    withKeyRatio: percentile(pubRatios.withKey, 50),
  },
});
