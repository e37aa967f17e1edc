// Throughput of a plain amqplib consumer vs Branchline's selective consumer, same broker, same
// run: each scenario drains a backlog of N messages already in its queue, acking each one.
//   plain            amqplib channel.consume, ack per message
//   selective-all    createSelectiveConsumer (baseline); every message carries a routing key that
//                    no sandbox owns, so each one is parsed and decided, then processed here
//   selective-half   the same baseline consumer plus a sandbox consumer; half of the messages
//                    belong to the sandbox: the baseline moves them (confirmed republish, then
//                    ack) and the sandbox consumer processes them. Rate = N / time until all N
//                    were processed by one of the two.
// Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and rabbitmqctl (for a private vhost).
import { execFileSync } from 'node:child_process';
import { createSelectiveConsumer, instrumentChannel } from '@branchline/amqplib';
import { createRuntime, StaticRouteSource, withRoutingKey } from '@branchline/core';
import amqp from 'amqplib';
import { fmt, printTable, saveResults } from '../lib.mjs';

const N = Number(process.env.BENCH_AMQP_MESSAGES ?? 20_000);
const ROUNDS = Number(process.env.BENCH_AMQP_ROUNDS ?? 3);
const PREFETCH = 100;
const SERVICE = 'orders';

const vhost = `bl-bench-amqp-${Date.now().toString(36)}`;
const ctl = (...args) => execFileSync('rabbitmqctl', args, { stdio: 'pipe' });
ctl('add_vhost', vhost);
ctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
const url = `amqp://guest:guest@127.0.0.1:5672/${encodeURIComponent(vhost)}`;

const routes = new StaticRouteSource({
  sandboxes: [{ name: 'sb', key: 'sb', overrides: { [SERVICE]: { http: 'http://127.0.0.1:1' } } }],
});
const runtime = createRuntime({ service: SERVICE, routeSource: routes });
const payload = Buffer.from(JSON.stringify({ order: 42, items: ['a', 'b', 'c'], note: 'x'.repeat(200) }));

const conn = await amqp.connect(url);
const pub = instrumentChannel(await conn.createConfirmChannel());
let seq = 0;

/** Fills `queue` with N messages; `keyOf(i)` is the routing key of message i (or undefined). */
async function fill(queue, keyOf) {
  await pub.assertQueue(queue, { durable: true });
  for (let i = 0; i < N; i++) {
    const key = keyOf(i);
    const send = () => pub.sendToQueue(queue, payload, { messageId: String(i), deliveryMode: 1 });
    if (key) withRoutingKey(key, send);
    else send();
    if (i % 1000 === 999) await pub.waitForConfirms();
  }
  await pub.waitForConfirms();
}

function counter() {
  let n = 0;
  let done;
  const finished = new Promise((r) => {
    done = r;
  });
  return {
    tick() {
      if (++n === N) done(process.hrtime.bigint());
    },
    finished,
  };
}

async function plain() {
  const queue = `plain-${++seq}`;
  await fill(queue, () => undefined);
  const c = await amqp.connect(url);
  const ch = await c.createChannel();
  await ch.prefetch(PREFETCH);
  const count = counter();
  const t0 = process.hrtime.bigint();
  await ch.consume(queue, (m) => {
    ch.ack(m);
    count.tick();
  });
  const t1 = await count.finished;
  await ch.deleteQueue(queue);
  await c.close();
  return N / (Number(t1 - t0) / 1e9);
}

async function selective(half) {
  const queue = `sel-${++seq}`;
  await fill(queue, (i) => (half ? (i % 2 === 0 ? 'sb' : undefined) : 'nobody'));
  const count = counter();
  const onMessage = (m, ch) => {
    ch.ack(m);
    count.tick();
  };
  const common = { connection: url, queue, service: SERVICE, routes, runtime, prefetch: PREFETCH, onMessage };
  // The sandbox consumer is up before the baseline starts moving, as it is in a real sandbox.
  const sandbox = half ? createSelectiveConsumer({ ...common, sandbox: 'sb' }) : undefined;
  if (sandbox) await sandbox.ready();
  const t0 = process.hrtime.bigint();
  const baseline = createSelectiveConsumer({ ...common, sandbox: null });
  const t1 = await count.finished;
  await baseline.close();
  await sandbox?.close();
  const ch = await conn.createChannel();
  await ch.deleteQueue(queue);
  if (half) await ch.deleteQueue(`${queue}.sandbox.sb`);
  await ch.close();
  return N / (Number(t1 - t0) / 1e9);
}

const samples = { plain: [], 'selective-all': [], 'selective-half': [] };
try {
  for (let r = 0; r < ROUNDS; r++) {
    samples.plain.push(await plain());
    samples['selective-all'].push(await selective(false));
    samples['selective-half'].push(await selective(true));
  }
} finally {
  await conn.close().catch(() => undefined);
  try {
    ctl('delete_vhost', vhost);
  } catch {
    // best effort
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(samples.plain);
const rows = Object.entries(samples).map(([scenario, xs]) => ({
  scenario,
  'msgs/s (median)': fmt(median(xs), 0),
  samples: xs.map((x) => fmt(x, 0)).join(' '),
  'vs plain': `${fmt((median(xs) / base) * 100, 1)}%`,
}));
printTable(
  `amqp consumer throughput, ${N} messages per sample, prefetch ${PREFETCH}, ${ROUNDS} rounds`,
  rows,
);
console.log('\ntarget: selective >= 90% of plain. Figures depend on machine load (shared CPUs).');
saveResults('amqp', {
  messages: N,
  prefetch: PREFETCH,
  rounds: ROUNDS,
  results: Object.fromEntries(
    Object.entries(samples).map(([k, xs]) => [
      k,
      { median: median(xs), samples: xs, ratio: median(xs) / base },
    ]),
  ),
});
