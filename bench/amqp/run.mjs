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
import {
  drainRounds,
  fmt,
  knob,
  median,
  printTable,
  saveResults,
  throughputCounter,
  throughputSummary,
} from '../lib.mjs';

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

// Each scenario: `fill` puts its backlog in place, `drain` measures consuming it.
const scenarios = {
  plain: {
    // The very messages selective-all consumes (keyed, baggage and time headers): same work.
    fill: (q) => fill(q, () => 'nobody'),
    async drain(queue) {
      const c = await amqp.connect(url);
      const ch = await c.createChannel();
      await ch.prefetch(PREFETCH);
      const count = throughputCounter(N);
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
      const count = throughputCounter(N);
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
    cpuUsPerItem: (cpu.user + cpu.system) / N,
  };
}

let result;
try {
  result = await drainRounds(scenarios, {
    rounds: ROUNDS,
    reference: 'plain',
    queueName: (n, seq) => `${n}-${seq}`,
  });
} finally {
  await conn.close().catch(() => undefined);
  try {
    ctl('delete_vhost', vhost);
  } catch {
    // best effort
  }
}

const { figures, rows } = throughputSummary(result, 'plain', 'msg');
// How fast the baseline consumer cleared its own queue, against that round's plain rate.
for (const [i, row] of rows.entries()) {
  const name = row.scenario;
  const cleared = result.rounds.map((r) => r[name].baselineRate / r.plain.rate);
  figures[name].baselineClearedRatio = Number.isNaN(cleared[0]) ? undefined : median(cleared);
  rows[i] = {
    ...row,
    'baseline queue cleared vs plain':
      figures[name].baselineClearedRatio === undefined
        ? '-'
        : `${fmt(figures[name].baselineClearedRatio * 100, 1)}%`,
  };
}
printTable(
  `amqp consumer throughput, ${N} messages per sample, prefetch ${PREFETCH}, ${ROUNDS} rounds`,
  rows,
);
console.log(
  `\nselective-all / plain = ${fmt(figures['selective-all'].ratio, 3)} (target >= 0.90). Wall-clock rates depend on machine load (shared CPUs); the client CPU per message does not.`,
);
saveResults('amqp', { messages: N, prefetch: PREFETCH, rounds: ROUNDS, results: figures });
