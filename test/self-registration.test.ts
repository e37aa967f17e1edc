import { once } from 'node:events';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRegistrySource, type RegistryRouteSource } from '@branchline/core/transport';
import { uniqueName, until } from '@branchline/test-utils';
import { freePort, type RunningProcess, startNode } from '@branchline/test-utils/processes';
import { registryRequest, startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, describe, expect, it } from 'vitest';

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const root = resolve(import.meta.dirname, '..');
const WORKLOAD = join(root, 'test/fixtures/workload/announcing-service.mjs');
const dir = mkdtempSync(join(tmpdir(), 'branchline-announce-'));
const procs: RunningProcess[] = [];
const sources: RegistryRouteSource[] = [];
afterAll(async () => {
  for (const s of sources) await s.close();
  for (const p of procs) await p.stop('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const suffix = () => uniqueName('x').slice(-6);

async function startRegistry(args: string[] = [], port?: number) {
  const reg = await startRegistryProcess({ args: ['--store', join(dir, `${suffix()}.db`), ...args], port });
  procs.push(reg.proc);
  return reg;
}

function startWorkload(env: Record<string, string>): RunningProcess {
  const proc = startNode(WORKLOAD, [], {
    BRANCHLINE_SERVICE: 'payments',
    BRANCHLINE_LOG_LEVEL: 'info',
    BRANCHLINE_TOKEN: undefined,
    BRANCHLINE_TOKEN_FILE: undefined,
    ...env,
  });
  procs.push(proc);
  return proc;
}

const api = (url: string, method: string, path: string, body?: unknown, token?: string) =>
  registryRequest<Json>(url, method, path, body, token);

function follow(url: string, token?: string): RegistryRouteSource {
  const s = createRegistrySource({ registry: url, token, reconnect: { initialMs: 50, maxMs: 500 } });
  sources.push(s);
  return s;
}

const listening = async (p: RunningProcess) => (await p.waitFor(/@@listening \S+/)).split(' ')[1]!;

describe('announceWorkload against the registry (real processes)', () => {
  it("announces the workload's endpoint, which then routes its service for the sandbox's key", async () => {
    const reg = await startRegistry();
    const name = `sr-${suffix()}`;
    expect((await api(reg.url, 'PUT', `/v1/sandboxes/${name}`, {})).status).toBe(201);
    const src = follow(reg.url);
    await src.ready(5000);
    const w = startWorkload({ BRANCHLINE_SANDBOX: name, BRANCHLINE_REGISTRY: reg.url });
    const url = await listening(w);
    await w.waitFor('@@announced announced');
    const rule = await until(() => src.table?.resolve('payments', name), 'the rule');
    expect(rule.sandbox).toBe(name);
    expect(rule.http).toEqual([url]);
    expect(w.output()).toContain('the registry routes to this workload now');
    const doc = (await api(reg.url, 'GET', `/v1/sandboxes/${name}`)).body as Json;
    expect(doc.announced).toEqual({ payments: { http: [url], grpc: [] } });
    expect(doc.history.payments).toHaveLength(1);
  });

  it('on SIGTERM withdraws the endpoint before the process exits, then exits by the signal as it would without Branchline', async () => {
    const reg = await startRegistry();
    const name = `sr-${suffix()}`;
    await api(reg.url, 'PUT', `/v1/sandboxes/${name}`, {});
    // A long lease: only the withdrawal can remove the endpoint within this test.
    const w = startWorkload({ BRANCHLINE_SANDBOX: name, BRANCHLINE_REGISTRY: reg.url, LEASE_MS: '120000' });
    await w.waitFor('@@announced announced');
    expect((await api(reg.url, 'GET', `/v1/sandboxes/${name}`)).body.overrides.payments).toBeDefined();

    const exited = once(w.child, 'exit');
    w.child.kill('SIGTERM');
    const [code, signal] = await exited;
    // The moment the process is gone, the registry no longer routes to it.
    const doc = (await api(reg.url, 'GET', `/v1/sandboxes/${name}`)).body as Json;
    expect(doc.announced).toEqual({});
    expect(doc.overrides).toEqual({});
    expect(doc.history.payments[0].to).toBeTypeOf('number');
    expect({ code, signal }).toEqual({ code: null, signal: 'SIGTERM' });
    expect(w.output()).toContain('withdrew this workload from the registry');
  });

  it('a workload killed with SIGKILL stops routing when its lease runs out', async () => {
    const reg = await startRegistry();
    const name = `sr-${suffix()}`;
    await api(reg.url, 'PUT', `/v1/sandboxes/${name}`, {});
    const src = follow(reg.url);
    const w = startWorkload({ BRANCHLINE_SANDBOX: name, BRANCHLINE_REGISTRY: reg.url, LEASE_MS: '1500' });
    await w.waitFor('@@announced announced');
    await until(() => src.table?.resolve('payments', name), 'the rule');
    await w.stop('SIGKILL');
    // No withdrawal was possible; the lease (1.5 s, renewed every 0.5 s until the kill) ends it.
    await until(() => src.table && !src.table.resolve('payments', name), 'the rule to expire with the lease');
    const doc = (await api(reg.url, 'GET', `/v1/sandboxes/${name}`)).body as Json;
    expect(doc.announced).toEqual({});
    expect(doc.deletedAt).toBeNull();
  });

  it('reads the token from BRANCHLINE_TOKEN_FILE before every heartbeat, so a rotated token is used without a restart', async () => {
    const admin = `admin-${'x'.repeat(24)}-${suffix()}`;
    const tokens = join(dir, `tokens-${suffix()}`);
    writeFileSync(tokens, `${admin} read,write admin\n`);
    const reg = await startRegistry(['--token-file', tokens]);
    const name = `sr-${suffix()}`;
    const created = await api(reg.url, 'PUT', `/v1/sandboxes/${name}`, {}, admin);
    expect(created.status).toBe(201);
    const sandboxToken = created.body.sandboxToken as string;
    expect(sandboxToken).toBeTypeOf('string');

    const tokenFile = join(dir, `token-${suffix()}`);
    writeFileSync(tokenFile, 'not-the-right-token-0123456789\n');
    const w = startWorkload({
      BRANCHLINE_SANDBOX: name,
      BRANCHLINE_REGISTRY: reg.url,
      BRANCHLINE_TOKEN_FILE: tokenFile,
      // A token in the environment too: the file wins.
      BRANCHLINE_TOKEN: 'also-wrong-token-0123456789',
    });
    await w.waitFor(/the registry refused the token in \S+ \(401/);
    expect((await api(reg.url, 'GET', `/v1/sandboxes/${name}`, undefined, admin)).body.announced).toEqual({});
    expect(w.child.exitCode).toBeNull();

    // Rotate as Kubernetes does for a mounted Secret: the new content replaces the file atomically.
    writeFileSync(`${tokenFile}.new`, `${sandboxToken}\n`);
    renameSync(`${tokenFile}.new`, tokenFile);
    await w.waitFor('@@announced announced');
    const url = await listening(w);
    expect((await api(reg.url, 'GET', `/v1/sandboxes/${name}`, undefined, admin)).body.announced).toEqual({
      payments: { http: [url], grpc: [] },
    });
  });

  it('keeps trying while the registry is away, says so, and announces once it is back', async () => {
    const port = await freePort();
    const name = `sr-${suffix()}`;
    const w = startWorkload({ BRANCHLINE_SANDBOX: name, BRANCHLINE_REGISTRY: `http://127.0.0.1:${port}` });
    await w.waitFor(`cannot reach the registry at http://127.0.0.1:${port} (ECONNREFUSED)`);
    const reg = await startRegistry([], port);
    // Up, but the sandbox does not exist yet: a 404 is retried too.
    await w.waitFor(`the registry has no sandbox ${name} (404)`);
    expect((await api(reg.url, 'PUT', `/v1/sandboxes/${name}`, {})).status).toBe(201);
    await w.waitFor('@@announced announced');
    expect(w.output()).toMatch(/the registry routes to this workload now \(after \d+ failed attempts\)/);
    expect(w.child.exitCode).toBeNull();
    expect((await api(reg.url, 'GET', `/v1/sandboxes/${name}`)).body.announced).toEqual({
      payments: { http: [await listening(w)], grpc: [] },
    });
  });
});
