import { SendMessageBatchCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { withRoutingKey } from '@branchline/core';
import { afterAll, expect, it } from 'vitest';
import { BRANCHLINE_ATTRIBUTE, routingAttributes, withRouting } from '../src/index.js';
import { createTestQueue, deleteQueues, receiveRaw, testClient, uniqueQueue } from './sqs.js';

const { client } = testClient();
withRouting(client);
const prefix = uniqueQueue('bl-pub');
afterAll(() => deleteQueues(client, prefix));

it('carries the active routing key in the baggage attribute, keeps the application attributes, and stamps the send time', async () => {
  const url = await createTestQueue(client, `${prefix}-a`);
  const input = {
    QueueUrl: url,
    MessageBody: 'one',
    MessageAttributes: {
      tenant: { DataType: 'String', StringValue: 't1' },
      baggage: { DataType: 'String', StringValue: 'user=alice' },
    },
  };
  const before = Date.now();
  await withRoutingKey('pr-7', () => client.send(new SendMessageCommand(input)));
  await withRoutingKey('pr-8', () =>
    client.send(
      new SendMessageBatchCommand({
        QueueUrl: url,
        Entries: [
          { Id: 'a', MessageBody: 'two' },
          {
            Id: 'b',
            MessageBody: 'three',
            MessageAttributes: { n: { DataType: 'Number', StringValue: '3' } },
          },
        ],
      }),
    ),
  );
  await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'keyless' }));
  const got = new Map<string, Record<string, string | undefined>>();
  for (let i = 0; i < 10 && got.size < 4; i++)
    for (const m of await receiveRaw(client, url, 1))
      got.set(
        m.Body!,
        Object.fromEntries(Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue])),
      );
  expect(got.get('one')).toMatchObject({ tenant: 't1', baggage: 'user=alice,branchline=pr-7' });
  expect(got.get('two')).toMatchObject({ baggage: 'branchline=pr-8' });
  expect(got.get('three')).toMatchObject({ baggage: 'branchline=pr-8', n: '3' });
  const t = Number(got.get('one')?.[BRANCHLINE_ATTRIBUTE]?.slice(2));
  expect(t).toBeGreaterThanOrEqual(before);
  expect(got.get('keyless')).toEqual({});
  // The application's input objects are not changed.
  expect(Object.keys(input.MessageAttributes)).toEqual(['tenant', 'baggage']);
});

it('says why when the message already has the 10 attributes SQS allows', () => {
  const ten = Object.fromEntries(
    Array.from({ length: 10 }, (_, i) => [`a${i}`, { DataType: 'String', StringValue: 'x' }]),
  );
  expect(() => routingAttributes(ten, 'pr-1')).toThrow(/10 message attributes/);
  const nine = Object.fromEntries(Object.entries(ten).slice(0, 9));
  const out = routingAttributes(nine, 'pr-1');
  expect(Object.keys(out)).toHaveLength(10); // the key fits; the time stamp is left out
  expect(out.baggage?.StringValue).toBe('branchline=pr-1');
});
