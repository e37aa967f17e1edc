import { SendMessageCommand } from '@aws-sdk/client-sqs';
import type { ResourceContext } from '@branchline/core/transport';
import { afterAll, expect, it } from 'vitest';
import { sandboxQueueName, sqsQueuesHook } from '../src/index.js';
import {
  createTestQueue,
  deleteQueues,
  ENDPOINT,
  listQueues,
  receiveRaw,
  testClient,
  uniqueQueue,
} from './sqs.js';

const { client } = testClient();
const made: string[] = [];
afterAll(async () => {
  for (const q of made) await deleteQueues(client, q);
  client.destroy();
});

function ctx(sandbox: string, spec: Record<string, unknown> = {}): ResourceContext {
  return {
    sandbox: { name: sandbox, key: sandbox, labels: {} },
    resource: { name: 'sqs', type: 'sqs-queues', spec },
    report: () => undefined,
    signal: new AbortController().signal,
  };
}

async function send(url: string, body: string): Promise<void> {
  await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: body }));
}

it('returns the messages of a deleted sandbox to the baseline queue and deletes its queue', async () => {
  const queue = uniqueQueue('hook');
  made.push(queue);
  const baselineUrl = await createTestQueue(client, queue);
  const sq = await createTestQueue(client, sandboxQueueName(queue, 'pr-1'));
  const other = await createTestQueue(client, sandboxQueueName(queue, 'pr-2'));
  for (let i = 0; i < 3; i++) await send(sq, `m${i}`);
  await send(other, 'theirs');

  const hook = sqsQueuesHook({
    clientConfig: {
      endpoint: ENDPOINT,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    },
    queues: [queue],
    drainGraceMs: 100,
  });
  await hook.deprovision(ctx('pr-1'));

  const bodies = (await receiveRaw(client, baselineUrl)).map((m) => m.Body).sort();
  expect(bodies).toEqual(['m0', 'm1', 'm2']);
  const left = await listQueues(client, `${queue}-sandbox-`);
  expect(left.map((u) => u.slice(u.lastIndexOf('/') + 1))).toEqual([sandboxQueueName(queue, 'pr-2')]);
  // Idempotent: a retry finds no queue and succeeds.
  await hook.deprovision(ctx('pr-1'));
});

it('sweeps sandbox queues of sandboxes that no longer exist, keeping live ones', async () => {
  const queue = uniqueQueue('hooksweep');
  made.push(queue);
  const baselineUrl = await createTestQueue(client, queue);
  const gone = await createTestQueue(client, sandboxQueueName(queue, 'pr-3'));
  await createTestQueue(client, sandboxQueueName(queue, 'pr-4'));
  await send(gone, 'late');
  const hook = sqsQueuesHook({ client, queues: [queue] });
  await hook.sweep(['pr-4']);
  expect((await receiveRaw(client, baselineUrl)).map((m) => m.Body)).toEqual(['late']);
  const left = await listQueues(client, `${queue}-sandbox-`);
  expect(left.map((u) => u.slice(u.lastIndexOf('/') + 1))).toEqual([sandboxQueueName(queue, 'pr-4')]);
});

it('fails with a clear error while messages stay in flight, leaving the queue', async () => {
  const queue = uniqueQueue('hookbusy');
  made.push(queue);
  await createTestQueue(client, queue);
  const sq = await createTestQueue(client, sandboxQueueName(queue, 'pr-5'));
  await send(sq, 'held');
  // A sandbox consumer that is still running holds the message (invisible for 30 s).
  expect(await receiveRaw(client, sq, 0, 30)).toHaveLength(1);
  const hook = sqsQueuesHook({ client, queues: [queue], drainGraceMs: 0, timeoutMs: 300 });
  await expect(hook.deprovision(ctx('pr-5'))).rejects.toThrow(/next run retries.*still in flight/);
  expect(await listQueues(client, sandboxQueueName(queue, 'pr-5'))).toHaveLength(1);
});

it('rejects bad options and specs with clear errors', () => {
  expect(() => sqsQueuesHook({ queues: ['orders'] })).toThrow(/pass client/);
  expect(() => sqsQueuesHook({ client, queues: [] })).toThrow(/option queues must list/);
  expect(() => sqsQueuesHook({ client, queues: ['https://sqs/orders'] })).toThrow(/not an SQS queue name/);
  const hook = sqsQueuesHook({ client, queues: ['orders'] });
  expect(() => hook.validate({ queues: ['billing'] })).toThrow(/spec.queues must be a list of queues/);
});
