// Throughput of a plain amqplib consumer vs Branchline's selective consumer, same broker, same
// run: each scenario drains a backlog of N messages already in its queue, acking each one.
//   plain            amqplib channel.consume, ack per message, on the same keyed messages as
//                    selective-all (so both decode the same headers)
//   selective-all    createSelectiveConsumer (baseline); every message carries a routing key that
//                    no sandbox owns, so each one is parsed and decided, then processed here
//   selective-tenth  as selective-half with one message in ten for the sandbox (closer to a
//                    real staging mix, where most traffic carries no sandbox's key)
//   selective-half-split  as selective-half with the sandbox consumer in its own process, as a
//                    sandbox runs in production; rate = N / time until both processes finished
//   selective-half   the same baseline consumer plus a sandbox consumer; half of the messages
//                    belong to the sandbox: the baseline moves them (confirmed republish, then
//                    ack) and the sandbox consumer processes them. Rate = N / time until all N
//                    were processed by one of the two. Also reported: the rate at which the
//                    baseline consumer cleared the baseline queue (processed or moved, acked),
//                    which is what the baseline service's capacity depends on.
// Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and rabbitmqctl (for a private vhost).
// Env: BENCH_AMQP_MESSAGES (default 10000) messages per sample; BENCH_AMQP_ROUNDS (7) rounds.
import { execFileSync, fork } from 'node:child_process';
import { createSelectiveConsumer, instrumentChannel } from '@branchline/amqplib';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import amqp from 'amqplib';
import { fmt, knob, printTable, saveResults } from '../lib.mjs';

const N = knob('BENCH_AMQP_MESSAGES', 10_000, 200);
const ROUNDS = knob('BENCH_AMQP_ROUNDS', 7, 1);
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
const runtime = createRuntime({ service: SERVICE, routes: routes });
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

/**
 * Counts processed messages; measures from the first delivery to the last, so connection and
 * set-up time is left out for every scenario alike, and the client's CPU time over that span.
 */
function counter() {
  let n = 0;
  let t0;
  let cpu0;
  let done;
  const finished = new Promise((r) => {
    done = r;
  });
  return {
    tick() {
      if (n === 0) {
        t0 = process.hrtime.bigint();
        cpu0 = process.cpuUsage();
      }
      if (++n === N) {
        const cpu = process.cpuUsage(cpu0);
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        done({ rate: (N - 1) / seconds, cpuUsPerMsg: (cpu.user + cpu.system) / N });
      }
    },
    finished,
  };
}

// Each scenario: `fill` puts its backlog in place, `drain` measures consuming it.
const scenarios = {
  plain: {
    // The very messages selective-all consumes (keyed, baggage and time headers): same work.
    fill: (q) => fill(q, () => 'nobody'),
    async drain(queue) {
      const c = await amqp.connect(url);
      const ch = await c.createChannel();
      await ch.prefetch(PREFETCH);
      const count = counter();
      await ch.consume(queue, (m) => {
        if (!m) return; // cancelled when the queue is deleted below
        ch.ack(m);
        count.tick();
      });
      const result = await count.finished;
      await ch.deleteQueue(queue);
      await c.close();
      return result;
    },
  },
  'selective-all': selective(0),
  'selective-tenth': selective(10),
  'selective-half': selective(2),
  'selective-half-split': selective(2, true),
};

/** `every`: one message in `every` belongs to the sandbox; 0 = none (keyed, but owned by baseline). */
function selective(every, split = false) {
  const moving = every > 0;
  return {
    fill: (q) => fill(q, (i) => (moving ? (i % every === 0 ? 'sb' : undefined) : 'nobody')),
    async drain(queue) {
      const count = counter();
      const onMessage = (m, ch) => {
        ch.ack(m);
        count.tick();
      };
      const common = {
        connection: url,
        queue,
        service: SERVICE,
        routes,
        runtime,
        prefetch: PREFETCH,
        onMessage,
      };
      if (split) return drainSplit(queue, every, common);
      // The sandbox consumer is up before the baseline starts moving, as it is in a real sandbox.
      const sandbox = moving ? createSelectiveConsumer({ ...common, sandbox: 'sb' }) : undefined;
      if (sandbox) await sandbox.ready();
      const baseline = createSelectiveConsumer({ ...common, sandbox: null });
      // The baseline's own progress (kept + moved), sampled every millisecond from its stats.
      const cleared = new Promise((resolve) => {
        let t0;
        const poll = setInterval(() => {
          const n = baseline.stats.processed + baseline.stats.moved;
          if (n > 0 && t0 === undefined) t0 = process.hrtime.bigint();
          if (n >= N) {
            clearInterval(poll);
            resolve((N - 1) / (Number(process.hrtime.bigint() - t0) / 1e9));
          }
        }, 1);
      });
      const result = { ...(await count.finished), baselineRate: await cleared };
      await baseline.close();
      await sandbox?.close();
      const ch = await conn.createChannel();
      await ch.deleteQueue(queue);
      if (moving) await ch.deleteQueue(`${queue}.sandbox.sb`);
      await ch.close();
      return result;
    },
  };
}

/** selective-half with the sandbox consumer in a child process; clocks compared in epoch ms. */
async function drainSplit(queue, every, common) {
  const owned = Math.ceil(N / every);
  const worker = fork(new URL('./sandbox-worker.mjs', import.meta.url), [url, queue, String(owned)]);
  const fromWorker = (key) => new Promise((resolve) => worker.on('message', (m) => m[key] && resolve(m)));
  const sandboxDone = fromWorker('done');
  await fromWorker('ready');
  const now = () => performance.timeOrigin + performance.now();
  let first;
  let baselineDoneAt;
  let n = 0;
  const cpu0 = process.cpuUsage();
  const baselineDone = new Promise((resolve) => {
    const baseline = createSelectiveConsumer({
      ...common,
      sandbox: null,
      onMessage: (m, ch) => {
        ch.ack(m);
        first ??= now();
        if (++n === N - owned) {
          baselineDoneAt = now();
          resolve(baseline);
        }
      },
    });
  });
  const baseline = await baselineDone;
  // The first move may come before the first kept message; moves count from the consumer's start.
  const { at: sandboxDoneAt } = await sandboxDone;
  const cpu = process.cpuUsage(cpu0);
  await baseline.close();
  worker.send('close');
  await new Promise((r) => worker.on('exit', r));
  const ch = await conn.createChannel();
  await ch.deleteQueue(queue);
  await ch.deleteQueue(`${queue}.sandbox.sb`);
  await ch.close();
  const seconds = (Math.max(baselineDoneAt, sandboxDoneAt) - first) / 1000;
  return {
    rate: (N - 1) / seconds,
    baselineRate: (N - 1) / ((baselineDoneAt - first) / 1000),
    cpuUsPerMsg: (cpu.user + cpu.system) / N,
  };
}

// Rounds: fill every scenario's queue, then drain them back to back in a rotating order, so the
// samples of one round are taken close together and load drift shows up in every scenario alike.
// Ratios are computed per round, against that round's plain sample, then the median is taken.
const names = Object.keys(scenarios);
const samples = Object.fromEntries(names.map((n) => [n, []]));
try {
  for (let r = 0; r < ROUNDS; r++) {
    const queues = {};
    for (const n of names) {
      queues[n] = `${n}-${++seq}`;
      await scenarios[n].fill(queues[n]);
    }
    const order = names.map((_, i) => names[(i + r) % names.length]);
    for (const n of order) samples[n].push(await scenarios[n].drain(queues[n]));
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
const rate = (k) => median(samples[k].map((x) => x.rate));
const ratio = (k) => median(samples[k].map((x, i) => x.rate / samples.plain[i].rate));
const cpu = (k) => median(samples[k].map((x) => x.cpuUsPerMsg));
const clearedRatio = (k) =>
  samples[k][0].baselineRate === undefined
    ? undefined
    : median(samples[k].map((x, i) => x.baselineRate / samples.plain[i].rate));
const rows = Object.keys(samples).map((scenario) => ({
  scenario,
  'msgs/s (median)': fmt(rate(scenario), 0),
  samples: samples[scenario].map((x) => fmt(x.rate, 0)).join(' '),
  'vs plain (median of per-round ratios)': `${fmt(ratio(scenario) * 100, 1)}%`,
  'client CPU µs/msg': fmt(cpu(scenario), 1),
  'baseline queue cleared vs plain':
    clearedRatio(scenario) === undefined ? '-' : `${fmt(clearedRatio(scenario) * 100, 1)}%`,
}));
printTable(
  `amqp consumer throughput, ${N} messages per sample, prefetch ${PREFETCH}, ${ROUNDS} rounds`,
  rows,
);
console.log(
  '\ntarget: selective >= 90% of plain. Wall-clock rates depend on machine load (shared CPUs); the client CPU per message does not.',
);
saveResults('amqp', {
  messages: N,
  prefetch: PREFETCH,
  rounds: ROUNDS,
  results: Object.fromEntries(
    Object.keys(samples).map((k) => [
      k,
      {
        medianRate: rate(k),
        ratio: ratio(k),
        baselineClearedRatio: clearedRatio(k),
        cpuUsPerMsg: cpu(k),
        samples: samples[k],
      },
    ]),
  ),
});
