import { setLogger } from '@branchline/core';
import { describe, expect, it } from 'vitest';
import {
  buildFork,
  checkForkSpec,
  type Deployment,
  type ForkInput,
  forkEndpoints,
  forkName,
  forkSelector,
  forkSpecJsonSchema,
  kubernetesForkHook,
  parseForkSpec,
  type Service,
  sandboxDeploymentName,
} from '../src/index.js';
import { shopBaseline } from './fake-kubernetes.js';
import { schemaProblems } from './schema.js';

const NS = ['shop'];

function input(spec: Record<string, unknown>, extra: Partial<ForkInput> = {}): ForkInput {
  const { deployment, service } = shopBaseline();
  return {
    sandbox: { name: 'pr-42' },
    resource: 'orders',
    spec: parseForkSpec(spec, NS),
    baseline: deployment,
    services: [service],
    instance: 'default',
    ...extra,
  };
}

const orders = { deployment: 'orders', image: 'ghcr.io/acme/orders:pr-42', container: 'orders' };
const env = (d: Deployment, container = 'orders') =>
  d.spec!.template!.spec!.containers.find((c) => c.name === container)!.env!;
const envValue = (d: Deployment, name: string) => env(d).find((e) => e.name === name);

/** Does a label selector pick a pod with these labels? */
const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>) =>
  !!selector &&
  Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels[k] === v);

describe('buildFork', () => {
  it("runs the new image in the chosen container with the sandbox's identity, keeping the rest of the baseline", async () => {
    const fork = buildFork(input({ ...orders, env: { LOG_LEVEL: 'debug', FEATURE_NEW_FEES: 'on' } }));
    expect(fork.name).toBe('orders-pr-42');
    expect(fork.service).toBe('orders');
    const d = fork.deployment;
    const [main, sidecar] = d.spec!.template!.spec!.containers;
    expect(main!.image).toBe('ghcr.io/acme/orders:pr-42');
    expect(sidecar).toEqual({ name: 'log-shipper', image: 'fluent/fluent-bit:3.0' });
    expect(d.spec!.replicas).toBe(1);
    expect(d.spec!.template!.spec!.serviceAccountName).toBe('orders');
    expect(main!.readinessProbe).toEqual({ httpGet: { path: '/healthz', port: 'http' } });
    expect(env(d).map((e) => e.name)).toEqual([
      'BRANCHLINE_POD_IP',
      'BRANCHLINE_SANDBOX',
      'BRANCHLINE_SERVICE',
      'BRANCHLINE_ANNOUNCE_HTTP',
      'BRANCHLINE_REGISTRY',
      'BRANCHLINE_TOKEN',
      'DATABASE_URL',
      'LOG_LEVEL',
      'FEATURE_NEW_FEES',
    ]);
    expect(envValue(d, 'BRANCHLINE_SANDBOX')).toEqual({ name: 'BRANCHLINE_SANDBOX', value: 'pr-42' });
    // The pod announces its own address, from the downward API, defined before it is used.
    expect(envValue(d, 'BRANCHLINE_POD_IP')?.valueFrom).toEqual({ fieldRef: { fieldPath: 'status.podIP' } });
    expect(envValue(d, 'BRANCHLINE_ANNOUNCE_HTTP')?.value).toBe('http://$(BRANCHLINE_POD_IP):8080');
    // Without hook options the baseline's registry and token are kept; user overrides replace values.
    expect(envValue(d, 'BRANCHLINE_REGISTRY')?.value).toBe('http://branchline-registry.branchline.svc:7070');
    expect(envValue(d, 'BRANCHLINE_TOKEN')?.valueFrom?.secretKeyRef?.name).toBe('branchline-service-token');
    expect(envValue(d, 'LOG_LEVEL')?.value).toBe('debug');
    expect(envValue(d, 'FEATURE_NEW_FEES')?.value).toBe('on');
    expect(d.metadata!.annotations).toEqual({ 'branchline.dev/fork-of': 'shop/orders' });
    expect(await schemaProblems(d)).toEqual([]);
    expect(await schemaProblems(fork.kubeService)).toEqual([]);
  });

  it("the fork's pods are selected by its own Service and by none of the baseline's selectors", () => {
    const { service } = shopBaseline();
    const byTier: Service = {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'backend', namespace: 'shop' },
      spec: { selector: { tier: 'backend' }, ports: [{ port: 80 }] },
    };
    const fork = buildFork(input(orders, { services: [service, byTier] }));
    const pod = fork.deployment.spec!.template!.metadata!.labels!;
    expect(pod).toEqual({
      team: 'checkout',
      'app.kubernetes.io/managed-by': 'branchline',
      'branchline.dev/instance': 'default',
      'branchline.dev/sandbox': 'pr-42',
      'branchline.dev/resource': 'orders',
    });
    const baseline = shopBaseline().deployment;
    expect(selects(baseline.spec!.selector.matchLabels, pod)).toBe(false);
    expect(selects(service.spec!.selector, pod)).toBe(false);
    expect(selects(byTier.spec!.selector, pod)).toBe(false);
    expect(selects(fork.kubeService.spec!.selector, pod)).toBe(true);
    expect(selects(fork.deployment.spec!.selector.matchLabels, pod)).toBe(true);
    // The Deployment and Service carry only Branchline's labels (a GitOps tool's would claim them).
    expect(fork.deployment.metadata!.labels).not.toHaveProperty('app.kubernetes.io/instance');
  });

  it("exposes every container port on the fork's Service and reports its in-cluster endpoint", () => {
    const fork = buildFork(input(orders));
    expect(fork.kubeService.spec!.ports).toEqual([
      { name: 'http', port: 8080, targetPort: 8080, protocol: 'TCP' },
      { name: 'metrics', port: 9090, targetPort: 9090, protocol: 'TCP' },
    ]);
    expect(fork.endpoints).toEqual({ http: 'http://orders-pr-42.shop.svc.cluster.local:8080' });
  });

  it('sets the registry and token the hook is configured with, replacing the baseline ones', () => {
    const fork = buildFork(
      input(orders, {
        registry: 'http://branchline-registry.branchline:7070',
        tokenSecret: { name: 'branchline-workload-token' },
      }),
    );
    const d = fork.deployment;
    expect(env(d).filter((e) => e.name === 'BRANCHLINE_TOKEN')).toEqual([
      {
        name: 'BRANCHLINE_TOKEN',
        valueFrom: { secretKeyRef: { name: 'branchline-workload-token', key: 'token' } },
      },
    ]);
    expect(env(d).filter((e) => e.name === 'BRANCHLINE_REGISTRY')).toEqual([
      { name: 'BRANCHLINE_REGISTRY', value: 'http://branchline-registry.branchline:7070' },
    ]);
  });

  it('with register "declared" sets no announcement variables; forkEndpoints gives the same URL without a cluster', () => {
    const spec = { ...orders, register: 'declared', service: 'orders', http: 8080 };
    const fork = buildFork(input(spec));
    expect(envValue(fork.deployment, 'BRANCHLINE_ANNOUNCE_HTTP')).toBeUndefined();
    expect(forkEndpoints('pr-42', spec, { namespaces: NS })).toEqual({
      service: 'orders',
      endpoint: { http: fork.endpoints.http },
    });
  });

  it('names forks as DNS labels even for long or digit-first names', async () => {
    expect(sandboxDeploymentName('orders', 'pr-42')).toBe('orders-pr-42');
    const long = sandboxDeploymentName(
      'a-very-long-deployment-name-for-the-orders-service',
      'pr-12345-some-feature',
    );
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^[a-z]([-a-z0-9]*[a-z0-9])?$/);
    expect(long).not.toBe(
      sandboxDeploymentName('a-very-long-deployment-name-for-the-orders-service', 'pr-12345-some-featur'),
    );
    expect(sandboxDeploymentName('3d-render', 'pr-1')).toMatch(/^bl-3d-render-pr-1-[0-9a-f]{8}$/);
    expect(sandboxDeploymentName('orders.v2', 'pr-1')).toMatch(/^orders-v2-pr-1-[0-9a-f]{8}$/);
    const fork = buildFork(
      input({ ...orders }, { sandbox: { name: 'pr-12345-a-rather-long-sandbox-name-for-a-feature' } }),
    );
    expect(await schemaProblems(fork.kubeService)).toEqual([]);
    expect(forkSelector('default', 'pr-42')).toBe(
      'app.kubernetes.io/managed-by=branchline,branchline.dev/instance=default,branchline.dev/sandbox=pr-42',
    );
  });

  it.each([
    [
      { deployment: 'orders', image: 'x:1' },
      'has 2 containers (orders, log-shipper); say which one runs the new image with spec.container',
    ],
    [
      { ...orders, container: 'web' },
      'has no container "web" (it has orders, log-shipper); fix spec.container',
    ],
  ])('explains a spec that does not fit the baseline: %j', (spec, message) => {
    expect(() => buildFork(input(spec))).toThrow(message);
  });

  it('asks for spec.http when it cannot tell which port serves requests', () => {
    const { deployment } = shopBaseline();
    deployment.spec!.template!.spec!.containers[0]!.ports = [
      { name: 'web', containerPort: 8080 },
      { name: 'admin', containerPort: 8081 },
    ];
    expect(() => buildFork(input(orders, { baseline: deployment }))).toThrow(
      'cannot tell which port of container orders in Deployment shop/orders serves HTTP or gRPC (its ports: web=8080, admin=8081); set spec.http or spec.grpc',
    );
    const fork = buildFork(input({ ...orders, http: 8081 }, { baseline: deployment }));
    expect(fork.ports).toEqual({ http: 8081, grpc: undefined });
  });
});

describe('parseForkSpec (the PUT-time check)', () => {
  it.each([
    [{ image: 'x:1' }, 'spec.deployment must name the baseline Deployment, e.g. "orders" (got undefined)'],
    [{ deployment: 'orders' }, 'spec.image must be an image reference'],
    [
      { ...orders, namespace: 'kube-system' },
      'spec.namespace "kube-system" is not one this registry may create forks in (shop)',
    ],
    [
      { ...orders, env: { BRANCHLINE_SANDBOX: 'other' } },
      'spec.env.BRANCHLINE_SANDBOX is set by the fork itself',
    ],
    [{ ...orders, env: { PORT: 8080 } }, 'spec.env.PORT must be a string (got 8080); quote numbers'],
    [{ ...orders, replicas: 0 }, 'spec.replicas must be a whole number from 1 to 20 (got 0)'],
    [{ ...orders, register: 'declared' }, 'spec.register "declared" needs spec.service'],
    [
      { ...orders, register: 'declared', service: 'orders' },
      'spec.register "declared" needs spec.http or spec.grpc',
    ],
    [{ ...orders, imag: 'typo' }, 'spec.imag is not a field of a fork'],
    [{ ...orders, http: '8080' }, 'spec.http must be a container port number such as 8080 (got "8080")'],
  ])('refuses %j', (spec, message) => {
    expect(() => parseForkSpec(spec, NS)).toThrow(message);
    const hook = kubernetesForkHook({ namespaces: NS, api: {} as never });
    expect(() => hook.validate(spec)).toThrow(message);
  });

  it('refuses hook options it cannot use, naming them', () => {
    expect(() => kubernetesForkHook({ namespaces: [], api: {} as never })).toThrow(
      'options.namespaces must list the namespaces forks may be created in',
    );
    expect(() => kubernetesForkHook({ namespaces: NS, registry: 'registry:7070', api: {} as never })).toThrow(
      'options.registry="registry:7070" must be the registry\'s http(s) URL',
    );
    // The deprecated name is still read, and checked like the new one.
    expect(() =>
      kubernetesForkHook({ namespaces: NS, registryUrl: 'registry:7070', api: {} as never }),
    ).toThrow('options.registryUrl="registry:7070" must be the registry\'s http(s) URL');
  });

  it('forkName, the deprecated name of sandboxDeploymentName, gives the same name and warns once', () => {
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, error() {}, warn: (msg) => warnings.push(msg) });
    try {
      expect(forkName('orders', 'pr-42')).toBe(sandboxDeploymentName('orders', 'pr-42'));
      expect(forkName('orders', 'pr-43')).toBe('orders-pr-43');
    } finally {
      setLogger(undefined);
    }
    const deprecations = warnings.filter((w) => w.includes('forkName() is deprecated'));
    expect(deprecations).toHaveLength(1);
    expect(deprecations[0]).toMatch(/use sandboxDeploymentName\(\)/);
  });

  it('checkForkSpec checks the fields without the namespace policy; the JSON Schema lists the same fields', () => {
    expect(() => checkForkSpec({ ...orders, namespace: 'anywhere' })).not.toThrow();
    expect(() => checkForkSpec({ ...orders, replicas: 50 })).toThrow(
      'spec.replicas must be a whole number from 1 to 20',
    );
    const fields = Object.keys(forkSpecJsonSchema.properties).sort();
    expect(() => parseForkSpec({ ...orders, unknown: 1 }, NS)).toThrow(
      `the fields are ${[
        'deployment',
        'namespace',
        'image',
        'container',
        'service',
        'env',
        'http',
        'grpc',
        'replicas',
        'register',
      ].join(', ')}`,
    );
    expect(fields).toEqual([
      'container',
      'deployment',
      'env',
      'grpc',
      'http',
      'image',
      'namespace',
      'register',
      'replicas',
      'service',
    ]);
  });
});
