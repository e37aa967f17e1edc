// `branchline sandbox apply -f` and `sandbox delete -f` against a registry process (with the
// PostgreSQL resource hook on the local server, and a hook that always fails), and against a
// registry with the kubernetes-fork hook (Kubernetes being the hook's in-memory stand-in).
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkForkSpec, forkSpecJsonSchema, kubernetesForkHook } from '@branchline/kubernetes';
import { createRegistryServer } from '@branchline/registry';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeKubernetes, shopBaseline } from '../packages/kubernetes/test/fake-kubernetes.js';
import { admin, cleanup, createBaseline, uniqueNames, withClient } from '../packages/pg/test/helpers.js';
import type { RunningProcess } from './helpers/processes.js';

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-apply-'));
const names = uniqueNames('ap');
let registry: RunningProcess;
let url: string;

type Result = { code: number; stdout: string; stderr: string };

function cli(args: string[], env: Record<string, string> = {}, registryUrl = url): Promise<Result> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, BRANCHLINE_REGISTRY: registryUrl, ...env } },
      (err, stdout, stderr) =>
        done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Writes a spec file into the test's folder; returns its path. */
function spec(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

const get = async (name: string) => {
  const res = await fetch(`${url}/v1/sandboxes/${name}`);
  return res.status === 200 ? ((await res.json()) as Record<string, unknown>) : undefined;
};

beforeAll(async () => {
  await createBaseline(names.baseline, 20);
  ({ proc: registry, url } = await startRegistryProcess({
    args: [
      '--store',
      join(dir, 'apply.db'),
      '--plugin',
      join(root, 'test/fixtures/apply/registry-hooks.mjs'),
    ],
    env: {
      APPLY_TEST_PG_PREFIX: names.prefix,
      APPLY_TEST_PG_SNAPSHOT_PREFIX: names.snapshotPrefix,
      APPLY_TEST_PG_CATALOGUE: names.catalogue,
    },
  }));
}, 60_000);

afterAll(async () => {
  await registry?.stop();
  await cleanup(names);
  rmSync(dir, { recursive: true, force: true });
});

describe('sandbox apply -f', () => {
  it('creates the sandbox the file describes, with variables from the environment, then updates it in place', async () => {
    const file = spec(
      'pr.yaml',
      `# the sandbox of one pull request
name: pr-\${PR_NUMBER}
ttl: 3h
labels:
  pr: \${PR_NUMBER}
  repo: \${GITHUB_REPOSITORY}
  owner: \${OWNER:-nobody}
services:
  payments:
    http: http://127.0.0.1:\${PAYMENTS_PORT}
  stock:
    grpc: [127.0.0.1:50051, 127.0.0.1:50052]
`,
    );
    const env = { PR_NUMBER: '101', GITHUB_REPOSITORY: 'acme/shop', PAYMENTS_PORT: '4101' };
    const created = await cli(['sandbox', 'apply', '-f', file], env);
    expect(created.stderr).toContain('sandbox pr-101: created (key pr-101)');
    expect(created.code).toBe(0);
    expect(created.stdout).toContain('baggage: branchline=pr-101');
    const s = await get('pr-101');
    expect(s).toMatchObject({
      labels: { pr: '101', repo: 'acme/shop', owner: 'nobody' },
      overrides: {
        payments: { http: 'http://127.0.0.1:4101' },
        stock: { grpc: ['127.0.0.1:50051', '127.0.0.1:50052'] },
      },
    });

    // Applying the same file again changes nothing but the TTL.
    const again = await cli(['sandbox', 'apply', '-f', file], env);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('sandbox pr-101: unchanged, ttl renewed');

    // A label someone else put on it stays; a changed endpoint is reported and applied.
    await cli(['sandbox', 'create', 'pr-101', '-s', 'payments=http://127.0.0.1:4101', '-l', 'reviewer=ana']);
    const dry = await cli(['sandbox', 'apply', '-f', file, '--dry-run'], { ...env, PAYMENTS_PORT: '4102' });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('sandbox pr-101 would be updated');
    expect(dry.stdout).toContain('~ service payments → http://127.0.0.1:4102 (was http://127.0.0.1:4101)');
    expect(dry.stdout).toContain('+ service stock → grpc://127.0.0.1:50051,grpc://127.0.0.1:50052');
    expect((await get('pr-101'))?.overrides).toEqual({ payments: { http: 'http://127.0.0.1:4101' } });
    const dryJson = await cli(['sandbox', 'apply', '-f', file, '--dry-run', '--json'], {
      ...env,
      PAYMENTS_PORT: '4102',
    });
    expect(JSON.parse(dryJson.stdout)).toMatchObject({
      name: 'pr-101',
      action: 'update',
      refused: [],
      body: {
        labels: { pr: '101', reviewer: 'ana' },
        overrides: { payments: { http: 'http://127.0.0.1:4102' } },
      },
    });
    const updated = await cli(['sandbox', 'apply', '-f', file, '--json'], { ...env, PAYMENTS_PORT: '4102' });
    expect(updated.code).toBe(0);
    const json = JSON.parse(updated.stdout);
    expect(json).toMatchObject({
      name: 'pr-101',
      key: 'pr-101',
      header: 'baggage: branchline=pr-101',
      labels: { pr: '101', repo: 'acme/shop', owner: 'nobody', reviewer: 'ana' },
    });
    expect(json.overrides.payments).toEqual({ http: 'http://127.0.0.1:4102' });

    // delete -f reads only the name: the variables of the other fields may be gone by then.
    const del = await cli(['sandbox', 'delete', '-f', file], { PR_NUMBER: '101' });
    expect(del).toMatchObject({ code: 0, stdout: 'sandbox pr-101 deleted\n' });
    expect(await get('pr-101')).toBeUndefined();
    expect((await cli(['sandbox', 'delete', '-f', file], { PR_NUMBER: '101' })).code).toBe(3);
    const ignored = await cli(['sandbox', 'delete', '-f', file, '--ignore-not-found'], { PR_NUMBER: '101' });
    expect(ignored).toMatchObject({ code: 0, stdout: 'no sandbox named pr-101; nothing to delete\n' });
  }, 60_000);

  it('names every unset variable and every bad field with its path, exit 2, and sends nothing', async () => {
    const file = spec(
      'bad.yaml',
      `name: pr-\${PR_NUMBER}
labels: { pr: "\${PR_NUMBER}", sha: "\${GITHUB_SHA}" }
services:
  payments: { http: http://127.0.0.1:1 }
`,
    );
    const unset = await cli(['sandbox', 'apply', '-f', file], { PR_NUMBER: '', GITHUB_SHA: '' });
    expect(unset.code).toBe(2);
    expect(unset.stderr).toContain('the environment variable PR_NUMBER is not set');
    expect(unset.stderr).toContain('name, labels.pr: the environment variable PR_NUMBER');
    expect(unset.stderr).toContain('labels.sha: the environment variable GITHUB_SHA is not set');

    const invalid = spec(
      'invalid.yaml',
      `name: PR_7
ttl: soon
services:
  payments: { http: "ftp://x" }
  orders: { kubernetes: { deployment: orders } }
  stock: { http: http://127.0.0.1:1, kubernetes: { deployment: stock, image: x } }
groups: [Checkout]
colour: blue
`,
    );
    const r = await cli(['sandbox', 'apply', '-f', invalid]);
    expect(r.code).toBe(2);
    for (const text of [
      `${invalid} is not a valid sandbox spec`,
      'colour: not a field of a sandbox spec',
      'name: must be a sandbox name',
      'ttl: must be a duration',
      'services.payments.http: must be an absolute http(s) URL',
      'services.orders.kubernetes.image: required',
      'services.stock: a Kubernetes fork gets its endpoint from the fork; leave out http',
      'groups.0: must be a route group name',
    ])
      expect(r.stderr).toContain(text);
    expect(await get('pr-7')).toBeUndefined();

    // -f - reads the spec from stdin.
    const fromStdin = await new Promise<Result>((done) => {
      const child = execFile(
        process.execPath,
        [BIN, 'sandbox', 'apply', '-f', '-', '--dry-run'],
        { env: { ...process.env, BRANCHLINE_REGISTRY: url } },
        (err, stdout, stderr) =>
          done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin?.end('{"name": "pr-stdin", "services": {"payments": {"http": "http://127.0.0.1:1"}}}');
    });
    expect(fromStdin).toMatchObject({ code: 0 });
    expect(fromStdin.stdout).toContain('sandbox pr-stdin would be created');

    const yaml = spec('broken.yaml', 'name: [unclosed\n');
    const broken = await cli(['sandbox', 'apply', '-f', yaml]);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toContain(`${yaml} is not valid YAML or JSON`);
    const missing = await cli(['sandbox', 'apply', '-f', join(dir, 'nope.yaml')]);
    expect(missing).toMatchObject({ code: 2 });
    expect(missing.stderr).toContain('nope.yaml: cannot read it (no such file)');
  });

  it('--wait waits for the database copy; a failing resource fails with its error message (exit 7)', async () => {
    const file = spec(
      'db.json',
      JSON.stringify({
        name: 'pr-102',
        labels: { pr: '102' },
        services: { orders: { http: 'http://127.0.0.1:4202' } },
        databases: [names.baseline],
      }),
    );
    const r = await cli(['sandbox', 'apply', '-f', file, '--wait', '--json']);
    expect(r.stderr).not.toContain('branchline:');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.status).toBe('ready');
    expect(s.resources[`${names.baseline.replaceAll('_', '-')}-db`]).toMatchObject({
      type: 'postgres',
      status: 'ready',
    });
    const rows = await withClient(`${names.prefix}pr-102__${names.baseline}`, (c) =>
      c.query('SELECT count(*)::int AS n FROM orders'),
    );
    expect(rows.rows).toEqual([{ n: 20 }]);

    const failing = spec(
      'quota.yaml',
      'name: pr-103\nservices: { orders: { http: "http://127.0.0.1:4203" } }\nresources:\n  queue: { type: quota }\n',
    );
    const f = await cli(['sandbox', 'apply', '-f', failing, '--wait']);
    expect(f.code).toBe(7);
    expect(f.stderr).toContain(
      'sandbox pr-103 failed to become ready: queue (quota): the staging quota for test queues is used up; ask the platform team to raise it',
    );
    // The same for sandbox create --wait.
    const c = await cli(['sandbox', 'create', 'pr-104', '-r', 'queue=quota', '--wait']);
    expect(c.code).toBe(7);
    expect(c.stderr).toContain('queue (quota): the staging quota for test queues is used up');

    // A resource in the file that differs from the live sandbox's is refused (exit 6) unless
    // --recreate; --recreate deletes the sandbox and makes it again with the same key.
    const changed = spec(
      'db2.json',
      JSON.stringify({
        name: 'pr-102',
        services: { orders: { http: 'http://127.0.0.1:4202' } },
        resources: { extra: { type: 'quota' } },
        databases: [names.baseline],
      }),
    );
    const refused = await cli(['sandbox', 'apply', '-f', changed]);
    expect(refused.code).toBe(0);
    const removed = spec(
      'db3.json',
      JSON.stringify({ name: 'pr-102', services: { orders: { http: 'http://127.0.0.1:4202' } } }),
    );
    const conflict = await cli(['sandbox', 'apply', '-f', removed]);
    expect(conflict.code).toBe(6);
    expect(conflict.stderr).toContain('resource extra is not in the spec any more');
    expect(conflict.stderr).toContain('--recreate');
    const recreated = await cli(['sandbox', 'apply', '-f', removed, '--recreate', '--json']);
    expect(recreated.stderr).toContain('sandbox pr-102: recreated (key pr-102)');
    expect(recreated.code).toBe(0);
    expect(JSON.parse(recreated.stdout).resources).toEqual({});
    // The old database went with the old sandbox, and its labels came along.
    const left = await admin((c2) =>
      c2.query('SELECT 1 FROM pg_database WHERE datname = $1', [`${names.prefix}pr-102__${names.baseline}`]),
    );
    expect(left.rowCount).toBe(0);
    expect((await get('pr-102'))?.labels).toEqual({ pr: '102' });
  }, 120_000);

  it('joins route groups: creates a missing one, takes on the labels an existing one matches', async () => {
    const a = spec(
      'a.yaml',
      'name: grp-a\nservices: { payments: { http: "http://127.0.0.1:4301" } }\ngroups: [checkout]\n',
    );
    const b = spec(
      'b.yaml',
      'name: grp-b\nservices: { orders: { http: "http://127.0.0.1:4302" } }\ngroups: [checkout]\n',
    );
    const ra = await cli(['sandbox', 'apply', '-f', a]);
    expect(ra.code).toBe(0);
    expect(ra.stderr).toContain('route group checkout: created (key checkout); grp-a is a member');
    expect(ra.stdout).toContain('route group checkout: baggage: branchline=checkout');
    const rb = await cli(['sandbox', 'apply', '-f', b, '--json']);
    expect(JSON.parse(rb.stdout).routeGroups).toEqual([
      { name: 'checkout', key: 'checkout', header: 'baggage: branchline=checkout' },
    ]);
    const rules = JSON.parse((await cli(['rules', '--key', 'checkout', '--json'])).stdout).rules;
    expect(
      rules.map((r: { service: string; sandbox: string }) => `${r.service}:${r.sandbox}`).sort(),
    ).toEqual(['orders:grp-b', 'payments:grp-a']);
    // A group made by someone else: the sandbox takes on the labels it matches.
    await cli(['group', 'create', 'team-t', '--match', 'team=t']);
    const c = spec(
      'c.yaml',
      'name: grp-c\nservices: { stock: { http: "http://127.0.0.1:4303" } }\ngroups: [team-t]\n',
    );
    expect((await cli(['sandbox', 'apply', '-f', c])).code).toBe(0);
    expect((await get('grp-c'))?.labels).toEqual({ team: 't' });
    const clash = spec(
      'd.yaml',
      'name: grp-d\nlabels: { team: u }\nservices: { stock: { http: "http://127.0.0.1:4304" } }\ngroups: [team-t]\n',
    );
    const refused = await cli(['sandbox', 'apply', '-f', clash]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      'groups: route group team-t matches sandboxes labelled team=t, but labels.team is "u"',
    );
    expect(await get('grp-d')).toBeUndefined();
    // The group this command made goes with its last member.
    await cli(['sandbox', 'delete', 'grp-a']);
    await cli(['sandbox', 'delete', 'grp-b']);
    expect((await cli(['group', 'list', '--json'])).stdout).not.toContain('"checkout"');
  });
});

describe('sandbox apply -f with a Kubernetes fork', () => {
  it('declares a kubernetes-fork resource from services.<svc>.kubernetes; a new image needs --recreate', async () => {
    const fake = new FakeKubernetes();
    const { deployment, service } = shopBaseline();
    fake.seed(deployment);
    fake.seed(service);
    const server = createRegistryServer({
      store: ':memory:',
      resourceHooks: [kubernetesForkHook({ api: fake, namespaces: ['shop'], pollIntervalMs: 20 })],
      log: () => undefined,
    });
    const k8sUrl = await server.listen(0, '127.0.0.1');
    try {
      const file = spec(
        'fork.yaml',
        `name: pr-\${PR_NUMBER}
labels: { pr: "\${PR_NUMBER}" }
services:
  orders:
    kubernetes:
      deployment: orders
      container: orders
      image: ghcr.io/acme/orders:\${IMAGE_TAG}
      env: { LOG_LEVEL: debug }
`,
      );
      const env = { PR_NUMBER: '42', IMAGE_TAG: 'sha-1' };
      const r = await cli(['sandbox', 'apply', '-f', file, '--wait', '--json'], env, k8sUrl);
      expect(r.stderr).not.toContain('branchline:');
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout).resources.orders).toMatchObject({
        type: 'kubernetes-fork',
        status: 'ready',
        spec: { service: 'orders', deployment: 'orders', image: 'ghcr.io/acme/orders:sha-1' },
      });
      const fork = fake.names('Deployment').find((n) => n.startsWith('shop/orders-'));
      expect(fork).toBeDefined();
      const image = () =>
        fake.get('Deployment', 'shop', fork!.slice('shop/'.length))?.spec?.template?.spec?.containers[0]
          ?.image;
      expect(image()).toBe('ghcr.io/acme/orders:sha-1');

      const env2 = { ...env, IMAGE_TAG: 'sha-2' };
      const dry = await cli(['sandbox', 'apply', '-f', file, '--dry-run'], env2, k8sUrl);
      expect(dry.stdout).toContain(
        '! resource orders (kubernetes-fork) differs from the sandbox\'s (image: "ghcr.io/acme/orders:sha-1" → "ghcr.io/acme/orders:sha-2")',
      );
      expect((await cli(['sandbox', 'apply', '-f', file], env2, k8sUrl)).code).toBe(6);
      const again = await cli(['sandbox', 'apply', '-f', file, '--recreate', '--wait'], env2, k8sUrl);
      expect(again.stderr).not.toContain('branchline:');
      expect(again.code).toBe(0);
      expect(again.stdout).toContain('sandbox pr-42 is ready (key pr-42');
      expect(image()).toBe('ghcr.io/acme/orders:sha-2');

      // The fork spec is checked by @branchline/kubernetes before anything is sent.
      const bad = spec(
        'bad-fork.yaml',
        'name: pr-43\nservices:\n  orders:\n    kubernetes: { deployment: orders, container: orders, image: x, replicas: 50 }\n',
      );
      const b = await cli(['sandbox', 'apply', '-f', bad], {}, k8sUrl);
      expect(b.code).toBe(2);
      expect(b.stderr).toContain(
        'services.orders.kubernetes.replicas must be a whole number from 1 to 20 (got 50)',
      );
      // register: declared: the sandbox routes to the fork's Service, computed from the spec.
      const declared = spec(
        'declared.yaml',
        'name: pr-45\nservices:\n  orders:\n    kubernetes: { deployment: orders, namespace: shop, container: orders, image: x, register: declared, http: 8080 }\n',
      );
      const d = await cli(['sandbox', 'apply', '-f', declared, '--json'], {}, k8sUrl);
      expect(d.code).toBe(0);
      expect(JSON.parse(d.stdout).overrides.orders).toEqual({
        http: 'http://orders-pr-45.shop.svc.cluster.local:8080',
      });
      expect((await cli(['sandbox', 'delete', 'pr-45'], {}, k8sUrl)).code).toBe(0);

      // What only the registry knows (the namespaces forks may go to) comes back in the file's terms.
      const elsewhere = spec(
        'elsewhere.yaml',
        'name: pr-44\nservices:\n  orders:\n    kubernetes: { deployment: orders, namespace: billing, container: orders, image: x }\n',
      );
      const e = await cli(['sandbox', 'apply', '-f', elsewhere], {}, k8sUrl);
      expect(e.code).toBe(2);
      expect(e.stderr).toContain(
        `${elsewhere}: PUT /v1/sandboxes/pr-44: 400 services.orders.kubernetes.namespace "billing" is not one this registry may create forks in (shop)`,
      );
      expect((await cli(['sandbox', 'delete', '-f', file], env, k8sUrl)).code).toBe(0);
      expect(fake.names('Deployment')).toEqual(['shop/orders']);
    } finally {
      await server.close();
    }
  }, 60_000);
});

describe('the sandbox spec JSON Schema (packages/cli/schema/sandbox.schema.json)', () => {
  const schema = JSON.parse(readFileSync(join(root, 'packages/cli/schema/sandbox.schema.json'), 'utf8'));
  const validate = new Ajv2020({ allErrors: true, allowUnionTypes: true }).compile(schema);

  it("embeds @branchline/kubernetes's fork spec schema as it is", () => {
    const { $schema, title, ...fork } = forkSpecJsonSchema;
    expect(schema.$defs.kubernetesFork).toEqual(JSON.parse(JSON.stringify(fork)));
    expect(() => checkForkSpec({ deployment: 'orders', image: 'x' })).not.toThrow();
  });

  it('accepts the specs the command accepts and refuses the ones it refuses', () => {
    const good = {
      $schema: './sandbox.schema.json',
      name: 'pr-42',
      key: 'pr-42',
      ttl: '3d',
      labels: { pr: '42', repo: 'acme/shop' },
      services: {
        payments: { http: 'http://10.0.0.7:8080' },
        stock: { grpc: ['10.0.0.8:50051'] },
        orders: { kubernetes: { deployment: 'orders', image: 'ghcr.io/acme/orders:pr-42', env: { A: 'b' } } },
      },
      databases: ['orders'],
      resources: { queue: { type: 'amqp-queue', spec: { queue: 'jobs' } } },
      groups: ['checkout'],
    };
    expect(validate(good), JSON.stringify(validate.errors)).toBe(true);
    for (const bad of [
      { services: {} },
      { name: 'PR_42' },
      { name: 'x', colour: 'blue' },
      { name: 'x', services: { payments: {} } },
      { name: 'x', services: { orders: { kubernetes: { deployment: 'orders' } } } },
      { name: 'x', services: { orders: { http: 'http://a', kubernetes: { deployment: 'o', image: 'i' } } } },
      { name: 'x', resources: { q: { spec: {} } } },
      { name: 'x', groups: ['Checkout'] },
    ])
      expect(validate(bad), JSON.stringify(bad)).toBe(false);
  });

  it('is published with the package', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'packages/cli/package.json'), 'utf8'));
    expect(pkg.files).toContain('schema');
    expect(pkg.exports['./schema/sandbox.schema.json']).toBe('./schema/sandbox.schema.json');
  });
});
