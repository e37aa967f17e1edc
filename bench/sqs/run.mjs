// Throughput of a plain SQS receive loop vs Branchline's selective consumer, same ElasticMQ, same
// run: each scenario drains a backlog of N messages already in its queue, deleting each one.
//   raw              ReceiveMessage (10 per call, the same attributes asked for) and one
//                    DeleteMessageBatch per received batch, POLLERS loops in parallel
//   selective-all    createSqsSelectiveConsumer (baseline), POLLERS pollers; every message carries
//                    a routing key that no sandbox owns, so each one is parsed and decided, then
//                    processed here
//   selective-half   the same baseline consumer plus a sandbox consumer; half of the messages
//                    belong to the sandbox: the baseline moves them (SendMessageBatch to the
//                    sandbox queue, then DeleteMessageBatch) and the sandbox consumer processes
//                    them. Rate = N / time until all N were processed by one of the two.
// Needs ElasticMQ on 127.0.0.1:9324 (bash scripts/elasticmq.sh start).
// Env: BENCH_SQS_MESSAGES (default 5000) messages per sample; BENCH_SQS_ROUNDS (5) rounds.
import { Agent } from 'node:http';
import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { createSqsSelectiveConsumer, sandboxQueueName, withRouting } from '@branchline/sqs';
import {
  drainRounds,
  fmt,
  knob,
  printTable,
  saveResults,
  throughputCounter,
  throughputSummary,
} from '../lib.mjs';

const N = knob('BENCH_SQS_MESSAGES', 5000, 200);
const ROUNDS = knob('BENCH_SQS_ROUNDS', 5, 1);
const POLLERS = 4;
const SERVICE = 'orders';
const endpoint = 'http://127.0.0.1:9324';

const client = new SQSClient({
  endpoint,
  region: 'us-east-1',
  credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
  requestHandler: { httpAgent: new Agent({ keepAlive: true, maxSockets: 64 }) },
});
const pub = withRouting(
  new SQSClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    requestHandler: { httpAgent: new Agent({ keepAlive: true, maxSockets: 32 }) },
  }),
);
const routes = new StaticRouteSource({
  sandboxes: [
    { name: 'sb', key: 'sb', overrides: { [SERVICE]: { http: 'http://127.0.0.1:1' } }, createdAt: 0 },
  ],
});
const runtime = createRuntime({ service: SERVICE, routes: routes });
const body = JSON.stringify({ order: 42, items: ['a', 'b', 'c'], note: 'x'.repeat(200) });
const run = Date.now().toString(36);

/** Fills `queue` with N messages; `keyOf(i)` is the routing key of message i (or undefined). */
async function fill(queue, keyOf) {
  const url = (await client.send(new CreateQueueCommand({ QueueName: queue }))).QueueUrl;
  const sends = [];
  for (let i = 0; i < N; i += 10) {
    const byKey = new Map();
    for (let j = i; j < Math.min(N, i + 10); j++) {
      const key = keyOf(j);
      if (!byKey.has(key)) byKey.set(key, []);
      byKey.get(key).push({ Id: String(j), MessageBody: body });
    }
    for (const [key, Entries] of byKey) {
      const send = () => pub.send(new SendMessageBatchCommand({ QueueUrl: url, Entries }));
      sends.push(key ? withRoutingKey(key, send) : send());
    }
    if (sends.length >= 32) await Promise.all(sends.splice(0));
  }
  await Promise.all(sends);
  return url;
}

const scenarios = {
  raw: {
    fill: (q) => fill(q, () => 'nobody'),
    async drain(_queue, url) {
      const count = throughputCounter(N);
      let stop = false;
      const loop = async () => {
        while (!stop) {
          const out = await client.send(
            new ReceiveMessageCommand({
              QueueUrl: url,
              MaxNumberOfMessages: 10,
              WaitTimeSeconds: 1,
              VisibilityTimeout: 30,
              MessageAttributeNames: ['All'],
              MessageSystemAttributeNames: ['SentTimestamp', 'ApproximateReceiveCount'],
            }),
          );
          const msgs = out.Messages ?? [];
          if (msgs.length === 0) continue;
          for (const _ of msgs) count.tick();
          await client.send(
            new DeleteMessageBatchCommand({
              QueueUrl: url,
              Entries: msgs.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle })),
            }),
          );
        }
      };
      const loops = Array.from({ length: POLLERS }, loop);
      const result = await count.finished;
      stop = true;
      await Promise.all(loops);
      await client.send(new DeleteQueueCommand({ QueueUrl: url }));
      return result;
    },
  },
  'selective-all': selective(0),
  'selective-half': selective(2),
};

function selective(every) {
  const moving = every > 0;
  return {
    fill: (q) => fill(q, (i) => (moving ? (i % every === 0 ? 'sb' : undefined) : 'nobody')),
    async drain(queue, url) {
      const count = throughputCounter(N);
      const common = {
        client,
        queue,
        service: SERVICE,
        routes,
        runtime,
        pollers: POLLERS,
        waitTimeMs: 1000,
        onMessage: () => count.tick(),
      };
      const baseline = createSqsSelectiveConsumer({ ...common, sandbox: null });
      await baseline.ready();
      const sandbox = moving ? createSqsSelectiveConsumer({ ...common, sandbox: 'sb' }) : undefined;
      const result = await count.finished;
      await Promise.all([baseline.close(), sandbox?.close()]);
      await client.send(new DeleteQueueCommand({ QueueUrl: url }));
      if (moving) {
        const sb = await client
          .send(new GetQueueUrlCommand({ QueueName: sandboxQueueName(queue, 'sb') }))
          .catch(() => undefined);
        if (sb?.QueueUrl) await client.send(new DeleteQueueCommand({ QueueUrl: sb.QueueUrl }));
      }
      return result;
    },
  };
}

const result = await drainRounds(scenarios, {
  rounds: ROUNDS,
  reference: 'raw',
  queueName: (n, seq) => `bench-sqs-${run}-${n}-${seq}`,
});
const { figures, rows } = throughputSummary(result, 'raw', 'msg');
printTable(
  `sqs consumer throughput (ElasticMQ), ${N} messages per sample, ${POLLERS} pollers, ${ROUNDS} rounds`,
  rows,
);
console.log(
  `\nselective-all / raw = ${fmt(figures['selective-all'].ratio, 3)} (target >= 0.95). Wall-clock rates depend on machine load (shared CPUs); the client CPU per message does not.`,
);
saveResults('sqs', { messages: N, pollers: POLLERS, rounds: ROUNDS, results: figures });
process.exit(0);
