import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRegistrySource, type RegistryRouteSource } from '@branchline/core/transport';
import { createRegistryServer, PostgresStore, type RegistryServer } from '@branchline/registry';
import { until } from '@branchline/test-utils';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const root = resolve(import.meta.dirname, '..');
const database = `branchline_registry_${randomBytes(4).toString('hex')}`;
const storeUrl = `postgres://postgres@127.0.0.1:5432/${database}`;
const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/postgres' });
const procs: RunningProcess[] = [];
const HOOK_SECRET = 'pg-webhook-secret-0123456789';
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
  const { proc, url } = await startRegistryProcess({
    args: ['--store', storeUrl, '--heartbeat-interval', '200ms', '--github-webhook-secret', HOOK_SECRET],
  });
  procs.push(proc);
  return url;
}

async function put(url: string, name: string, port: number) {
  const res = await fetch(`${url}/v1/sandboxes/${name}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ overrides: { payments: { http: `http://127.0.0.1:${port}` } } }),
  });
  expect(res.status).toBeLessThan(300);
  return (await res.json()) as Json;
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
    const onB = createRegistrySource({ registry: b });
    const onA = createRegistrySource({ registry: a });
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
    const onB = createRegistrySource({ registry: b });
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

describe('GitHub webhook deliveries on PostgreSQL replicas', () => {
  let a: string;
  let b: string;
  beforeAll(async () => {
    [a, b] = await Promise.all([replica(), replica()]);
  });

  const label = (url: string, name: string, pr: string) =>
    fetch(`${url}/v1/sandboxes/${name}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ labels: { pr } }),
    });
  const deliver = (url: string, id: string, pr: number) => {
    const body = JSON.stringify({
      action: 'closed',
      number: pr,
      pull_request: { number: pr, merged: false },
    });
    return fetch(`${url}/v1/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'pull_request',
        'x-github-delivery': id,
        'x-hub-signature-256': `sha256=${createHmac('sha256', HOOK_SECRET).update(body).digest('hex')}`,
      },
      body,
    });
  };

  it('a delivery processed through replica A is refused by replica B, so its replay deletes nothing there', async () => {
    expect((await label(a, 'pr-31', '31')).status).toBe(201);
    const id = randomUUID();
    const first = await deliver(a, id, 31);
    expect(first.status).toBe(200);
    expect(((await first.json()) as Json).deleted).toEqual(['pr-31']);
    expect((await label(b, 'pr-31', '31')).status).toBe(201);
    const replay = await deliver(b, id, 31);
    expect(replay.status).toBe(409);
    expect(((await replay.json()) as Json).error).toBe('duplicate_delivery');
    expect((await fetch(`${a}/v1/sandboxes/pr-31`)).status).toBe(200);
  });

  it('the same delivery sent to both replicas at once is processed by exactly one of them', async () => {
    await label(a, 'pr-32', '32');
    const id = randomUUID();
    const answers = await Promise.all([deliver(a, id, 32), deliver(b, id, 32)]);
    expect(answers.map((r) => r.status).sort()).toEqual([200, 409]);
  });
});

describe('resource provisioning on PostgreSQL replicas', () => {
  const db2 = `${database}_claims`;
  const url2 = `postgres://postgres@127.0.0.1:5432/${db2}`;
  const dir = mkdtempSync(join(tmpdir(), 'branchline-claims-'));
  const servers: RegistryServer[] = [];
  beforeAll(async () => {
    await admin.query(`CREATE DATABASE ${db2}`);
  });
  afterAll(async () => {
    for (const s of servers) await s.close();
    await admin.query(`DROP DATABASE IF EXISTS ${db2} WITH (FORCE)`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a replica killed mid-provisioning: another one resumes it once the claim runs out, and only one runs the hook', async () => {
    // Replica A provisions forever (until it is killed with SIGKILL: no clean shutdown).
    const script = join(dir, 'stuck-replica.mjs');
    writeFileSync(
      script,
      `import { createRegistryServer } from ${JSON.stringify(join(root, 'packages/registry/dist/index.js'))};
const server = createRegistryServer({
  store: ${JSON.stringify(url2)},
  provisionClaimMs: 1500,
  retryIntervalMs: 200,
  log: () => {},
  resourceHooks: [{ type: 'slowdb', provision: (ctx) => { ctx.report({ phase: 'copying' }); return new Promise(() => {}); } }],
});
console.log('listening on', await server.listen(Number(process.argv[2])));
`,
    );
    const port = await freePort();
    const stuck = startNode(script, [String(port)]);
    procs.push(stuck);
    await stuck.waitFor('listening on', 30_000);
    const a = `http://127.0.0.1:${port}`;
    const created = await fetch(`${a}/v1/sandboxes/resumed`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ resources: { db: { type: 'slowdb', spec: {} } } }),
    });
    expect(created.status).toBe(201);
    const status = async (url: string) =>
      ((await (await fetch(`${url}/v1/sandboxes/resumed`)).json()) as Json).resources.db.status;
    await until(async () => (await status(a)) === 'provisioning', 'A to start provisioning');
    await stuck.stop('SIGKILL');
    const killedAt = Date.now();

    // Two replicas with a working hook start right away; A's claim is still valid for a while.
    const calls: { replica: string; at: number }[] = [];
    const replica = async (name: string) => {
      const server = createRegistryServer({
        store: url2,
        provisionClaimMs: 1500,
        retryIntervalMs: 200,
        log: () => {},
        resourceHooks: [
          {
            type: 'slowdb',
            async provision(ctx) {
              calls.push({ replica: name, at: Date.now() });
              await new Promise((r) => setTimeout(r, 300));
              return { dsn: `postgres://${ctx.sandbox.key}` };
            },
          },
        ],
      });
      servers.push(server);
      return server.listen(0);
    };
    const [b, c] = await Promise.all([replica('b'), replica('c')]);
    await until(async () => (await status(b)) === 'ready', 'the provisioning to be resumed', {
      timeoutMs: 20_000,
    });
    expect(await status(c)).toBe('ready');
    expect(calls).toHaveLength(1);
    // Not before A's claim ran out (it was renewed at most 500 ms before the kill).
    expect(calls[0]!.at - killedAt).toBeGreaterThan(700);
    const resource = (await (await fetch(`${b}/v1/sandboxes/resumed/resources/db`)).json()) as Json;
    expect(resource.outputs).toEqual({ dsn: 'postgres://resumed' });
    // A replica runs the hook only while it holds the sandbox's provisioning claim in the store,
    // and gives the claim up once the hook has returned. Taking the claim ourselves, through the
    // store's own claim, waits out any run still under way and shuts out any later one: after
    // that no further call can arrive.
    const store = new PostgresStore(url2);
    try {
      const loaded = await store.open(0);
      const id = loaded.sandboxes.find((x) => x.name === 'resumed')!.id;
      await until(() => store.claim(`provision:${id}`, 'the test', 3_600_000), 'the provisioning claim');
    } finally {
      await store.close();
    }
    expect(calls).toHaveLength(1);
  });
});
