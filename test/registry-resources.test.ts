import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRegistrySource } from '@branchline/core/transport';
import { createRegistryServer, type ResourceHook } from '@branchline/registry';
import { until } from '@branchline/test-utils';
import { CLI_BIN, startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, describe, expect, it } from 'vitest';

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const dir = mkdtempSync(join(tmpdir(), 'branchline-registry-res-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('resource hooks', () => {
  it('provision reports progress and stores private outputs; a failing deprovision is reported, retried, and the sandbox stops routing at deletion', async () => {
    const calls: string[] = [];
    let failDeprovision = true;
    const hook: ResourceHook = {
      type: 'test-db',
      validate(spec) {
        if (typeof spec.from !== 'string') throw new Error('spec.from must name the template database');
      },
      async provision(ctx) {
        calls.push(`provision ${ctx.sandbox.name}/${ctx.resource.name}`);
        ctx.report({ phase: 'copying', done: 1, total: 2, unit: 'tables' });
        await new Promise((r) => setTimeout(r, 300));
        return { url: `postgres://db/${ctx.sandbox.name}` };
      },
      async deprovision(ctx) {
        calls.push(`deprovision ${ctx.sandbox.name}/${ctx.resource.name} ${ctx.outputs?.url}`);
        if (failDeprovision) throw new Error('database is being accessed by other users');
      },
    };
    const deleted: string[] = [];
    const server = createRegistryServer({
      store: join(dir, 'res.db'),
      resourceHooks: [hook],
      retryIntervalMs: 300,
      deleteWaitMs: 2000,
      log: () => undefined,
    });
    server.onSandboxDeleted((s, reason) => {
      deleted.push(`${s.name}:${reason}`);
    });
    const url = await server.listen(0);
    const src = createRegistrySource({ registry: url });
    try {
      await src.ready(5000);
      const put = (body: unknown) =>
        fetch(`${url}/v1/sandboxes/with-db`, {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      const invalid = await put({ resources: { db: { type: 'test-db', spec: {} } } });
      expect(invalid.status).toBe(400);
      expect(((await invalid.json()) as Json).message).toBe(
        'resources.db.spec: spec.from must name the template database',
      );
      expect((await put({ resources: { db: { type: 'nope' } } })).status).toBe(400);
      const res = await put({
        overrides: { orders: { http: 'http://127.0.0.1:4090' } },
        resources: { db: { type: 'test-db', spec: { from: 'orders' } } },
      });
      expect(res.status).toBe(201);
      const { sandboxToken } = (await res.json()) as Json;
      await until(() => src.table?.sandbox('with-db')?.resources, 'sandbox');
      const ready = await until(async () => {
        const s = (await (await fetch(`${url}/v1/sandboxes/with-db`)).json()) as Json;
        return s.status === 'ready' ? s : undefined;
      }, 'provisioned');
      expect(ready.resources.db).toMatchObject({ status: 'ready', progress: { done: 1, total: 2 } });
      expect(JSON.stringify(ready)).not.toContain('postgres://db/');
      const outputs = await fetch(`${url}/v1/sandboxes/with-db/resources/db`, {
        headers: { authorization: `Bearer ${sandboxToken}` },
      });
      expect(((await outputs.json()) as Json).outputs).toEqual({ url: 'postgres://db/with-db' });

      const del = await fetch(`${url}/v1/sandboxes/with-db`, { method: 'DELETE' });
      expect(del.status).toBe(202);
      const body = (await del.json()) as Json;
      expect(body.failed).toEqual([{ resource: 'db', error: 'database is being accessed by other users' }]);
      expect(body.deleted.deletedAt).toBeTypeOf('number');
      expect(body.deleted.history.orders[0].to).toBe(body.deleted.deletedAt);
      await until(() => !src.table?.resolve('orders', 'with-db'), 'rule gone');
      expect(deleted).toEqual(['with-db:api']);

      failDeprovision = false;
      await until(async () => {
        const s = (await (await fetch(`${url}/v1/sandboxes/with-db?deleted=true`)).json()) as Json;
        return s.status === 'deleted';
      }, 'retry to succeed');
      expect(calls.filter((c) => c.startsWith('deprovision')).length).toBeGreaterThanOrEqual(2);
      expect(calls.every((c) => !c.startsWith('deprovision') || c.endsWith('postgres://db/with-db'))).toBe(
        true,
      );
    } finally {
      await src.close();
      await server.close();
    }
  });

  it('branchline registry --plugin loads resource hooks and onSandboxDeleted listeners; sandbox create --wait shows progress until ready', async () => {
    const log = join(dir, 'plugin.log');
    const plugin = join(dir, 'plugin.mjs');
    writeFileSync(
      plugin,
      `import { appendFileSync } from 'node:fs';
const note = (s) => appendFileSync(${JSON.stringify(log)}, s + '\\n');
export const resourceHooks = [{
  type: 'queue',
  async provision(ctx) {
    note('provision ' + ctx.sandbox.name + ' ' + ctx.resource.name);
    ctx.report({ phase: 'declaring', done: 0, total: 1, unit: 'queues' });
    await new Promise((r) => setTimeout(r, 1000));
    return { name: 'q-' + ctx.sandbox.key };
  },
  async deprovision(ctx) { note('deprovision ' + ctx.outputs.name); },
}];
export function setup(server) { server.onSandboxDeleted((s, reason) => note('deleted ' + s.name + ' ' + reason)); }
`,
    );
    const { proc, url } = await startRegistryProcess({
      args: ['--store', join(dir, 'plugin.db'), '--plugin', plugin],
    });
    try {
      const created = await new Promise<{ code: number; stdout: string; stderr: string }>((done) =>
        execFile(
          process.execPath,
          [CLI_BIN, 'sandbox', 'create', 'plug', '--resource', 'inbox=queue', '--wait', '--registry', url],
          (err, stdout, stderr) =>
            done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        ),
      );
      expect(created.code).toBe(0);
      expect(created.stdout).toContain('sandbox plug is ready');
      expect(created.stderr).toMatch(/waiting for plug: inbox: (pending|provisioning)/);
      await until(
        async () => ((await (await fetch(`${url}/v1/sandboxes/plug`)).json()) as Json).status === 'ready',
        'ready',
      );
      expect((await fetch(`${url}/v1/sandboxes/plug`, { method: 'DELETE' })).status).toBe(200);
      expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual([
        'provision plug inbox',
        'deleted plug api',
        'deprovision q-plug',
      ]);
    } finally {
      await proc.stop();
    }
  });
});
