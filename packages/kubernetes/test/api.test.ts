import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createKubernetesApi,
  KubernetesApiError,
  kubernetesForkHook,
  type ResourceContext,
} from '../src/index.js';
import { serveFakeKubernetes } from './fake-apiserver.js';
import { FakeKubernetes, shopBaseline } from './fake-kubernetes.js';

// The real API module (@kubernetes/client-node) against the in-memory stand-in served on loopback
// over the Kubernetes REST paths: which requests it makes, with what, and what its errors say.
const dir = mkdtempSync(join(tmpdir(), 'branchline-k8s-api-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function start() {
  const fake = new FakeKubernetes();
  const { deployment, service } = shopBaseline();
  fake.seed(deployment);
  fake.seed(service);
  const server = await serveFakeKubernetes(fake);
  const kc = new KubeConfig();
  kc.loadFromFile(server.kubeconfig(join(dir, `kubeconfig-${Math.random()}`), 'registry-sa-token'));
  return { fake, server, api: createKubernetesApi({ kubeConfig: kc }) };
}

const ctx = (): ResourceContext => ({
  sandbox: { name: 'pr-42', key: 'pr-42', labels: {} },
  resource: {
    name: 'orders',
    type: 'kubernetes-fork',
    spec: { deployment: 'orders', container: 'orders', image: 'ghcr.io/acme/orders:pr-42' },
  },
  report: () => undefined,
  signal: new AbortController().signal,
});

describe('createKubernetesApi (@kubernetes/client-node)', () => {
  it('creates and deletes a fork through the Deployment and Service REST paths, with the bearer token', async () => {
    const { fake, server, api } = await start();
    try {
      const hook = kubernetesForkHook({ namespaces: ['shop'], api, pollIntervalMs: 10 });
      const outputs = await hook.provision(ctx());
      const made = fake.get('Deployment', 'shop', 'orders-pr-42')!;
      await hook.deprovision({ ...ctx(), outputs });
      expect(server.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
        'GET /apis/apps/v1/namespaces/shop/deployments/orders',
        'GET /api/v1/namespaces/shop/services',
        'POST /apis/apps/v1/namespaces/shop/deployments',
        'POST /api/v1/namespaces/shop/services',
        'GET /apis/apps/v1/namespaces/shop/deployments/orders-pr-42',
        'GET /api/v1/namespaces/shop/services/orders-pr-42',
        'DELETE /api/v1/namespaces/shop/services/orders-pr-42',
        'GET /apis/apps/v1/namespaces/shop/deployments/orders-pr-42',
        'DELETE /apis/apps/v1/namespaces/shop/deployments/orders-pr-42',
      ]);
      expect(new Set(server.requests.map((r) => r.authorization))).toEqual(
        new Set(['Bearer registry-sa-token']),
      );
      const del = server.requests.at(-1)!;
      expect(del.body).toEqual({
        propagationPolicy: 'Background',
        preconditions: { uid: made.metadata!.uid },
      });
      expect(fake.names('Deployment')).toEqual(['shop/orders']);
      // The sweep's list, with its label selector.
      await hook.sweep([]);
      expect(server.requests.at(-1)!.path).toBe(
        '/apis/apps/v1/namespaces/shop/deployments?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dbranchline%2Cbranchline.dev%2Finstance%3Ddefault',
      );
    } finally {
      await server.close();
    }
  });

  it('turns a refusal into an error naming the call, the object, and the permission to grant', async () => {
    const { fake, server, api } = await start();
    try {
      fake.failWith = new KubernetesApiError(
        403,
        'deployments.apps "orders" is forbidden: User "system:serviceaccount:branchline:branchline-registry" cannot get resource "deployments"',
      );
      const err = await api.readDeployment('shop', 'orders').catch((e) => e);
      expect(err).toBeInstanceOf(KubernetesApiError);
      expect(err.status).toBe(403);
      expect(err.message).toBe(
        'Kubernetes: read Deployment shop/orders failed (403: deployments.apps "orders" is forbidden: User "system:serviceaccount:branchline:branchline-registry" cannot get resource "deployments"); give the registry\'s service account the right to read Deployments in namespace shop (deploy/kubernetes/fork-rbac)',
      );
      fake.failWith = undefined;
      expect(await api.readDeployment('shop', 'payments')).toBeUndefined();
      expect(await api.deleteService('shop', 'payments')).toBe(false);
    } finally {
      await server.close();
    }
    const err = await api.listServices('shop').catch((e) => e);
    expect(err).toBeInstanceOf(KubernetesApiError);
    expect(err.message).toMatch(/^Kubernetes: list Services in shop failed \(no answer: .*ECONNREFUSED/);
  });
});
