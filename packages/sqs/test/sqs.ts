import { Agent } from 'node:http';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ListQueuesCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';

/** ElasticMQ started by the global setup (scripts/elasticmq.sh). */
export const ENDPOINT = process.env.BRANCHLINE_SQS_ENDPOINT ?? 'http://127.0.0.1:9324';

export interface TestClient {
  client: SQSClient;
  /** Destroys every open socket of the client: requests in flight fail as on a network drop. */
  dropConnections(): number;
}

/** An SQS client for ElasticMQ: dummy credentials and region, its own keep-alive agent. */
export function testClient(): TestClient {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const client = new SQSClient({
    endpoint: ENDPOINT,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    requestHandler: { httpAgent: agent },
    maxAttempts: 3,
  });
  return {
    client,
    dropConnections() {
      let n = 0;
      for (const list of [...Object.values(agent.sockets), ...Object.values(agent.freeSockets)])
        for (const s of list ?? []) {
          s.destroy();
          n++;
        }
      return n;
    },
  };
}

let seq = 0;
/** A fresh queue name for one test. */
export function uniqueQueue(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${(seq++).toString(36)}`;
}

export async function createTestQueue(client: SQSClient, name: string): Promise<string> {
  return (await client.send(new CreateQueueCommand({ QueueName: name }))).QueueUrl!;
}

/** Queues whose name starts with `prefix`. */
export async function listQueues(client: SQSClient, prefix: string): Promise<string[]> {
  const out = await client.send(new ListQueuesCommand({ QueueNamePrefix: prefix }));
  return out.QueueUrls ?? [];
}

export async function deleteQueues(client: SQSClient, prefix: string): Promise<void> {
  for (const url of await listQueues(client, prefix))
    await client.send(new DeleteQueueCommand({ QueueUrl: url })).catch(() => undefined);
}

export async function countMessages(client: SQSClient, url: string): Promise<number> {
  const a = (
    await client.send(
      new GetQueueAttributesCommand({
        QueueUrl: url,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
      }),
    )
  ).Attributes;
  return Number(a?.ApproximateNumberOfMessages ?? 0) + Number(a?.ApproximateNumberOfMessagesNotVisible ?? 0);
}

export async function receiveRaw(
  client: SQSClient,
  url: string,
  waitSeconds = 0,
  visibilitySeconds?: number,
): Promise<Message[]> {
  const out = await client.send(
    new ReceiveMessageCommand({
      QueueUrl: url,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: waitSeconds,
      VisibilityTimeout: visibilitySeconds,
      MessageAttributeNames: ['All'],
      MessageSystemAttributeNames: ['SentTimestamp', 'ApproximateReceiveCount'],
    }),
  );
  return out.Messages ?? [];
}

export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
