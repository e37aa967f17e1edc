import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Deployment } from '@branchline/kubernetes';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type FakeApiServer, serveFakeKubernetes } from '../packages/kubernetes/test/fake-apiserver.js';
import { FakeKubernetes, shopBaseline } from '../packages/kubernetes/test/fake-kubernetes.js';
import { codeBlocks, shellCommands } from './helpers/docs.js';
import type { RunningProcess } from './helpers/processes.js';

// docs/kubernetes.md step 6, command for command: `branchline registry --plugin
// @branchline/kubernetes/plugin` configured like deploy/kubernetes' ConfigMap, and the page's
// `branchline sandbox create … --wait` and `delete`. The registry's Kubernetes client
// (@kubernetes/client-node) talks to the in-memory stand-in served over the Kubernetes REST paths
// on loopback (KUBECONFIG); no cluster is involved.

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-k8s-plugin-'));
const procs: RunningProcess[] = [];
let apiServer: FakeApiServer | undefined;
afterAll(async () => {
  for (const p of procs) await p.stop();
  await apiServer?.close();
  rmSync(dir, { recursive: true, force: true });
});

function branchline(args: string[], env: Record<string, string>): Promise<{ code: number; out: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    );
  });
}

/** The page's `branchline` commands, in order, as argument lists (without the leading word). */
function pageCommands(): string[][] {
  return codeBlocks(join(root, 'docs/kubernetes.md'))
    .filter((b) => b.lang === 'sh')
    .flatMap((b) => shellCommands(b.text))
    .filter((c) => c[0] === 'branchline')
    .map((c) => c.slice(1));
}

describe('the kubernetes-fork plugin in `branchline registry` (docs/kubernetes.md, step 6)', () => {
  it('sandbox create --wait forks the Deployment; sandbox delete removes it; a declared fork routes to its Service', async () => {
    const fake = new FakeKubernetes();
    const { deployment, service } = shopBaseline();
    // The page's fork names no container: the orders Deployment here has only its own.
    deployment.spec!.template!.spec!.containers.splice(1);
    fake.seed(deployment);
    fake.seed(service);
    const payments: Deployment = structuredClone(deployment);
    payments.metadata = { name: 'payments', namespace: 'shop' };
    payments.spec!.selector = { matchLabels: { app: 'payments' } };
    payments.spec!.template!.metadata!.labels = { app: 'payments' };
    payments.spec!.template!.spec!.containers = [
      {
        name: 'payments',
        image: 'ghcr.io/acme/payments:3.1.0',
        ports: [{ name: 'http', containerPort: 8080 }],
      },
    ];
    fake.seed(payments);
    apiServer = await serveFakeKubernetes(fake);

    const ci = `ci-token-${'x'.repeat(20)}`;
    writeFileSync(join(dir, 'tokens'), `${ci} read,write ci\n`);
    const configMap = parse(readFileSync(join(root, 'deploy/kubernetes/configmap.yaml'), 'utf8')).data;
    const { proc: registry, url: registryUrl } = await startRegistryProcess({
      args: [
        '--store',
        join(dir, 'registry.db'),
        '--token-file',
        join(dir, 'tokens'),
        '--plugin',
        '@branchline/kubernetes/plugin',
      ],
      env: {
        ...configMap,
        KUBECONFIG: apiServer.kubeconfig(join(dir, 'kubeconfig'), 'registry-service-account-token'),
      },
    });
    procs.push(registry);
    const env = { BRANCHLINE_REGISTRY: registryUrl, BRANCHLINE_TOKEN: ci };

    const [create, del, declared] = pageCommands();
    expect(create!.slice(0, 3)).toEqual(['sandbox', 'create', 'pr-42']);
    expect(del).toEqual(['sandbox', 'delete', 'pr-42']);

    const created = await branchline(create!, env);
    expect(created.out).toContain('sandbox pr-42 is ready');
    expect(created.out).toContain('baggage: branchline=pr-42');
    expect(created.code).toBe(0);
    expect(fake.names('Deployment')).toEqual(['shop/orders', 'shop/orders-pr-42', 'shop/payments']);
    expect(fake.names('Service')).toEqual(['shop/orders', 'shop/orders-pr-42']);
    const fork = fake.get('Deployment', 'shop', 'orders-pr-42') as Deployment;
    const env42 = fork.spec!.template!.spec!.containers[0]!.env!;
    expect(env42.find((e) => e.name === 'BRANCHLINE_TOKEN')!.valueFrom!.secretKeyRef).toEqual({
      name: 'branchline-workload-token',
      key: 'token',
    });
    expect(env42.find((e) => e.name === 'BRANCHLINE_REGISTRY')!.value).toBe(
      configMap.BRANCHLINE_KUBERNETES_REGISTRY_URL,
    );
    expect(new Set(apiServer.requests.map((r) => r.authorization))).toEqual(
      new Set(['Bearer registry-service-account-token']),
    );

    const deleted = await branchline(del!, env);
    expect(deleted.code).toBe(0);
    expect(fake.names('Deployment')).toEqual(['shop/orders', 'shop/payments']);
    expect(fake.names('Service')).toEqual(['shop/orders']);

    const again = await branchline(declared!, env);
    expect(again.code, again.out).toBe(0);
    expect(fake.names('Service')).toEqual(['shop/orders', 'shop/payments-pr-42']);
    const rules = await branchline(['rules', '--service', 'payments', '--key', 'pr-42', '--json'], env);
    expect(rules.out).toContain('http://payments-pr-42.shop.svc.cluster.local:8080');
  });
});
