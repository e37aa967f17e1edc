import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, until } from '@branchline/test-utils';
import { createTopic, groupLag, kafkaClient, unique } from '@branchline/test-utils/kafka';
import { type RunningProcess, startNode } from '@branchline/test-utils/processes';
import { endpoint, RegistrySim } from '@branchline/test-utils/registry-sim';
import type { Admin, Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * kill -9 of a selective consumer. Ownership is decided by the message's time, so a crash does
 * not move messages between consumers: the sandbox's messages stay the sandbox's (also when the
 * sandbox is deleted while its consumer is dead) and the restarted consumer resumes from its
 * group's committed offsets. What repeats: messages it processed after its last commit. What is
 * lost: nothing. This test measures both.
 */

const fixture = join(
  import.meta.dirname,
  '..',
  'packages',
  'kafkajs',
  'test',
  'fixtures',
  'consumer-process.mjs',
);
const TOTAL = 6000;
const kafka = kafkaClient('crash');
let admin: Admin;
let producer: Producer;
const dir = mkdtempSync(join(tmpdir(), 'branchline-kafka-crash-'));

beforeAll(async () => {
  admin = kafka.admin();
  await admin.connect();
  producer = kafka.producer();
  await producer.connect();
});

afterAll(async () => {
  await producer.disconnect();
  await admin.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

function lines(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

describe('kafka consumer crash (kill -9, real broker)', () => {
  it('a killed consumer repeats only what it had not committed and loses nothing, even when its sandbox is deleted meanwhile', async () => {
    const topic = unique('crash');
    await createTopic(admin, topic, 3);
    const groupId = unique('orders');
    const reg = new RegistrySim();
    const routesFile = join(dir, 'routes.json');
    const publish = () => {
      writeFileSync(`${routesFile}.tmp`, JSON.stringify(reg.snapshot()));
      renameSync(`${routesFile}.tmp`, routesFile);
    };
    publish();
    const heartbeat = setInterval(publish, 100);
    const outBase = join(dir, 'baseline.txt');
    const outSandbox = join(dir, 'sb-1.txt');
    const procs: RunningProcess[] = [];
    const spawn = async (sandbox: string, out: string) => {
      const p = startNode(fixture, [topic, groupId, sandbox, out, routesFile]);
      procs.push(p);
      await p.waitFor('running', 60_000);
      return p;
    };
    try {
      let base = await spawn('-', outBase);
      reg.create('sb-1', { orders: endpoint });
      publish();
      let sb = await spawn('sb-1', outSandbox);

      let sent = 0;
      const producing = (async () => {
        while (sent < TOTAL) {
          const messages = [];
          for (let i = 0; i < 20 && sent < TOTAL; i++, sent++) {
            const headers: Record<string, string> = { id: String(sent) };
            if (sent % 2 === 0) headers.baggage = 'branchline=sb-1';
            messages.push({ key: String(sent), value: 'x', headers });
          }
          await producer.send({ topic, messages });
          await sleep(50);
        }
      })();

      const events: string[] = [];
      await until(
        () => lines(outSandbox).length > 200,
        () => 'the sandbox consumer to process messages',
      );
      await sb.stop('SIGKILL');
      events.push(`sandbox killed after ${lines(outSandbox).length} records (${sent} sent)`);
      await sleep(300);
      reg.delete('sb-1'); // deleted while its consumer is dead
      publish();
      events.push('sandbox deleted while its consumer was dead');
      const sbRestart = spawn('sb-1', outSandbox).then((p) => {
        events.push('sandbox consumer restarted after the deletion');
        sb = p;
      });
      // Meanwhile, kill the baseline mid-stream too.
      const baseBefore = lines(outBase).length;
      await until(
        () => lines(outBase).length > baseBefore + 300,
        () => 'the baseline to go on',
      );
      await base.stop('SIGKILL');
      events.push(`baseline killed after ${lines(outBase).length} records (${sent} sent)`);
      await sleep(300);
      base = await spawn('-', outBase);
      events.push('baseline restarted');
      await sbRestart;
      await producing;
      await sb.waitFor('drained', 120_000);
      await until(
        async () => (await groupLag(admin, groupId, topic)) === 0,
        () => 'the baseline group to commit the whole topic',
        { timeoutMs: 120_000 },
      );
      await base.stop('SIGTERM');

      const baseIds = lines(outBase);
      const sbIds = lines(outSandbox);
      const count = new Map<string, number>();
      for (const id of [...baseIds, ...sbIds]) count.set(id, (count.get(id) ?? 0) + 1);
      const inBase = new Set(baseIds);
      const crossed = sbIds.filter((id) => inBase.has(id));
      const repeated = [...count].filter(([, n]) => n > 1).length;
      const missing: number[] = [];
      for (let i = 0; i < TOTAL; i++) if (!count.has(String(i))) missing.push(i);
      const report = {
        messages: TOTAL,
        processedRecords: baseIds.length + sbIds.length,
        repeatedAfterCrash: repeated,
        repeatedBySandbox: sbIds.length - new Set(sbIds).size,
        repeatedByBaseline: baseIds.length - inBase.size,
        lost: missing.length,
        processedByBothConsumers: crossed.length,
        events,
      };
      console.log(`kafka crash: ${JSON.stringify(report)}`);
      expect(missing.slice(0, 5)).toEqual([]);
      expect(crossed).toEqual([]);
      // Repeats are bounded by what was in flight (one fetched batch per partition).
      expect(repeated).toBeLessThan(TOTAL / 4);
      // Ownership followed the key: the sandbox processed only its keyed (even) ids.
      expect(sbIds.every((id) => Number(id) % 2 === 0)).toBe(true);
    } finally {
      clearInterval(heartbeat);
      await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    }
  }, 240_000);
});
