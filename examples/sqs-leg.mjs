// The SQS leg of `npm run demo`: one queue of the payments service on an SQS endpoint (ElasticMQ
// locally) with two selective consumers — the baseline's and sandbox pr-101's — with routes from
// the demo's registry. One message is sent with no key and one inside the key pr-101, both
// through `withRouting(client)`; the baseline consumer processes the first and moves the second
// to pr-101's own queue, whose consumer processes it. Runs when an SQS endpoint answers on
// 127.0.0.1:9324 (`bash scripts/elasticmq.sh start`; BRANCHLINE_SQS_URL), and deletes every queue
// it created afterwards.
import { reachable } from './reachable.mjs';

const SQS = process.env.BRANCHLINE_SQS_URL ?? 'http://127.0.0.1:9324';

const withTimeout = (p, ms, what) =>
  Promise.race([
    p,
    new Promise((_, rej) => setTimeout(() => rej(new Error(`${what} took over ${ms / 1000} s`)), ms).unref()),
  ]);

/**
 * Runs the leg and prints through `out` ({ step, ok, skip, fail }). Returns true when both
 * messages were processed by their owner and only by it, and no queue of the leg is left (or the
 * leg was skipped), false otherwise; never throws.
 */
export async function sqsLeg({ registryUrl, runId, sandbox = 'pr-101', service = 'payments', out }) {
  out.step(`Amazon SQS: the same key picks the ${service} consumer`);
  let endpoint;
  try {
    endpoint = new URL(SQS);
    if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw new Error('not http:');
  } catch {
    out.fail(`SQS leg: BRANCHLINE_SQS_URL=${SQS} is not a URL such as http://127.0.0.1:9324`);
    return false;
  }
  const host = endpoint.hostname || '127.0.0.1';
  const port = Number(endpoint.port || (endpoint.protocol === 'https:' ? 443 : 80));
  if (!(await reachable(host, port))) {
    out.skip(
      `SQS leg skipped: no SQS endpoint (ElasticMQ) on ${host}:${port}; start one with \`bash scripts/elasticmq.sh start\` (needs Java 17 and Maven) and run the demo again`,
    );
    return true;
  }
  const queue = `bldemo-${runId}-${service}`;
  let sqs;
  let client;
  let routes;
  let queueCreated = false;
  let sandboxQueue = `${queue}-sandbox-${sandbox}`;
  const consumers = [];
  let good = false;
  try {
    const [{ withRoutingKey }, { createRegistrySource }, bl, aws] = await Promise.all([
      import('@branchline/core'),
      import('@branchline/core/transport'),
      import('@branchline/sqs'),
      import('@aws-sdk/client-sqs'),
    ]);
    sqs = { bl, aws };
    sandboxQueue = bl.sandboxQueueName(queue, sandbox);
    // ElasticMQ checks no signature: any region, any non-empty credentials.
    client = bl.withRouting(
      new aws.SQSClient({
        endpoint: endpoint.toString().replace(/\/$/, ''),
        region: 'us-east-1',
        credentials: { accessKeyId: 'demo', secretAccessKey: 'demo' },
        maxAttempts: 2,
      }),
    );
    const { QueueUrl } = await withTimeout(
      client.send(new aws.CreateQueueCommand({ QueueName: queue })),
      10_000,
      'creating the SQS queue',
    );
    queueCreated = true;
    routes = createRegistrySource({ registry: registryUrl });
    await routes.ready(5000);
    // Each message's text → the consumers whose handler ran it (exactly one is the point).
    const seen = new Map();
    for (const who of [null, sandbox]) {
      const c = bl.createSqsSelectiveConsumer({
        client,
        queue,
        service,
        sandbox: who,
        routes,
        // Short polls and waits: the demo closes the consumers within a second or two.
        waitTimeMs: 1000,
        pollers: 1,
        closeTimeoutMs: 2000,
        drainGraceMs: 1000,
        onMessage: (message, info) => {
          const by = seen.get(message.Body) ?? [];
          by.push({ by: who ?? 'baseline', queue: info.queue });
          seen.set(message.Body, by);
        },
      });
      c.on('error', () => {}); // the outcome below says what matters
      consumers.push(c);
      // The baseline creates pr-101's queue when it sees the sandbox; pr-101's consumer waits for it.
      await withTimeout(c.ready(), 15_000, `starting the ${who ?? 'baseline'} consumer`);
    }
    await client.send(new aws.SendMessageCommand({ QueueUrl, MessageBody: 'no key' }));
    await withRoutingKey(sandbox, () =>
      client.send(new aws.SendMessageCommand({ QueueUrl, MessageBody: `key ${sandbox}` })),
    );
    const deadline = Date.now() + 15_000;
    while (seen.size < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200)); // a second run of either message would show here
    good = true;
    for (const [text, want] of [
      ['no key', 'baseline'],
      [`key ${sandbox}`, sandbox],
    ]) {
      const got = seen.get(text) ?? [];
      if (got.length === 1 && got[0].by === want)
        out.ok(
          `message with ${text.padEnd(10)} → ${service} ${want === 'baseline' ? 'baseline' : `@${want}`}  (queue ${got[0].queue})`,
        );
      else {
        out.fail(
          `message with ${text}: expected ${want} only, ${got.length ? `processed by ${got.map((g) => g.by).join(' and ')}` : 'not processed within 15 s'}`,
        );
        good = false;
      }
    }
    const moved = consumers[0].stats.moved;
    out.ok(
      `the baseline consumer moved ${moved} message${moved === 1 ? '' : 's'} to ${sandboxQueue} without processing it`,
    );
  } catch (err) {
    out.fail(`SQS leg failed: ${err.message}`);
    good = false;
  } finally {
    // Sandbox first: nothing may receive from its queue while it is returned and deleted.
    for (const c of [...consumers].reverse()) await c.close().catch(() => {});
    await routes?.close().catch(() => {});
    if (client && queueCreated) {
      const { bl, aws } = sqs;
      try {
        // pr-101 still exists, so no baseline consumer removes its queue: the leg does, returning
        // whatever waits there to the baseline queue first (nothing, when all went well).
        await withTimeout(
          bl.removeSandboxQueue(client, { queue, sandbox, drainGraceMs: 0, timeoutMs: 5000 }),
          10_000,
          `removing ${sandboxQueue}`,
        );
        const { QueueUrl } = await client.send(new aws.GetQueueUrlCommand({ QueueName: queue }));
        await client.send(new aws.DeleteQueueCommand({ QueueUrl }));
        const { QueueUrls = [] } = await client.send(new aws.ListQueuesCommand({ QueueNamePrefix: queue }));
        if (QueueUrls.length) {
          out.fail(`queues left behind: ${QueueUrls.map((u) => u.split('/').pop()).join(', ')}`);
          good = false;
        } else out.ok(`queues ${queue} and ${sandboxQueue} deleted`);
      } catch (err) {
        out.fail(`could not delete the queues ${queue}*: ${err.message}`);
        good = false;
      }
    }
    client?.destroy();
  }
  return good;
}
