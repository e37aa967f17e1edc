import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { createRegistrySource, type RegistryRouteSource } from '@branchline/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const database = `branchline_registry_${randomBytes(4).toString('hex')}`;
const storeUrl = `postgres://postgres@127.0.0.1:5432/${database}`;
const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
const procs: RunningProcess[] = [];
const sources: RegistryRouteSource[] = [];

beforeAll(async () => {
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
});
afterAll(async () => {
  for (const s of sources) await s.close();
  for (const p of procs) await p.stop();
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.end();
});

async function replica() {
  const port = await freePort();
  const proc = startNode(BIN, [
    'registry',
    '--port',
    String(port),
    '--store',
    storeUrl,
    '--heartbeat-interval',
    '200ms',
  ]);
  procs.push(proc);
  await proc.waitFor('listening on', 30_000);
  return `http://127.0.0.1:${port}`;
}

async function put(url: string, name: string, port: number) {
  const res = await fetch(`${url}/v1/sandboxes/${name}`, {
    method: 'PUT',
    body: JSON.stringify({ overrides: { payments: { http: `http://127.0.0.1:${port}` } } }),
  });
  expect(res.status).toBeLessThan(300);
  return (await res.json()) as Json;
}

async function until<T>(fn: () => T, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Frame {
  event: string;
  data: { revision: number; time?: number; completeUntil?: number };
}

/** Reads replica `url`'s raw watch stream into `frames` until aborted. */
function record(url: string, frames: Frame[]): AbortController {
  const ctl = new AbortController();
  (async () => {
    const res = await fetch(`${url}/v1/watch`, { signal: ctl.signal });
    const dec = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += dec.decode(chunk, { stream: true });
      let end = buf.indexOf('\n\n');
      while (end >= 0) {
        const f = buf.slice(0, end);
        buf = buf.slice(end + 2);
        end = buf.indexOf('\n\n');
        const event = /^event: (.*)$/m.exec(f)?.[1];
        const data = /^data: (.*)$/m.exec(f)?.[1];
        if (event && data) frames.push({ event, data: JSON.parse(data) });
      }
    }
  })().catch(() => undefined);
  return ctl;
}

describe('registry replicas on one PostgreSQL database', () => {
  let a: string;
  let b: string;
  beforeAll(async () => {
    [a, b] = await Promise.all([replica(), replica()]);
  });

  it('a watcher on replica B sees a write made through replica A, and the other way round', async () => {
    const onB = createRegistrySource({ url: b });
    const onA = createRegistrySource({ url: a });
    sources.push(onA, onB);
    await Promise.all([onA.ready(10_000), onB.ready(10_000)]);
    await put(a, 'via-a', 5001);
    await until(() => onB.table?.resolve('payments', 'via-a'), 'B to see the write through A');
    await fetch(`${b}/v1/sandboxes/via-a`, { method: 'DELETE' });
    await until(() => !onA.table?.resolve('payments', 'via-a'), 'A to see the delete through B');
    const rulesOnA = (await (await fetch(`${a}/v1/rules?key=via-a`)).json()) as Json;
    expect(rulesOnA.rules).toEqual([]);
    expect([onA.status.reconnects, onB.status.reconnects]).toEqual([0, 0]);
  });

  it('concurrent writes through both replicas get gap-free shared revisions, and no change is older than a completeUntil already announced', async () => {
    const frames: Frame[] = [];
    const ctl = record(b, frames);
    await until(() => frames.some((f) => f.event === 'synced'), 'synced');
    const start = frames.find((f) => f.event === 'synced')!.data.revision;
    await Promise.all(Array.from({ length: 24 }, (_, i) => put(i % 2 ? a : b, `c-${i}`, 5100 + i)));
    await until(() => frames.filter((f) => f.event === 'add').length === 24, 'all 24 adds on B');
    await until(() => frames.filter((f) => f.event === 'heartbeat').length >= 3, 'heartbeats');
    ctl.abort();
    const adds = frames.filter((f) => f.event === 'add');
    expect(adds.map((f) => f.data.revision)).toEqual(Array.from({ length: 24 }, (_, i) => start + i + 1));
    let complete = Number.NEGATIVE_INFINITY;
    for (const f of frames) {
      if (f.event === 'heartbeat') complete = Math.max(complete, f.data.completeUntil!);
      if (f.event === 'add') expect(f.data.time!).toBeGreaterThanOrEqual(complete);
    }
    const listA = (await (await fetch(`${a}/v1/sandboxes`)).json()) as Json;
    const listB = (await (await fetch(`${b}/v1/sandboxes`)).json()) as Json;
    expect(listA.sandboxes.map((s: { name: string }) => s.name).sort()).toEqual(
      listB.sandboxes.map((s: { name: string }) => s.name).sort(),
    );
  });

  it('history written through A lets a consumer following B decide by message time once completeUntil passes it', async () => {
    const onB = createRegistrySource({ url: b });
    sources.push(onB);
    await onB.ready(10_000);
    const s = await put(a, 'timed', 5200);
    const t = await until(
      () => (onB.table && onB.table.completeUntil > s.createdAt ? onB.table : undefined),
      'completeUntil past the write',
    );
    expect(t.owner('payments', 'timed', s.createdAt - 1)).toBeUndefined();
    expect(t.owner('payments', 'timed', s.createdAt)).toBe('timed');
  });
});
