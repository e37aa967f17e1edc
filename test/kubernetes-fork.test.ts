import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Deployment, KUBERNETES_FORK, kubernetesForkHook } from '@branchline/kubernetes';
import { createRegistryServer, type RegistryServer } from '@branchline/registry';
import { until } from '@branchline/test-utils';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FakeKubernetes, shopBaseline } from '../packages/kubernetes/test/fake-kubernetes.js';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

// The kubernetes-fork hook inside a real registry: the sandbox lifecycle (create, delete, TTL,
// pull request closed) drives the fork's Deployment and Service. Kubernetes itself is the
// in-memory stand-in for the hook's one API module (no cluster runs here); every object the hook
// writes is checked against the Kubernetes schema by that stand-in.

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const dir = mkdtempSync(join(tmpdir(), 'branchline-k8s-fork-'));
const WORKLOAD = resolve(import.meta.dirname, 'fixtures/workload/announcing-service.mjs');
const SECRET = 'webhook-secret-for-tests';
const running: { server: RegistryServer }[] = [];
const procs: RunningProcess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await p.stop('SIGKILL');
  for (const r of running.splice(0)) await r.server.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A registry with the fork hook, and a cluster holding the shop's baseline (orders on `httpPort`). */
async function setup(httpPort = 8080) {
  const fake = new FakeKubernetes();
  const { deployment, service } = shopBaseline();
  deployment.spec!.template!.spec!.containers[0]!.ports = [{ name: 'http', containerPort: httpPort }];
  fake.seed(deployment);
  fake.seed(service);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = createRegistryServer({
    store: join(dir, `${Math.random().toString(36).slice(2)}.db`),
    resourceHooks: [
      kubernetesForkHook({
        api: fake,
        namespaces: ['shop'],
        registry: url,
        tokenSecret: { name: 'branchline-workload-token' },
        pollIntervalMs: 20,
      }),
    ],
    githubWebhookSecret: SECRET,
    retryIntervalMs: 300,
    log: () => undefined,
  });
  await server.listen(port, '127.0.0.1');
  running.push({ server });
  const api = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(url + path, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const sandbox = async (name: string) =>
    (await api('GET', `/v1/sandboxes/${name}?deleted=true`)).body as Json;
  return { fake, url, api, sandbox };
}

const fork = (image = 'ghcr.io/acme/orders:pr-42') => ({
  orders: { type: KUBERNETES_FORK, spec: { deployment: 'orders', container: 'orders', image } },
});

/** The environment a pod of `d` would get: $(VAR) expanded, the pod IP and Secrets filled in. */
function podEnv(d: Deployment, podIP: string, secrets: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of d.spec!.template!.spec!.containers[0]!.env ?? []) {
    if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') out[e.name] = podIP;
    else if (e.valueFrom?.secretKeyRef) out[e.name] = secrets[e.valueFrom.secretKeyRef.name ?? ''] ?? '';
    else
      out[e.name] = (e.value ?? '').replace(
        /\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g,
        (m: string, v: string) => out[v] ?? m,
      );
  }
  return out;
}

describe('kubernetes-fork in the registry (sandbox lifecycle)', () => {
  it('creating a sandbox forks the Deployment; a pod with the fork environment announces itself and routes', async () => {
    const httpPort = await freePort();
    const { fake, api, sandbox } = await setup(httpPort);
    const put = await api('PUT', '/v1/sandboxes/pr-42', {
      labels: { pr: '42', repo: 'acme/shop' },
      resources: fork(),
    });
    expect(put.status).toBe(201);
    const ready = await until(async () => {
      const s = await sandbox('pr-42');
      return s.status === 'ready' ? s : undefined;
    }, 'the fork to be ready');
    expect(ready.resources.orders).toMatchObject({ type: 'kubernetes-fork', status: 'ready' });
    expect(fake.names('Deployment')).toEqual(['shop/orders', 'shop/orders-pr-42']);
    expect(fake.names('Service')).toEqual(['shop/orders', 'shop/orders-pr-42']);
    const outputs = await api('GET', '/v1/sandboxes/pr-42/resources/orders', undefined, {
      authorization: `Bearer ${put.body.sandboxToken}`,
    });
    expect(outputs.body.outputs).toEqual({
      namespace: 'shop',
      name: 'orders-pr-42',
      service: 'orders',
      image: 'ghcr.io/acme/orders:pr-42',
      http: `http://orders-pr-42.shop.svc.cluster.local:${httpPort}`,
    });

    // What the kubelet would start: the fork's container with the fork's environment. The token
    // Secret holds the sandbox token here; the pod's IP is loopback.
    const d = fake.get('Deployment', 'shop', 'orders-pr-42') as Deployment;
    const env = podEnv(d, '127.0.0.1', { 'branchline-workload-token': put.body.sandboxToken });
    expect(env).toMatchObject({
      BRANCHLINE_SANDBOX: 'pr-42',
      BRANCHLINE_SERVICE: 'orders',
      BRANCHLINE_ANNOUNCE_HTTP: `http://127.0.0.1:${httpPort}`,
    });
    const pod = startNode(WORKLOAD, [], { ...env, PORT: String(httpPort), BRANCHLINE_LOG_LEVEL: 'info' });
    procs.push(pod);
    await pod.waitFor('@@announced announced');
    expect((await sandbox('pr-42')).overrides).toEqual({ orders: { http: `http://127.0.0.1:${httpPort}` } });
    const rules = await api('GET', '/v1/rules?service=orders&key=pr-42');
    expect(JSON.stringify(rules.body)).toContain(`http://127.0.0.1:${httpPort}`);
  });

  it('deleting the sandbox deletes the Service, then the Deployment', async () => {
    const { fake, api, sandbox } = await setup();
    await api('PUT', '/v1/sandboxes/pr-43', { resources: fork() });
    await until(async () => (await sandbox('pr-43')).status === 'ready', 'ready');
    fake.writes.length = 0;
    const del = await api('DELETE', '/v1/sandboxes/pr-43');
    expect(del.status).toBe(200);
    expect(fake.writes).toEqual(['delete Service shop/orders-pr-43', 'delete Deployment shop/orders-pr-43']);
    expect(fake.names('Deployment')).toEqual(['shop/orders']);
    expect((await sandbox('pr-43')).status).toBe('deleted');
  });

  it('when its TTL runs out the fork goes with the sandbox', async () => {
    const { fake, api, sandbox } = await setup();
    await api('PUT', '/v1/sandboxes/pr-44', { resources: fork(), ttl: '2s' });
    await until(async () => (await sandbox('pr-44')).status === 'ready', 'ready');
    expect(fake.names('Deployment')).toContain('shop/orders-pr-44');
    const gone = await until(async () => {
      const s = await sandbox('pr-44');
      return s.status === 'deleted' ? s : undefined;
    }, 'expiry');
    expect(gone.deleteReason).toBe('expired');
    expect(fake.names('Deployment')).toEqual(['shop/orders']);
    expect(fake.names('Service')).toEqual(['shop/orders']);
  });

  it("closing the pull request (GitHub webhook) deletes that PR's forks and leaves the others", async () => {
    const { fake, api, sandbox } = await setup();
    await api('PUT', '/v1/sandboxes/pr-45', { labels: { pr: '45', repo: 'acme/shop' }, resources: fork() });
    await api('PUT', '/v1/sandboxes/pr-46', { labels: { pr: '46', repo: 'acme/shop' }, resources: fork() });
    await until(async () => (await sandbox('pr-45')).status === 'ready', 'pr-45 ready');
    await until(async () => (await sandbox('pr-46')).status === 'ready', 'pr-46 ready');
    const payload = JSON.stringify({
      action: 'closed',
      number: 45,
      pull_request: { number: 45, merged: false },
      repository: { full_name: 'acme/shop' },
    });
    const res = await api('POST', '/v1/webhooks/github', payload, {
      'x-github-event': 'pull_request',
      'x-github-delivery': randomUUID(),
      'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(payload).digest('hex')}`,
    });
    expect(res.body.deleted).toEqual(['pr-45']);
    await until(async () => (await sandbox('pr-45')).status === 'deleted', 'pr-45 deleted');
    expect(fake.names('Deployment')).toEqual(['shop/orders', 'shop/orders-pr-46']);
  });

  it('refuses a fork spec at PUT time with the field and the fix, and creates nothing', async () => {
    const { fake, api } = await setup();
    const bad = await api('PUT', '/v1/sandboxes/pr-47', {
      resources: {
        orders: { type: KUBERNETES_FORK, spec: { deployment: 'orders', image: 'x:1', namespace: 'prod' } },
      },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toBe(
      'resources.orders.spec: kubernetes-fork: spec.namespace "prod" is not one this registry may create forks in (shop); ask its operator to add it (BRANCHLINE_KUBERNETES_NAMESPACES)',
    );
    expect(fake.writes).toEqual([]);
  });
});
