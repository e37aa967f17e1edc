import { createHash } from 'node:crypto';
import {
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import { logger, warnRateLimited } from '@branchline/core/transport';
import { BRANCHLINE_ATTRIBUTE, formatMeta, type MessageAttributes, parseMeta } from './attributes.js';

/** SQS limits queue names to 80 characters: letters, digits, `-` and `_`. */
const MAX_QUEUE_NAME = 80;
const QUEUE_NAME_RE = /^[A-Za-z0-9_-]{1,80}$/;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Throws a TypeError that says what a valid SQS queue name is. */
export function checkQueueName(queue: string): void {
  if (typeof queue !== 'string' || !QUEUE_NAME_RE.test(queue)) {
    const fifo = typeof queue === 'string' && queue.endsWith('.fifo');
    throw new TypeError(
      fifo
        ? `branchline: FIFO queues ("${queue}") are not supported by the SQS selective consumer; use a standard queue`
        : `branchline: "${String(queue)}" is not an SQS queue name: 1 to 80 letters, digits, "-" or "_" (pass the name, not the URL)`,
    );
  }
}

/**
 * The queue that holds the messages sandbox `sandbox` owns from baseline queue `queue`:
 * `<queue>-sandbox-<sandbox>`. A name longer than SQS's 80 characters is shortened and made
 * unique with a hash of both parts.
 */
export function sandboxQueueName(queue: string, sandbox: string): string {
  const name = `${queue}-sandbox-${sandbox}`;
  if (name.length <= MAX_QUEUE_NAME) return name;
  const hash = createHash('sha256').update(`${queue}\0${sandbox}`).digest('hex').slice(0, 12);
  // <queue head>-s-<sandbox head>-<hash>, 80 characters at most.
  const room = MAX_QUEUE_NAME - hash.length - 4;
  const q = queue.slice(0, Math.ceil(room / 2));
  const s = sandbox.slice(0, room - q.length);
  return `${q}-s-${s}-${hash}`;
}

/** The SQS error name (`QueueDoesNotExist`, `AWS.SimpleQueueService.NonExistentQueue`, …). */
export function isQueueGone(err: unknown): boolean {
  const e = err as { name?: string; Code?: string; __type?: string } | undefined;
  const name = `${e?.name ?? ''} ${e?.Code ?? ''} ${e?.__type ?? ''}`;
  return /QueueDoesNotExist|NonExistentQueue/.test(name);
}

export async function queueUrl(client: SQSClient, name: string): Promise<string | undefined> {
  try {
    return (await client.send(new GetQueueUrlCommand({ QueueName: name }))).QueueUrl;
  } catch (err) {
    if (isQueueGone(err)) return undefined;
    throw err;
  }
}

export async function createQueue(
  client: SQSClient,
  name: string,
  attributes?: Record<string, string>,
): Promise<string> {
  const out = await client.send(new CreateQueueCommand({ QueueName: name, Attributes: attributes }));
  if (!out.QueueUrl) throw new Error(`branchline: SQS did not return a URL for the created queue "${name}"`);
  return out.QueueUrl;
}

export const RECEIVE_ATTRIBUTES = {
  MessageAttributeNames: ['All'],
  MessageSystemAttributeNames: ['SentTimestamp', 'ApproximateReceiveCount'],
} as const;

export function receiveCount(m: Message): number {
  const v = Number(m.Attributes?.ApproximateReceiveCount);
  return Number.isFinite(v) && v > 0 ? v : 1;
}

/** The original's identity: its MessageId, carried on every copy. */
export function identity(m: Message): string {
  return parseMeta(m.MessageAttributes as MessageAttributes)?.m ?? m.MessageId ?? '';
}

/**
 * The message's time (registry time, ms): on a copy, the original's; otherwise SQS's
 * `SentTimestamp` (the server's clock), else the producer's stamp.
 */
export function messageTime(m: Message): number | undefined {
  const meta = parseMeta(m.MessageAttributes as MessageAttributes);
  if (meta?.m !== undefined && meta.t !== undefined) return meta.t;
  const sent = Number(m.Attributes?.SentTimestamp);
  if (Number.isFinite(sent) && sent > 0) return sent;
  return meta?.t;
}

/**
 * The attributes of a copy of `m` (moved to a sandbox queue, or returned to the baseline):
 * the application's attributes and baggage, and the `branchline` attribute with the original's
 * time, identity and receive count. When the original already uses all 10 attributes and none is
 * Branchline's, the copy goes without it (`m` then identifies it only by its own MessageId).
 */
export function copyAttributes(m: Message, extra: { f?: string; r?: string }): MessageAttributes | undefined {
  const attrs = { ...((m.MessageAttributes ?? {}) as MessageAttributes) };
  const meta = parseMeta(attrs) ?? {};
  const value = formatMeta({
    t: messageTime(m),
    m: meta.m ?? m.MessageId,
    f: extra.f ?? meta.f,
    r: extra.r,
    c: Math.max(receiveCount(m), meta.c ?? 1),
  });
  if (attrs[BRANCHLINE_ATTRIBUTE] !== undefined || Object.keys(attrs).length < 10)
    attrs[BRANCHLINE_ATTRIBUTE] = { DataType: 'String', StringValue: value };
  else
    warnRateLimited(
      'sqs-copy-attributes',
      'branchline: an SQS message with 10 attributes was copied without its Branchline attribute; its copy cannot be recognised as a repeat (send at most 8 attributes of your own)',
      { messageId: m.MessageId },
    );
  return Object.keys(attrs).length ? attrs : undefined;
}

/** Result of one batch copy: the messages whose copy SQS confirmed, and the others. */
export interface CopyResult {
  sent: Message[];
  failed: Message[];
}

/** Sends copies of `msgs` (≤ 10) to `url` in one SendMessageBatch; throws when the whole call fails. */
export async function copyBatch(
  client: SQSClient,
  url: string,
  msgs: Message[],
  extra: { f?: string; r?: string },
  timeoutMs?: number,
): Promise<CopyResult> {
  const command = new SendMessageBatchCommand({
    QueueUrl: url,
    Entries: msgs.map((m, i) => ({
      Id: String(i),
      MessageBody: m.Body ?? '',
      MessageAttributes: copyAttributes(m, extra),
    })),
  });
  // No resend by the SDK's retry: a first attempt whose answer was lost may have stored the
  // copies, and a resend would store identical ones that nobody could tell apart. The caller
  // makes the originals visible again instead; copies made then are marked as repeats (`c`).
  command.middlewareStack.add(
    (next) => {
      let attempts = 0;
      return (args) => {
        if (++attempts > 1)
          throw Object.assign(new Error('branchline: a copy is not sent twice'), { $retryable: undefined });
        return next(args);
      };
    },
    { step: 'finalizeRequest', priority: 'low', name: 'branchlineSendOnce' },
  );
  const out = await client.send(
    command,
    timeoutMs === undefined ? undefined : { abortSignal: AbortSignal.timeout(timeoutMs) },
  );
  const failedIds = new Set((out.Failed ?? []).map((f) => f.Id));
  const sent: Message[] = [];
  const failed: Message[] = [];
  msgs.forEach((m, i) => {
    (failedIds.has(String(i)) ? failed : sent).push(m);
  });
  return { sent, failed };
}

/** Deletes `msgs` (any number) in batches of 10; returns how many SQS refused. */
export async function deleteMessages(client: SQSClient, url: string, msgs: Message[]): Promise<number> {
  let refused = 0;
  for (let i = 0; i < msgs.length; i += 10) {
    const chunk = msgs.slice(i, i + 10);
    const out = await client.send(
      new DeleteMessageBatchCommand({
        QueueUrl: url,
        Entries: chunk.map((m, j) => ({ Id: String(j), ReceiptHandle: m.ReceiptHandle })),
      }),
    );
    refused += out.Failed?.length ?? 0;
  }
  return refused;
}

export interface SandboxQueueCleanupOptions {
  /** The baseline queue's name. */
  queue: string;
  /** The deleted sandbox. */
  sandbox: string;
  /**
   * After the sandbox queue is empty, wait this long and drain once more before deleting it, for
   * moves by baseline replicas whose route view has not seen the deletion yet. Default 10000.
   */
  drainGraceMs?: number;
  /** Give up (throw) when messages are still in flight in the sandbox queue after this long. Default 60000. */
  timeoutMs?: number;
  /** Visibility timeout for the messages being returned, ms. Default 30000. */
  visibilityTimeoutMs?: number;
}

export interface SandboxQueueCleanupResult {
  queue: string;
  sandboxQueue: string;
  /** Messages moved back to the baseline queue. */
  returned: number;
  /** The sandbox queue was deleted by this call (false: it did not exist). */
  deleted: boolean;
}

/** Returns what waits in `sandboxUrl` to `baselineUrl`; resolves with the count. */
async function drainOnce(
  client: SQSClient,
  sandboxUrl: string,
  baselineUrl: string,
  sandbox: string,
  visibilityTimeoutMs: number,
): Promise<number> {
  let returned = 0;
  for (;;) {
    const res = await client.send(
      new ReceiveMessageCommand({
        QueueUrl: sandboxUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 0,
        VisibilityTimeout: Math.max(1, Math.ceil(visibilityTimeoutMs / 1000)),
        ...RECEIVE_ATTRIBUTES,
        MessageSystemAttributeNames: [...RECEIVE_ATTRIBUTES.MessageSystemAttributeNames],
        MessageAttributeNames: [...RECEIVE_ATTRIBUTES.MessageAttributeNames],
      }),
    );
    const msgs = res.Messages ?? [];
    if (msgs.length === 0) return returned;
    // Copy first, delete after: a failure in between repeats a message (recognised by its
    // identity), it never loses one.
    const { sent } = await copyBatch(client, baselineUrl, msgs, { r: sandbox });
    await deleteMessages(client, sandboxUrl, sent);
    returned += sent.length;
  }
}

async function waitingCounts(client: SQSClient, url: string): Promise<number> {
  const out = await client.send(
    new GetQueueAttributesCommand({
      QueueUrl: url,
      AttributeNames: [
        'ApproximateNumberOfMessages',
        'ApproximateNumberOfMessagesNotVisible',
        'ApproximateNumberOfMessagesDelayed',
      ],
    }),
  );
  const a = out.Attributes ?? {};
  return (
    Number(a.ApproximateNumberOfMessages ?? 0) +
    Number(a.ApproximateNumberOfMessagesNotVisible ?? 0) +
    Number(a.ApproximateNumberOfMessagesDelayed ?? 0)
  );
}

/**
 * Returns the messages still waiting in a deleted sandbox's queue to the baseline queue (with
 * their original time; the baseline processes them without deciding again) and deletes the
 * sandbox queue once it is empty and nothing is in flight in it. Safe to run from several
 * processes at once and idempotent: a message is deleted from the sandbox queue only after SQS
 * confirmed its copy in the baseline queue.
 */
export async function removeSandboxQueue(
  client: SQSClient,
  options: SandboxQueueCleanupOptions,
): Promise<SandboxQueueCleanupResult> {
  const { queue, sandbox } = options;
  const sandboxQueue = sandboxQueueName(queue, sandbox);
  const graceMs = options.drainGraceMs ?? 10_000;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const visibilityTimeoutMs = options.visibilityTimeoutMs ?? 30_000;
  const sandboxUrl = await queueUrl(client, sandboxQueue);
  if (!sandboxUrl) return { queue, sandboxQueue, returned: 0, deleted: false };
  const baselineUrl = await queueUrl(client, queue);
  if (!baselineUrl)
    throw new Error(
      `branchline: cannot return the messages of sandbox ${sandbox}: the baseline queue "${queue}" does not exist; create it, then run the cleanup again`,
    );
  const deadline = Date.now() + timeoutMs;
  let returned = 0;
  let graced = false;
  try {
    for (;;) {
      const n = await drainOnce(client, sandboxUrl, baselineUrl, sandbox, visibilityTimeoutMs);
      returned += n;
      // Something arrived since the last look (a replica with an older view still moving): the
      // queue must stay quiet for a whole grace period before it is deleted.
      if (n > 0) graced = false;
      if ((await waitingCounts(client, sandboxUrl)) === 0) {
        if (graced) break;
        await sleep(graceMs);
        graced = true;
        continue;
      }
      graced = false;
      if (Date.now() > deadline)
        throw new Error(
          `branchline: messages of deleted sandbox ${sandbox} are still in flight in "${sandboxQueue}" after ${timeoutMs} ms (a consumer of that sandbox still runs?); stop it, then run the cleanup again (waiting messages were returned to "${queue}")`,
        );
      await sleep(200);
    }
    await client.send(new DeleteQueueCommand({ QueueUrl: sandboxUrl }));
  } catch (err) {
    if (isQueueGone(err)) return { queue, sandboxQueue, returned, deleted: false };
    throw err;
  }
  logger().debug('branchline: returned a deleted sandbox queue to baseline', { sandboxQueue, returned });
  return { queue, sandboxQueue, returned, deleted: true };
}
