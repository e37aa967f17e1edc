// The BullMQ leg of `npm run demo`: one queue of the payments service with two selective
// workers — the baseline's and sandbox pr-101's — with routes from the demo's registry. One job
// is added with no key and one inside the key pr-101, both through the instrumented queue; the
// baseline worker processes the first and moves the second to the queue of pr-101, whose worker
// processes it. Runs when Redis is reachable on 127.0.0.1:6379 (BRANCHLINE_REDIS_URL), and
// removes every Redis key it created afterwards (its queues live under a prefix of their own).
import { reachable } from './reachable.mjs';

const REDIS = process.env.BRANCHLINE_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** ioredis options from a redis:// URL. */
function redisOptions(url) {
  const u = new URL(url);
  const opts = {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    maxRetriesPerRequest: null, // BullMQ workers require it
    connectTimeout: 5000,
  };
  if (u.password) opts.password = decodeURIComponent(u.password);
  if (u.username) opts.username = decodeURIComponent(u.username);
  if (u.pathname.length > 1) opts.db = Number(u.pathname.slice(1));
  return opts;
}

/**
 * Runs the leg and prints through `out` ({ step, ok, skip, fail }). Returns true when both jobs
 * were processed by their owner and only by it (or the leg was skipped), false otherwise;
 * never throws.
 */
export async function bullmqLeg({ registryUrl, runId, sandbox = 'pr-101', service = 'payments', out }) {
  out.step(`BullMQ: the same key picks the ${service} worker`);
  let connection;
  try {
    connection = redisOptions(REDIS);
  } catch {
    out.fail(`BullMQ leg: BRANCHLINE_REDIS_URL=${REDIS} is not a URL such as redis://127.0.0.1:6379`);
    return false;
  }
  const where = `${connection.host}:${connection.port}`;
  if (!(await reachable(connection.host, connection.port))) {
    out.skip(`BullMQ leg skipped: no Redis on ${where}; start \`redis-server\` and run the demo again`);
    return true;
  }
  const prefix = `bldemo-${runId}`;
  const name = 'payments-jobs';
  let routes;
  let queue;
  let redis;
  const workers = [];
  try {
    const [{ withRoutingKey }, { createRegistrySource }, bull, { Queue }, { Redis }] = await Promise.all([
      import('@branchline/core'),
      import('@branchline/core/transport'),
      import('@branchline/bullmq'),
      import('bullmq'),
      import('ioredis'),
    ]);
    redis = new Redis({ ...connection, lazyConnect: true });
    redis.on('error', () => {});
    routes = createRegistrySource({ registry: registryUrl });
    await routes.ready(5000);
    // Each job's text → the workers whose processor ran it (exactly one is the point).
    const seen = new Map();
    for (const who of [null, sandbox]) {
      const w = bull.createSelectiveWorker({
        queue: name,
        prefix,
        connection,
        service,
        sandbox: who,
        routes,
        processor: async (job) => {
          const by = seen.get(job.data.text) ?? [];
          by.push({ by: who ?? 'baseline', queue: w.queue });
          seen.set(job.data.text, by);
        },
      });
      w.on('error', () => {}); // a closing connection; the outcome below says what matters
      workers.push(w);
    }
    await Promise.all(workers.map((w) => w.ready()));
    queue = bull.instrumentQueue(new Queue(name, { connection, prefix }));
    await queue.add('charge', { text: 'no key' });
    await withRoutingKey(sandbox, () => queue.add('charge', { text: `key ${sandbox}` }));
    const deadline = Date.now() + 15_000;
    while (seen.size < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200)); // a second run of either job would show here
    let good = true;
    for (const [text, want] of [
      ['no key', 'baseline'],
      [`key ${sandbox}`, sandbox],
    ]) {
      const got = seen.get(text) ?? [];
      if (got.length === 1 && got[0].by === want)
        out.ok(
          `job with ${text.padEnd(10)} → ${service} ${want === 'baseline' ? 'baseline' : `@${want}`}  (queue ${got[0].queue})`,
        );
      else {
        out.fail(
          `job with ${text}: expected ${want} only, ${got.length ? `processed by ${got.map((g) => g.by).join(' and ')}` : 'not processed within 15 s'}`,
        );
        good = false;
      }
    }
    const moved = workers[0].stats.moved;
    out.ok(
      `the baseline worker moved ${moved} job${moved === 1 ? '' : 's'} to ${bull.sandboxQueueName(name, sandbox)} without processing it`,
    );
    return good;
  } catch (err) {
    out.fail(`BullMQ leg failed: ${err.message}`);
    return false;
  } finally {
    for (const w of workers) await w.close().catch(() => {});
    await queue?.close().catch(() => {});
    await routes?.close().catch(() => {});
    if (redis) {
      // Everything the leg wrote lives under its own prefix: the queues and the move bookkeeping.
      try {
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
          if (keys.length) await redis.del(...keys);
          cursor = next;
        } while (cursor !== '0');
      } catch (err) {
        out.skip(`could not remove the Redis keys ${prefix}:*: ${err.message}`);
      }
      redis.disconnect();
    }
  }
}
