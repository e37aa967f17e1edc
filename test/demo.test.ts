import { fileURLToPath } from 'node:url';
import { ListQueuesCommand, SQSClient } from '@aws-sdk/client-sqs';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

const demo = fileURLToPath(new URL('../examples/demo.mjs', import.meta.url));

async function exitOf(p: RunningProcess, timeoutMs: number): Promise<number | string> {
  const { child } = p;
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode!;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the demo did not end within ${timeoutMs} ms:\n${p.output()}`)),
      timeoutMs,
    );
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal!);
    });
  });
}

/** The "which version served what" row of the summary for `key`, as cells. */
function summaryRow(out: string, key: string): string[] {
  const section = out.slice(out.indexOf('Which version served what'));
  const line = section.split('\n').find((l) => l.trim().startsWith(`${key} `));
  if (!line) throw new Error(`no summary row for ${key} in:\n${out}`);
  return line.trim().split(/\s+/).slice(1);
}

/** Every service process the demo started (it prints their pids) is gone. */
function expectNoProcessLeft(out: string): void {
  const pids = [...out.matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]));
  expect(pids.length).toBeGreaterThan(0);
  const alive = pids.filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  });
  expect(alive, `processes left behind:\n${out}`).toEqual([]);
}

const env = { NO_COLOR: '1', BRANCHLINE_LOG_LEVEL: undefined };

/** Runs one query on the local PostgreSQL (database `postgres` unless named). */
async function pgQuery(sql: string, values: unknown[] = [], database = 'postgres') {
  const c = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database });
  await c.connect();
  try {
    return (await c.query(sql, values)).rows;
  } finally {
    await c.end();
  }
}

describe('npm run demo', () => {
  it('routes each key to its sandbox only where the sandbox overrides a service, then cleans up', async () => {
    const p = startNode(demo, [], env);
    const code = await exitOf(p, 150_000);
    const out = p.output();
    expect(code, out).toBe(0);
    expect(out).not.toMatch(/skipped/);
    //                         gateway     orders      payments    shipping    notifications
    expect(summaryRow(out, '(none)')).toEqual(['baseline', 'baseline', 'baseline', 'baseline', 'baseline']);
    expect(summaryRow(out, 'pr-101')).toEqual(['baseline', 'baseline', 'pr-101', 'baseline', 'baseline']);
    expect(summaryRow(out, 'pr-102')).toEqual(['baseline', 'baseline', 'baseline', 'pr-102', 'baseline']);
    expect(summaryRow(out, 'pr-103')).toEqual(['baseline', 'pr-103', 'baseline', 'baseline', 'baseline']);
    // The hop lines say what each version did: the sandbox's new fee rule and new carrier.
    expect(out).toMatch(/payments\s+pr-101 \(sandbox\)\s+gRPC\s+charged 34900¢ \+ fee 200¢ \(new rule/);
    expect(out).toMatch(/shipping\s+pr-102 \(sandbox\)\s+Kafka\s+label printed with DHL Express/);
    expect(out).toMatch(/orders\s+baseline\s+HTTP\s+.*saved in PostgreSQL \(branchline_demo\)/);
    // pr-103's orders writes the new schema into its own copy of the database, while the
    // baseline's table keeps the old one; the copy is dropped with the sandbox.
    const sandboxDb = 'bldemo_sb_pr-103__branchline_demo';
    expect(out).toMatch(
      new RegExp(
        `orders\\s+pr-103 \\(sandbox\\)\\s+HTTP\\s+tea kettle, saved in PostgreSQL \\(${sandboxDb}, new schema: amount_cents \\+ currency\\)`,
      ),
    );
    expect(out).toMatch(/baseline branchline_demo\.demo_orders: id, item, cents, routing_key, created_at /);
    expect(out).toContain(
      `pr-103   ${sandboxDb}.demo_orders: id, item, amount_cents, routing_key, created_at, currency`,
    );
    expect(out).toContain(`database ${sandboxDb} was dropped with sandbox pr-103`);
    const left = await pgQuery('SELECT datname FROM pg_database WHERE datname = ANY($1)', [
      [sandboxDb, 'bldemo_snap_branchline_demo'],
    ]);
    expect(left).toEqual([]);
    const baselineColumns = await pgQuery(
      "SELECT column_name FROM information_schema.columns WHERE table_name = 'demo_orders' AND column_name IN ('cents', 'amount_cents')",
      [],
      'branchline_demo',
    );
    expect(baselineColumns).toEqual([{ column_name: 'cents' }]);
    expect(out).toContain('DELETE /v1/sandboxes/pr-103');
    // The key travels on with a message nobody overrides.
    expect(out).toMatch(
      /notifications\s+baseline\s+AMQP\s+confirmation e-mail sent \(key pr-102 travelled with it\)/,
    );
    // NATS JetStream: each of two messages processed by exactly one selective consumer.
    expect(out).toMatch(/message with no key\s+→ payments baseline\s+\(durable payments\)/);
    expect(out).toMatch(/message with key pr-101 → payments @pr-101\s+\(durable payments_sandbox_pr-101\)/);
    // BullMQ: the baseline worker processes the job with no key and moves the keyed one to
    // pr-101's queue, whose worker processes it; each runs once.
    expect(out).toMatch(/job with no key\s+→ payments baseline\s+\(queue payments-jobs\)/);
    expect(out).toMatch(/job with key pr-101 → payments @pr-101\s+\(queue payments-jobs\.sandbox\.pr-101\)/);
    expect(out).toContain('the baseline worker moved 1 job to payments-jobs.sandbox.pr-101');
    // SQS: the baseline consumer processes the message with no key and moves the keyed one to
    // pr-101's queue, whose consumer processes it; both queues are deleted afterwards.
    const sqsQueue = out.match(
      /message with no key\s+→ payments baseline\s+\(queue (bldemo-\w+-payments)\)/,
    )?.[1];
    expect(sqsQueue, out).toBeDefined();
    expect(out).toContain(`message with key pr-101 → payments @pr-101  (queue ${sqsQueue}-sandbox-pr-101)`);
    expect(out).toContain(
      `the baseline consumer moved 1 message to ${sqsQueue}-sandbox-pr-101 without processing it`,
    );
    expect(out).toContain(`queues ${sqsQueue} and ${sqsQueue}-sandbox-pr-101 deleted`);
    const sqs = new SQSClient({
      endpoint: 'http://127.0.0.1:9324',
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    });
    try {
      const { QueueUrls } = await sqs.send(new ListQueuesCommand({ QueueNamePrefix: sqsQueue }));
      expect(QueueUrls ?? []).toEqual([]);
    } finally {
      sqs.destroy();
    }
    // MySQL: one routed query, two databases: the baseline's rows and schema, and pr-101's copy
    // with its new column and row; both databases are gone afterwards, and so are the Redis keys.
    const fees = out.match(/baseline database (bldemo_fees_\w+)/)?.[1];
    expect(fees, out).toBeDefined();
    const copy = `bldemo_sb_pr-101__${fees}`;
    expect(out).toContain(
      `query with no key     → ${fees}: 2 rows (standard, wholesale); columns id, rule, percent`,
    );
    expect(out).toContain(
      `query with key pr-101 → ${copy}: 3 rows (standard, wholesale, new rule); columns id, rule, percent, fixed_cents`,
    );
    expect(out).toContain(`${copy} and ${fees} dropped`);
    const my = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
    try {
      const [rows] = await my.query(
        'SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?, ?)',
        [fees, copy],
      );
      expect(rows).toEqual([]);
    } finally {
      await my.end();
    }
    const runId = fees!.slice('bldemo_fees_'.length);
    const redis = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    try {
      await redis.connect();
      expect(await redis.keys(`bldemo-${runId}:*`)).toEqual([]);
    } finally {
      redis.disconnect();
    }
    expect(out).toContain('DELETE /v1/sandboxes/pr-101');
    expect(out).toContain('DELETE /v1/sandboxes/pr-102');
    expect(out).toContain('nothing left running');
    expectNoProcessLeft(out);
  }, 180_000);

  it('skips the broker, SQS and MySQL legs, saying how to enable them, when none is reachable', async () => {
    const closed = await freePort();
    const p = startNode(demo, [], {
      ...env,
      BRANCHLINE_KAFKA_BROKER: `127.0.0.1:${closed}`,
      BRANCHLINE_AMQP_URL: `amqp://guest:guest@127.0.0.1:${closed}`,
      BRANCHLINE_NATS_URL: `127.0.0.1:${closed}`,
      BRANCHLINE_REDIS_URL: `redis://127.0.0.1:${closed}`,
      BRANCHLINE_MYSQL_URL: `mysql://root@127.0.0.1:${closed}`,
      BRANCHLINE_SQS_URL: `http://127.0.0.1:${closed}`,
    });
    const code = await exitOf(p, 120_000);
    const out = p.output();
    expect(code, out).toBe(0);
    expect(out).toContain('Kafka leg skipped (shipping and its sandbox)');
    expect(out).toContain('bash scripts/kafka.sh start');
    expect(out).toContain('RabbitMQ leg skipped (notifications)');
    expect(out).toContain('sandbox pr-102 (shipping with a new carrier) skipped');
    expect(out).toContain(`NATS leg skipped: no nats-server on 127.0.0.1:${closed}`);
    expect(out).toContain(`BullMQ leg skipped: no Redis on 127.0.0.1:${closed}`);
    expect(out).toContain(`SQS leg skipped: no SQS endpoint (ElasticMQ) on 127.0.0.1:${closed}`);
    expect(out).toContain('bash scripts/elasticmq.sh start');
    expect(out).toContain(`MySQL leg skipped: no MariaDB or MySQL on 127.0.0.1:${closed}`);
    expect(out).not.toMatch(/message with|job with|query with/);
    expect(summaryRow(out, '(none)')).toEqual(['baseline', 'baseline', 'baseline', 'skipped', 'skipped']);
    expect(summaryRow(out, 'pr-101')).toEqual(['baseline', 'baseline', 'pr-101', 'skipped', 'skipped']);
    expect(summaryRow(out, 'pr-103')).toEqual(['baseline', 'pr-103', 'baseline', 'skipped', 'skipped']);
    expect(out).not.toMatch(/^\s+pr-102 /m);
    expectNoProcessLeft(out);
  }, 150_000);

  it('on Ctrl-C while it is still starting, stops what it started and exits with 130', async () => {
    const p = startNode(demo, [], env);
    await p.waitFor('Creating three sandboxes', 150_000);
    p.child.kill('SIGINT');
    const code = await exitOf(p, 60_000);
    const out = p.output();
    expect(code, out).toBe(130);
    expect(out).toContain('nothing left running');
    expectNoProcessLeft(out);
  }, 240_000);

  it('on Ctrl-C, deletes its sandboxes and stops every process it started', async () => {
    const p = startNode(demo, ['--keep'], env);
    await p.waitFor('The shop keeps running', 150_000);
    p.child.kill('SIGINT');
    const code = await exitOf(p, 60_000);
    const out = p.output();
    expect(code, out).toBe(0);
    expect(out).toContain('Ctrl-C: stopping the demo');
    expect(out).toContain('DELETE /v1/sandboxes/pr-101');
    expect(out).toContain('nothing left running');
    expectNoProcessLeft(out);
  }, 240_000);
});
