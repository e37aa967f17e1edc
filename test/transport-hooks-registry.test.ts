// The NATS, BullMQ and SQS resource hooks plugged into a real registry: a sandbox deleted while
// none of its consumers runs leaves durables, sandbox queues and their messages behind, and
// deleting it through the registry's API removes them (returning what waited to the baseline).
import { randomBytes } from 'node:crypto';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  ListQueuesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { sandboxQueueName as bullmqQueueName, bullmqQueuesHook } from '@branchline/bullmq';
import { natsDurablesHook, sandboxDurableName } from '@branchline/nats';
import { createRegistryServer } from '@branchline/registry';
import { sandboxQueueName as sqsQueueName, sqsQueuesHook } from '@branchline/sqs';
import { until } from '@branchline/test-utils';
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const TOKEN = 'transport-hooks-test-token';
const id = `${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
const NATS = '127.0.0.1:4222';
const REDIS = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null };
const sqsConfig = {
  endpoint: 'http://127.0.0.1:9324',
  region: 'us-east-1',
  credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
};
const stream = `HOOKS_${id}`.toUpperCase();
const subject = `hooks${id}.orders`;
const prefix = `bltest-hooks-${id}`;
const sqsQueue = `hooks-${id}`;
const sqs = new SQSClient(sqsConfig);

const registry = createRegistryServer({
  store: ':memory:',
  tokens: [{ token: TOKEN, scopes: ['read', 'write'], name: 'test' }],
  resourceHooks: [
    natsDurablesHook({ servers: NATS }, { streams: [stream], abandonAfterMs: 1500 }),
    bullmqQueuesHook({ connection: REDIS, queues: ['orders'], prefix, drainGraceMs: 200 }),
    sqsQueuesHook({ clientConfig: sqsConfig, queues: [sqsQueue], drainGraceMs: 200 }),
  ],
  retryIntervalMs: 300,
  deleteWaitMs: 300,
});
let url: string;

beforeAll(async () => {
  url = await registry.listen(0, '127.0.0.1');
});

afterAll(async () => {
  await registry.close();
  const nc = await connect({ servers: NATS });
  await (await jetstreamManager(nc)).streams.delete(stream).catch(() => undefined);
  await nc.close();
  const r = new Redis(REDIS);
  const keys = await r.keys(`${prefix}:*`);
  if (keys.length) await r.del(...keys);
  r.disconnect();
  const { QueueUrls } = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: sqsQueue }));
  for (const q of QueueUrls ?? [])
    await sqs.send(new DeleteQueueCommand({ QueueUrl: q })).catch(() => undefined);
  sqs.destroy();
});

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

describe('transport resource hooks with the registry (real brokers, real registry)', () => {
  it('removes what a sandbox deleted while its consumers were down left in NATS, Redis and SQS', async () => {
    await api('PUT', '/v1/sandboxes/pr-h', {
      overrides: { orders: { http: 'http://127.0.0.1:1' } },
      resources: {
        nats: { type: 'nats-durables', spec: {} },
        jobs: { type: 'bullmq-queues', spec: {} },
        sqs: { type: 'sqs-queues', spec: {} },
      },
    });

    // NATS: the sandbox durable, with two messages its consumer never processed.
    const nc = await connect({ servers: NATS });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({
      name: stream,
      subjects: [subject],
      retention: RetentionPolicy.Limits,
      storage: StorageType.Memory,
    });
    const durable = sandboxDurableName('orders', 'pr-h');
    await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit });
    await jsm.consumers.add(stream, { durable_name: 'orders', ack_policy: AckPolicy.Explicit });
    const js = jetstream(nc);
    await js.publish(subject, 'a');
    await js.publish(subject, 'b');

    // BullMQ: two jobs waiting in the sandbox queue.
    const baseline = new Queue('orders', { connection: REDIS, prefix });
    const sandboxQueue = new Queue(bullmqQueueName('orders', 'pr-h'), { connection: REDIS, prefix });
    await sandboxQueue.add('job', { n: 1 });
    await sandboxQueue.add('job', { n: 2 });
    await sandboxQueue.close();

    // SQS: two messages waiting in the sandbox queue.
    const baselineUrl = (await sqs.send(new CreateQueueCommand({ QueueName: sqsQueue }))).QueueUrl!;
    const sqsSandboxUrl = (
      await sqs.send(new CreateQueueCommand({ QueueName: sqsQueueName(sqsQueue, 'pr-h') }))
    ).QueueUrl!;
    for (const body of ['x', 'y'])
      await sqs.send(new SendMessageCommand({ QueueUrl: sqsSandboxUrl, MessageBody: body }));

    const del = await api('DELETE', '/v1/sandboxes/pr-h');
    // The NATS durable still holds unprocessed messages: its removal fails first, naming it.
    const first = (await del.json()) as { failed?: { resource: string; error: string }[] };
    expect(first.failed?.find((f) => f.resource === 'nats')?.error).toMatch(
      /2 pending.*restart the sandbox's consumer/,
    );

    // The registry retries the failed removal; after abandonAfterMs the hook deletes the durable
    // (with a warning counting the two messages). The baseline's durable stays.
    const consumers = async () => {
      const names: string[] = [];
      for (const c of await jsm.consumers.list(stream).next()) names.push(c.name);
      return names.sort();
    };
    expect(await consumers()).toEqual(['orders', durable]);
    await until(
      async () => (await consumers()).length === 1,
      () => 'the registry to retry removing the nats durable until the hook deletes it',
      { timeoutMs: 20_000 },
    );
    expect(await consumers()).toEqual(['orders']);
    await nc.close();

    // BullMQ: both jobs are back in the baseline queue; the sandbox queue's keys are gone.
    expect((await baseline.getJobs(['waiting'])).map((j) => (j.data as { n: number }).n).sort()).toEqual([
      1, 2,
    ]);
    const r = new Redis(REDIS);
    await until(
      async () => (await r.keys(`${prefix}:${bullmqQueueName('orders', 'pr-h')}:*`)).length === 0,
      () => 'the sandbox queue to be obliterated',
      { timeoutMs: 20_000 },
    );
    r.disconnect();
    await baseline.close();

    // SQS: both messages are in the baseline queue; the sandbox queue is deleted.
    await until(
      async () =>
        ((await sqs.send(new ListQueuesCommand({ QueueNamePrefix: `${sqsQueue}-sandbox-` }))).QueueUrls ?? [])
          .length === 0,
      () => 'the SQS sandbox queue to be deleted',
      { timeoutMs: 20_000 },
    );
    const got = await sqs.send(new ReceiveMessageCommand({ QueueUrl: baselineUrl, MaxNumberOfMessages: 10 }));
    expect((got.Messages ?? []).map((m) => m.Body).sort()).toEqual(['x', 'y']);
    const { QueueUrls } = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: `${sqsQueue}-sandbox-` }));
    expect(QueueUrls ?? []).toEqual([]);
  }, 60_000);
});
