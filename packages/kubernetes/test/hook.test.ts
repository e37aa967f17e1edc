import { describe, expect, it } from 'vitest';
import {
  type Deployment,
  KubernetesApiError,
  type KubernetesForkSpec,
  kubernetesForkHook,
  type ResourceContext,
  type ResourceProgress,
} from '../src/index.js';
import { FakeKubernetes, shopBaseline } from './fake-kubernetes.js';

// The hook's sequence of Kubernetes calls, against an in-memory stand-in for its one API module.
// The hook inside a real registry (TTL, webhook, delete): test/kubernetes-fork.test.ts.

function cluster() {
  const fake = new FakeKubernetes();
  const { deployment, service } = shopBaseline();
  fake.seed(deployment);
  fake.seed(service);
  return fake;
}

function context(
  spec: KubernetesForkSpec,
  sandbox = 'pr-42',
): ResourceContext & { progress: ResourceProgress[]; abort: AbortController } {
  const abort = new AbortController();
  const progress: ResourceProgress[] = [];
  return {
    sandbox: { name: sandbox, key: sandbox, labels: { pr: '42' } },
    resource: { name: 'orders', type: 'kubernetes-fork', spec: spec as unknown as Record<string, unknown> },
    report: (p) => progress.push(p),
    signal: abort.signal,
    progress,
    abort,
  };
}

const spec: KubernetesForkSpec = {
  deployment: 'orders',
  container: 'orders',
  image: 'ghcr.io/acme/orders:pr-42',
};
const options = { namespaces: ['shop'], pollIntervalMs: 10 };

describe('kubernetes-fork hook', () => {
  it('reads the baseline, creates the Deployment then its Service owned by it, waits for the rollout, and returns the endpoints', async () => {
    const fake = cluster();
    let reads = 0;
    fake.controller = (d) => {
      reads++;
      const available = reads < 3 ? 0 : 1;
      return {
        observedGeneration: d.metadata?.generation,
        replicas: 1,
        updatedReplicas: 1,
        availableReplicas: available,
      };
    };
    const hook = kubernetesForkHook({ ...options, api: fake });
    const ctx = context(spec);
    const outputs = await hook.provision(ctx);
    expect(fake.calls).toEqual([
      'read Deployment shop/orders',
      'list Service shop',
      'create Deployment shop/orders-pr-42',
      'create Service shop/orders-pr-42',
      'read Deployment shop/orders-pr-42',
      'read Deployment shop/orders-pr-42',
      'read Deployment shop/orders-pr-42',
    ]);
    expect(outputs).toEqual({
      namespace: 'shop',
      name: 'orders-pr-42',
      service: 'orders',
      image: 'ghcr.io/acme/orders:pr-42',
      http: 'http://orders-pr-42.shop.svc.cluster.local:8080',
    });
    const d = fake.get('Deployment', 'shop', 'orders-pr-42')!;
    const svc = fake.get('Service', 'shop', 'orders-pr-42')!;
    expect(svc.metadata!.ownerReferences).toEqual([
      { apiVersion: 'apps/v1', kind: 'Deployment', name: 'orders-pr-42', uid: d.metadata!.uid },
    ]);
    expect(
      ctx.progress.map((p) => `${p.phase}${p.done !== undefined ? ` ${p.done}/${p.total}` : ''}`),
    ).toEqual(['reading', 'creating', 'rollout 0/1', 'rollout 1/1']);
    // The baseline is untouched.
    expect(fake.get('Deployment', 'shop', 'orders')!.spec!.template!.spec!.containers[0]!.image).toBe(
      'ghcr.io/acme/orders:1.8.0',
    );
  });

  it('provisioning again (after a registry crash) replaces its own fork instead of failing', async () => {
    const fake = cluster();
    const hook = kubernetesForkHook({ ...options, api: fake });
    await hook.provision(context(spec));
    const firstUid = fake.get('Deployment', 'shop', 'orders-pr-42')!.metadata!.uid;
    const clusterIP = '10.96.0.42';
    const svc = fake.get('Service', 'shop', 'orders-pr-42')!;
    fake.seed({ ...svc, spec: { ...svc.spec, clusterIP } }); // the API server assigned one
    fake.writes.length = 0;
    await hook.provision(context({ ...spec, image: 'ghcr.io/acme/orders:pr-42-b' }));
    expect(fake.writes).toEqual([
      'create Deployment shop/orders-pr-42',
      'replace Deployment shop/orders-pr-42',
      'create Service shop/orders-pr-42',
      'replace Service shop/orders-pr-42',
    ]);
    const d = fake.get('Deployment', 'shop', 'orders-pr-42')!;
    expect(d.metadata!.uid).toBe(firstUid);
    expect(d.spec!.template!.spec!.containers[0]!.image).toBe('ghcr.io/acme/orders:pr-42-b');
    expect(
      (fake.get('Service', 'shop', 'orders-pr-42') as { spec: { clusterIP: string } }).spec.clusterIP,
    ).toBe(clusterIP);
  });

  it('refuses to take over, and never deletes, a Deployment of the same name that is not its fork', async () => {
    const fake = cluster();
    const { deployment } = shopBaseline();
    fake.seed({ ...deployment, metadata: { ...deployment.metadata, name: 'orders-canary' } });
    const hook = kubernetesForkHook({ ...options, api: fake });
    const ctx = context(spec, 'canary');
    await expect(hook.provision(ctx)).rejects.toThrow(
      "a Deployment shop/orders-canary exists and is not the fork of sandbox canary's resource orders; it is left alone",
    );
    await hook.deprovision(ctx);
    expect(fake.names('Deployment')).toEqual(['shop/orders', 'shop/orders-canary']);
    expect(fake.writes.filter((w) => w.startsWith('delete'))).toEqual([]);
  });

  it('deletes the Service, then the Deployment, and deleting again is harmless', async () => {
    const fake = cluster();
    const hook = kubernetesForkHook({ ...options, api: fake });
    const outputs = await hook.provision(context(spec));
    fake.writes.length = 0;
    await hook.deprovision({ ...context(spec), outputs });
    expect(fake.writes).toEqual(['delete Service shop/orders-pr-42', 'delete Deployment shop/orders-pr-42']);
    expect(fake.names('Deployment')).toEqual(['shop/orders']);
    expect(fake.names('Service')).toEqual(['shop/orders']);
    fake.writes.length = 0;
    await hook.deprovision({ ...context(spec), outputs });
    // Without outputs (provisioning never finished) the names are derived from the spec.
    await hook.deprovision(context(spec));
    expect(fake.writes).toEqual([]);
  });

  it('fails with the reason when the rollout stops progressing, and when it takes too long', async () => {
    const fake = cluster();
    fake.controller = (d: Deployment) => ({
      observedGeneration: d.metadata?.generation,
      replicas: 1,
      unavailableReplicas: 1,
      conditions: [
        {
          type: 'Progressing',
          status: 'False',
          reason: 'ProgressDeadlineExceeded',
          message: 'ReplicaSet "orders-pr-42-5d8f" has timed out progressing.',
        },
      ],
    });
    const hook = kubernetesForkHook({ ...options, api: fake });
    await expect(hook.provision(context(spec))).rejects.toThrow(
      'Deployment shop/orders-pr-42 stopped progressing (0/1 available; Progressing=False (ProgressDeadlineExceeded: ReplicaSet "orders-pr-42-5d8f" has timed out progressing.)); see kubectl -n shop describe deployment orders-pr-42',
    );
    fake.controller = () => ({ replicas: 1, unavailableReplicas: 1 });
    const slow = kubernetesForkHook({ ...options, api: fake, rolloutTimeoutMs: 50 });
    await expect(slow.provision(context(spec))).rejects.toThrow(
      'Deployment shop/orders-pr-42 did not become available within 50 ms (0/1 available)',
    );
  });

  it('stops waiting when the sandbox is deleted while its fork rolls out', async () => {
    const fake = cluster();
    fake.controller = () => ({ replicas: 1 });
    const hook = kubernetesForkHook({ ...options, api: fake, pollIntervalMs: 60_000 });
    const ctx = context(spec);
    const provisioning = hook.provision(ctx);
    setTimeout(() => ctx.abort.abort(), 50);
    await expect(provisioning).rejects.toThrow('stopped waiting for shop/orders-pr-42: the sandbox is going');
  });

  it('says what to fix when the registry may not create Deployments', async () => {
    const fake = cluster();
    const hook = kubernetesForkHook({ ...options, api: fake });
    await expect(hook.provision(context({ ...spec, deployment: 'payments' }))).rejects.toThrow(
      'there is no Deployment shop/payments to fork; check spec.deployment and spec.namespace',
    );
    fake.failWith = new KubernetesApiError(403, 'forbidden');
    await expect(hook.provision(context(spec))).rejects.toThrow('forbidden');
  });

  it("sweeps forks whose sandbox is gone, but not young ones, live ones, or another registry's", async () => {
    const fake = cluster();
    const hook = kubernetesForkHook({ ...options, api: fake });
    const other = kubernetesForkHook({ ...options, api: fake, instance: 'staging-eu' });
    await hook.provision(context(spec, 'pr-1'));
    await hook.provision(context(spec, 'pr-2'));
    await hook.provision(context(spec, 'pr-3'));
    await other.provision(context(spec, 'pr-9'));
    for (const n of ['orders-pr-1', 'orders-pr-2', 'orders-pr-9'])
      for (const kind of ['Deployment', 'Service'] as const) fake.age(kind, 'shop', n, 3_600_000);
    await hook.sweep(['pr-2']);
    // pr-1: orphan, swept. pr-2: live. pr-3: orphan but created a moment ago. pr-9: another registry's.
    expect(fake.names('Deployment')).toEqual([
      'shop/orders',
      'shop/orders-pr-2',
      'shop/orders-pr-3',
      'shop/orders-pr-9',
    ]);
    expect(fake.names('Service')).toEqual([
      'shop/orders',
      'shop/orders-pr-2',
      'shop/orders-pr-3',
      'shop/orders-pr-9',
    ]);
  });
});
