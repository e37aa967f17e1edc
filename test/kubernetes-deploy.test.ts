import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  forkHookOptionsFromEnv,
  KUBERNETES_FORK,
  kubernetesForkHook,
  parseForkSpec,
  type ResourceContext,
} from '@branchline/kubernetes';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { FakeKubernetes, shopBaseline } from '../packages/kubernetes/test/fake-kubernetes.js';
import { schemaProblems } from '../packages/kubernetes/test/schema.js';
import { codeBlocks, shellCommands } from './helpers/docs.js';

// deploy/kubernetes (the registry's manifests and image) and docs/kubernetes.md, checked without
// a cluster or a container engine: every manifest against the Kubernetes schema, the pieces
// against each other, the Dockerfile against the repository, the page's YAML and commands
// against the files they name. (The page's `branchline` commands run in kubernetes-plugin.test.ts.)

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes documents under test
type Json = any;

const root = resolve(import.meta.dirname, '..');
const DEPLOY = join(root, 'deploy/kubernetes');
const DOC = join(root, 'docs/kubernetes.md');
const tmp = mkdtempSync(join(tmpdir(), 'branchline-k8s-deploy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function yamlDocs(text: string, where: string): Json[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(`${where}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS();
  });
}
const load = (file: string): Json[] => yamlDocs(readFileSync(file, 'utf8'), file);
const manifestFiles = (dir: string) =>
  readdirSync(dir, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.yaml') && !f.endsWith('kustomization.yaml'))
    .sort();
const base = () =>
  Object.fromEntries(
    manifestFiles(DEPLOY)
      .flatMap((f) => load(join(DEPLOY, f)))
      .map((o) => [o.kind, o]),
  );

let kubectl = false;
try {
  execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  kubectl = true;
} catch {
  kubectl = false;
}

describe('deploy/kubernetes', () => {
  it('every manifest parses and validates against the Kubernetes schema', async () => {
    const files = manifestFiles(DEPLOY);
    expect(files).toEqual([
      'configmap.yaml',
      'deployment.yaml',
      'fork-rbac/role.yaml',
      'fork-rbac/rolebinding.yaml',
      'namespace.yaml',
      'networkpolicy.yaml',
      'poddisruptionbudget.yaml',
      'service.yaml',
      'serviceaccount.yaml',
    ]);
    for (const f of files)
      for (const o of load(join(DEPLOY, f))) expect(await schemaProblems(o), `${f}: ${o.kind}`).toEqual([]);
  });

  it('the kustomization lists every manifest of the registry, and only those', () => {
    const [k] = load(join(DEPLOY, 'kustomization.yaml'));
    expect(k.kind).toBe('Kustomization');
    expect(k.namespace).toBe('branchline');
    expect([...k.resources].sort()).toEqual(manifestFiles(DEPLOY).filter((f) => !f.startsWith('fork-rbac/')));
  });

  it('runs two replicas, probed on /healthz at its own port, non-root, with the Secret and ConfigMap that exist', () => {
    const {
      Deployment: d,
      Service: svc,
      PodDisruptionBudget: pdb,
      NetworkPolicy: np,
      ConfigMap: cm,
    } = base();
    const pod = d.spec.template;
    const [c] = pod.spec.containers;
    expect(d.spec.replicas).toBe(2);
    expect(c.readinessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(c.ports).toEqual([{ name: 'http', containerPort: 7070, protocol: 'TCP' }]);
    expect(c.args).toEqual([
      'registry',
      '--host',
      '0.0.0.0',
      '--port',
      '7070',
      '--plugin',
      '@branchline/kubernetes/plugin',
    ]);
    expect(pod.spec.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(c.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
    });
    expect(pod.spec.serviceAccountName).toBe(base().ServiceAccount.metadata.name);
    // Store and tokens come from the Secret the page creates; the plugin's settings from the ConfigMap.
    expect(c.env.find((e: Json) => e.name === 'BRANCHLINE_REGISTRY_STORE').valueFrom.secretKeyRef).toEqual({
      name: 'branchline-registry',
      key: 'store',
    });
    const tokensFile = c.env.find((e: Json) => e.name === 'BRANCHLINE_REGISTRY_TOKENS_FILE').value;
    const mount = c.volumeMounts.find((m: Json) => tokensFile.startsWith(`${m.mountPath}/`));
    const volume = pod.spec.volumes.find((v: Json) => v.name === mount.name);
    expect(volume.secret).toEqual({
      secretName: 'branchline-registry',
      items: [{ key: 'tokens', path: 'tokens' }],
    });
    expect(c.envFrom).toEqual([{ configMapRef: { name: cm.metadata.name } }]);
    // The Service, the PDB and the NetworkPolicy all mean these pods.
    const labels = pod.metadata.labels;
    const selects = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => labels[k] === v);
    expect(selects(d.spec.selector.matchLabels)).toBe(true);
    expect(selects(svc.spec.selector)).toBe(true);
    expect(svc.spec.ports[0]).toMatchObject({ port: 7070, targetPort: 'http' });
    expect(selects(pdb.spec.selector.matchLabels)).toBe(true);
    expect(selects(np.spec.podSelector.matchLabels)).toBe(true);
    expect(np.spec.ingress[0].ports).toEqual([{ port: 7070, protocol: 'TCP' }]);
  });

  it("the ConfigMap's settings are ones the fork plugin accepts", () => {
    const { ConfigMap: cm } = base();
    const options = forkHookOptionsFromEnv(cm.data);
    expect(options).toEqual({
      namespaces: ['shop'],
      registry: 'http://branchline-registry.branchline.svc.cluster.local:7070',
      tokenSecret: { name: 'branchline-workload-token' },
      rolloutTimeoutMs: 300_000,
    });
    expect(() => kubernetesForkHook({ ...options, api: new FakeKubernetes() })).not.toThrow();
    expect(() => forkHookOptionsFromEnv({})).toThrow('BRANCHLINE_KUBERNETES_NAMESPACES is unset');
    expect(() =>
      forkHookOptionsFromEnv({ ...cm.data, BRANCHLINE_KUBERNETES_ROLLOUT_TIMEOUT: 'soon' }),
    ).toThrow(
      'BRANCHLINE_KUBERNETES_ROLLOUT_TIMEOUT="soon" is not a duration such as 5m, 90s or 300 (seconds)',
    );
  });

  it('fork-rbac grants every verb the fork plugin uses, on the resources it uses them on', async () => {
    const [role] = load(join(DEPLOY, 'fork-rbac/role.yaml'));
    const [binding] = load(join(DEPLOY, 'fork-rbac/rolebinding.yaml'));
    expect(binding.roleRef.name).toBe(role.metadata.name);
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'branchline-registry', namespace: 'branchline' },
    ]);
    const fake = new FakeKubernetes();
    const { deployment, service } = shopBaseline();
    fake.seed(deployment);
    fake.seed(service);
    const hook = kubernetesForkHook({ namespaces: ['shop'], api: fake, pollIntervalMs: 5 });
    const ctx: ResourceContext = {
      sandbox: { name: 'pr-1', key: 'pr-1', labels: {} },
      resource: {
        name: 'orders',
        type: KUBERNETES_FORK,
        spec: { deployment: 'orders', container: 'orders', image: 'x:2' },
      },
      report: () => undefined,
      signal: new AbortController().signal,
    };
    await hook.provision(ctx);
    await hook.provision(ctx); // again: the replace path
    await hook.deprovision(ctx);
    await hook.sweep([]);
    const verb: Record<string, string> = {
      read: 'get',
      list: 'list',
      create: 'create',
      replace: 'update',
      delete: 'delete',
    };
    const used = new Set(fake.calls.map((c) => `${c.split(' ')[1]}:${verb[c.split(' ')[0]!]}`));
    const granted = new Set<string>();
    for (const rule of role.rules)
      for (const r of rule.resources)
        for (const v of rule.verbs) granted.add(`${r === 'deployments' ? 'Deployment' : 'Service'}:${v}`);
    expect([...used].filter((u) => !granted.has(u))).toEqual([]);
    expect([...granted].filter((g) => !used.has(g))).toEqual([]);
  });
});

/** A Dockerfile's instructions: continuation lines joined, comments and blank lines dropped. */
function dockerfile(text: string): { op: string; args: string }[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(' ') };
    });
}

describe('deploy/kubernetes/Dockerfile (not built here: no container engine)', () => {
  const steps = dockerfile(readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8'));
  const stages = steps.filter((s) => s.op === 'FROM');
  const final = steps.slice(steps.lastIndexOf(stages.at(-1)!));

  it('is multi-stage on node:24-slim and runs as a numeric non-root user', () => {
    expect(stages.map((s) => s.args)).toEqual(['node:24-slim AS build', 'node:24-slim']);
    const user = final.filter((s) => s.op === 'USER').at(-1)!.args;
    expect(user).toMatch(/^[1-9]\d*(:\d+)?$/);
    const [, podUser] = /runAsUser: (\d+)/.exec(readFileSync(join(DEPLOY, 'deployment.yaml'), 'utf8'))!;
    expect(user.split(':')[0]).toBe(podUser);
  });

  it('copies only paths that exist and the build context keeps', () => {
    const ignored = readFileSync(join(DEPLOY, 'Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    const copies = steps.filter((s) => s.op === 'COPY' && !s.args.startsWith('--from'));
    expect(copies.length).toBeGreaterThan(0);
    for (const c of copies) {
      const sources = c.args.split(/\s+/).slice(0, -1);
      for (const src of sources) {
        expect(existsSync(join(root, src)), `COPY ${src}`).toBe(true);
        expect(ignored).not.toContain(src);
      }
    }
    const from = steps.find((s) => s.op === 'COPY' && s.args.startsWith('--from'))!;
    expect(from.args).toMatch(/^--from=build /);
  });

  it('packs and installs the packages the registry runs, and starts their branchline command', () => {
    const text = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
    const pkg = (dir: string) =>
      JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8'));
    const packed = [...text.matchAll(/-w (@branchline\/[a-z]+)/g)].map((m) => m[1]);
    const installed = [...text.matchAll(/\/pkgs\/(branchline-[a-z]+-[\d.]+\.tgz)/g)].map((m) => m[1]);
    const dirs = ['core', 'registry', 'cli', 'kubernetes'];
    expect(packed).toEqual(dirs.map((d) => pkg(d).name));
    // npm pack names a tarball <scope>-<name>-<version>.tgz.
    expect(installed).toEqual(dirs.map((d) => `branchline-${d}-${pkg(d).version}.tgz`));
    // npm installs dependencies and required peers by itself; an optional peer (pg, for the
    // PostgreSQL store) must be named, and so is the plugin's Kubernetes client.
    for (const d of dirs)
      for (const [dep, meta] of Object.entries(pkg(d).peerDependenciesMeta ?? {}))
        if ((meta as { optional?: boolean }).optional)
          expect(text, `${d} needs ${dep}`).toContain(` ${dep}@`);
    expect(text).toContain(' pg@');
    expect(text).toContain(' @kubernetes/client-node@');
    const entry = JSON.parse(final.find((s) => s.op === 'ENTRYPOINT')!.args);
    expect(entry).toEqual([
      'node',
      `/app/node_modules/@branchline/cli/${pkg('cli').bin.branchline.replace('./', '')}`,
    ]);
    expect(Object.keys(pkg('kubernetes').exports)).toContain('./plugin');
    expect(final.find((s) => s.op === 'EXPOSE')!.args).toBe('7070');
  });
});

describe('docs/kubernetes.md', () => {
  const blocks = codeBlocks(DOC);
  const commands = blocks.filter((b) => b.lang === 'sh').flatMap((b) => shellCommands(b.text));

  it('its YAML parses; Kubernetes objects validate; the overlay names the base, its image and its ConfigMap', async () => {
    const docs = blocks
      .filter((b) => b.lang === 'yaml')
      .flatMap((b) => yamlDocs(b.text, 'docs/kubernetes.md'));
    expect(docs.length).toBeGreaterThanOrEqual(2);
    const overlay = docs.find((d) => d.kind === 'Kustomization');
    const { Deployment: d, ConfigMap: cm } = base();
    expect(overlay.resources).toEqual(['../deploy/kubernetes']);
    expect(overlay.images[0].name).toBe(d.spec.template.spec.containers[0].image.split(':')[0]);
    const patch = yamlDocs(overlay.patches[0].patch, 'overlay patch')[0];
    expect(patch).toMatchObject({ kind: 'ConfigMap', metadata: { name: cm.metadata.name } });
    expect(forkHookOptionsFromEnv({ ...cm.data, ...patch.data }).namespaces).toEqual(['shop']);
    for (const o of docs.filter((x) => x.apiVersion && x.kind !== 'Kustomization' && x !== patch))
      expect(await schemaProblems(o)).toEqual([]);
  });

  it.skipIf(!kubectl)('kubectl kustomize renders the overlay into objects that validate', async () => {
    const overlay = blocks.find((b) => b.lang === 'yaml' && b.text.includes('kind: Kustomization'))!;
    const dir = join(tmp, 'repo');
    mkdirSync(join(dir, 'my-branchline'), { recursive: true });
    symlinkSync(join(root, 'deploy'), join(dir, 'deploy'));
    writeFileSync(join(dir, 'my-branchline/kustomization.yaml'), overlay.text);
    const rendered = yamlDocs(
      execFileSync('kubectl', ['kustomize', join(dir, 'my-branchline')], { encoding: 'utf8' }),
      'kubectl kustomize',
    );
    expect(rendered.map((o) => o.kind).sort()).toEqual(
      [
        'ConfigMap',
        'Deployment',
        'Namespace',
        'NetworkPolicy',
        'PodDisruptionBudget',
        'Service',
        'ServiceAccount',
      ].sort(),
    );
    for (const o of rendered) {
      expect(await schemaProblems(o)).toEqual([]);
      if (o.kind !== 'Namespace') expect(o.metadata.namespace).toBe('branchline');
    }
    const dep = rendered.find((o) => o.kind === 'Deployment');
    expect(dep.spec.template.spec.containers[0].image).toBe('ghcr.io/acme/branchline-registry:0.1.0');
  });

  it('every file and directory its kubectl commands name exists', () => {
    const paths = commands
      .filter((c) => c[0] === 'kubectl' || c[0] === 'docker')
      .flatMap((c) => c.flatMap((w, i) => (['-f', '-k'].includes(c[i - 1] ?? '') ? [w] : [])));
    expect(paths).toEqual([
      'deploy/kubernetes/Dockerfile',
      'deploy/kubernetes/namespace.yaml',
      'my-branchline',
      'deploy/kubernetes/fork-rbac/',
    ]);
    for (const p of paths.filter((x) => x !== 'my-branchline'))
      expect(existsSync(join(root, p)), p).toBe(true);
  });

  it('the Secrets it creates have the names and keys the manifests read', () => {
    const secret = (name: string) => {
      const c = commands.find((x) => x[0] === 'kubectl' && x.includes('secret') && x.includes(name))!;
      expect(c, name).toBeDefined();
      return c
        .filter((w) => w.startsWith('--from-'))
        .map((w) => w.split('=')[1])
        .sort();
    };
    const { Deployment: d, ConfigMap: cm } = base();
    const c = d.spec.template.spec.containers[0];
    const read = [
      ...c.env.filter((e: Json) => e.valueFrom?.secretKeyRef).map((e: Json) => e.valueFrom.secretKeyRef.key),
      ...d.spec.template.spec.volumes
        .filter((v: Json) => v.secret)
        .flatMap((v: Json) => v.secret.items.map((i: Json) => i.key)),
    ].sort();
    expect(secret('branchline-registry')).toEqual(read);
    expect(secret(cm.data.BRANCHLINE_KUBERNETES_TOKEN_SECRET)).toEqual(['token']);
    // The page labels namespaces with the label the NetworkPolicy admits.
    const label = commands.find((x) => x[0] === 'kubectl' && x[1] === 'label')!;
    const [key, value] = label.at(-1)!.split('=');
    expect(base().NetworkPolicy.spec.ingress[0].from[0].namespaceSelector.matchLabels).toEqual({
      [key!]: value,
    });
  });

  it('its fork specs are valid for the namespaces the overlay allows', () => {
    const specs = commands
      .filter((c) => c[0] === 'branchline')
      .flatMap((c) => c.flatMap((w, i) => (c[i - 1] === '--resource' ? [w] : [])));
    expect(specs.length).toBe(2);
    for (const r of specs) {
      const [, type, json] = /^[a-z-]+=([a-z-]+):(.*)$/.exec(r)!;
      expect(type).toBe(KUBERNETES_FORK);
      expect(() => parseForkSpec(JSON.parse(json!), ['shop'])).not.toThrow();
    }
  });
});
