import { type ResourceContext, type ResourceHook, renamedOption } from '@branchline/core/transport';
import { createKubernetesApi, type KubernetesApi } from './api.js';
import { buildFork, type Fork, ownedBy } from './fork.js';
import { forkSelector, LABELS, MANAGED_BY, sandboxDeploymentName } from './names.js';
import { KubernetesForkError, parseForkSpec } from './spec.js';
import type { Deployment, KubernetesForkHookOptions, KubernetesForkOutputs, Service } from './types.js';

/** The resource type a sandbox declares: `resources: { orders: { type: 'kubernetes-fork', spec } }`. */
export const KUBERNETES_FORK = 'kubernetes-fork';

export interface KubernetesForkHook extends ResourceHook {
  type: typeof KUBERNETES_FORK;
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<KubernetesForkOutputs>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  sweep(liveSandboxes: string[]): Promise<void>;
  /** The module every Kubernetes call goes through. */
  readonly api: KubernetesApi;
}

/** The sweep leaves objects younger than this alone (their sandbox may be newer than its list). */
const SWEEP_GRACE_MS = 10 * 60_000;
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function checkOptions(o: KubernetesForkHookOptions): void {
  const bad = (m: string): never => {
    throw new TypeError(`kubernetesForkHook: ${m}`);
  };
  if (!Array.isArray(o.namespaces) || o.namespaces.length === 0)
    bad('options.namespaces must list the namespaces forks may be created in, e.g. ["shop"]');
  for (const n of o.namespaces)
    if (typeof n !== 'string' || !DNS_LABEL.test(n))
      bad(`options.namespaces has ${JSON.stringify(n)}, which is not a namespace name`);
  const registry = o.registry ?? o.registryUrl;
  const registryOption = o.registry !== undefined ? 'registry' : 'registryUrl';
  if (registry !== undefined) {
    let ok = false;
    try {
      ok = ['http:', 'https:'].includes(new URL(registry).protocol);
    } catch {
      ok = false;
    }
    if (!ok)
      bad(
        `options.${registryOption}=${JSON.stringify(registry)} must be the registry's http(s) URL as forks reach it, e.g. http://branchline-registry.branchline.svc:7070`,
      );
  }
  if (
    o.tokenSecret !== undefined &&
    (typeof o.tokenSecret?.name !== 'string' || !DNS_LABEL.test(o.tokenSecret.name))
  )
    bad(`options.tokenSecret.name must name a Secret (got ${JSON.stringify(o.tokenSecret?.name)})`);
  if (o.instance !== undefined && !LABEL_VALUE.test(o.instance))
    bad(`options.instance=${JSON.stringify(o.instance)} must be a label value (letters, digits, - _ .)`);
  for (const k of ['rolloutTimeoutMs', 'pollIntervalMs'] as const)
    if (o[k] !== undefined && !(typeof o[k] === 'number' && o[k]! > 0))
      bad(`options.${k} must be a positive number of milliseconds (got ${JSON.stringify(o[k])})`);
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/** Is this object the fork of this sandbox's resource (and not someone's Deployment of the same name)? */
function isOurs(o: Deployment | Service, instance: string, sandbox: string, resource: string): boolean {
  const l = o.metadata?.labels ?? {};
  return (
    l[LABELS.managedBy] === MANAGED_BY &&
    l[LABELS.instance] === instance &&
    l[LABELS.sandbox] === sandbox &&
    l[LABELS.resource] === resource
  );
}

/** A one-line account of why a rollout is not done, from the Deployment's status and conditions. */
function rolloutState(
  d: Deployment | undefined,
  replicas: number,
): { done: boolean; available: number; why: string } {
  const st = d?.status;
  const available = st?.availableReplicas ?? 0;
  const current = (st?.observedGeneration ?? 0) >= (d?.metadata?.generation ?? 0);
  const done =
    current &&
    (st?.updatedReplicas ?? 0) >= replicas &&
    available >= replicas &&
    (st?.unavailableReplicas ?? 0) === 0;
  const conditions = (st?.conditions ?? [])
    .filter((c) => c.status !== 'True' || c.type === 'ReplicaFailure')
    .map(
      (c) => `${c.type}=${c.status}${c.reason ? ` (${c.reason}${c.message ? `: ${c.message}` : ''})` : ''}`,
    );
  return {
    done,
    available,
    why: `${available}/${replicas} available${conditions.length ? `; ${conditions.join('; ')}` : ''}`,
  };
}

/**
 * The registry resource hook that runs a sandbox's new version of a service on Kubernetes. For
 * `{ type: 'kubernetes-fork', spec: { deployment: 'orders', image: 'ghcr.io/acme/orders:pr-42' } }`
 * it copies the baseline Deployment with the new image and the sandbox's identity in its
 * environment, adds a Service, waits until the fork is available (reporting progress), and
 * deletes both when the sandbox goes (TTL, pull request closed, `branchline sandbox delete`).
 *
 * ```ts
 * createRegistryServer({
 *   resourceHooks: [kubernetesForkHook({ namespaces: ['shop'], registry: 'http://branchline-registry.branchline:7070' })],
 * });
 * ```
 */
export function kubernetesForkHook(options: KubernetesForkHookOptions): KubernetesForkHook {
  checkOptions(options);
  const registry = renamedOption(
    'kubernetesForkHook',
    options.registry,
    options.registryUrl,
    'registryUrl',
    'registry',
  );
  const api = options.api ?? createKubernetesApi();
  const instance = options.instance ?? 'default';
  const rolloutTimeoutMs = options.rolloutTimeoutMs ?? 300_000;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const parse = (spec: unknown) => parseForkSpec(spec, options.namespaces);

  /** Creates the object, or replaces the fork of the same name this sandbox made earlier (provision is retried). */
  async function apply<T extends Deployment | Service>(
    desired: T,
    ctx: ResourceContext,
    read: (ns: string, name: string) => Promise<T | undefined>,
    create: (o: T) => Promise<T>,
    replace: (o: T) => Promise<T>,
    kind: string,
  ): Promise<T> {
    const { namespace, name } = desired.metadata as { namespace: string; name: string };
    try {
      return await create(desired);
    } catch (err) {
      // By status, not class: an `api` given in options may throw its own errors.
      if ((err as { status?: unknown })?.status !== 409) throw err;
    }
    const existing = await read(namespace, name);
    if (!existing) return create(desired);
    if (!isOurs(existing, instance, ctx.sandbox.name, ctx.resource.name))
      throw new KubernetesForkError(
        `kubernetes-fork: a ${kind} ${namespace}/${name} exists and is not the fork of sandbox ${ctx.sandbox.name}'s resource ${ctx.resource.name}; it is left alone. Rename the sandbox, or delete that ${kind} if it is a leftover`,
      );
    const next = structuredClone(desired) as T;
    next.metadata = { ...next.metadata, resourceVersion: existing.metadata?.resourceVersion };
    // A Service's cluster IP cannot change.
    if (kind === 'Service') {
      const cur = (existing as Service).spec;
      const spec = (next as Service).spec!;
      if (cur?.clusterIP) spec.clusterIP = cur.clusterIP;
      if (cur?.clusterIPs) spec.clusterIPs = cur.clusterIPs;
    }
    return replace(next);
  }

  async function waitForRollout(fork: Fork, replicas: number, ctx: ResourceContext): Promise<void> {
    const deadline = Date.now() + rolloutTimeoutMs;
    let last = -1;
    for (;;) {
      const d = await api.readDeployment(fork.namespace, fork.name);
      if (!d)
        throw new KubernetesForkError(
          `kubernetes-fork: Deployment ${fork.namespace}/${fork.name} disappeared while it was rolling out`,
        );
      const state = rolloutState(d, replicas);
      if (state.available !== last) {
        last = state.available;
        ctx.report({ phase: 'rollout', done: state.available, total: replicas, unit: 'pods' });
      }
      if (state.done) return;
      const failed = d.status?.conditions?.find(
        (c) => c.type === 'Progressing' && c.status === 'False' && c.reason === 'ProgressDeadlineExceeded',
      );
      if (failed)
        throw new KubernetesForkError(
          `kubernetes-fork: Deployment ${fork.namespace}/${fork.name} stopped progressing (${state.why}); see kubectl -n ${fork.namespace} describe deployment ${fork.name}`,
        );
      if (ctx.signal.aborted)
        throw new KubernetesForkError(
          `kubernetes-fork: stopped waiting for ${fork.namespace}/${fork.name}: the sandbox is going`,
        );
      if (Date.now() >= deadline)
        throw new KubernetesForkError(
          `kubernetes-fork: Deployment ${fork.namespace}/${fork.name} did not become available within ${rolloutTimeoutMs < 10_000 ? `${rolloutTimeoutMs} ms` : `${Math.round(rolloutTimeoutMs / 1000)} s`} (${state.why}); see kubectl -n ${fork.namespace} describe deployment ${fork.name}`,
        );
      await sleep(pollIntervalMs, ctx.signal);
    }
  }

  /** Deletes the object if it is this sandbox's fork; true when something was deleted. */
  async function remove(
    kind: 'Deployment' | 'Service',
    namespace: string,
    name: string,
    ctx: ResourceContext,
  ): Promise<void> {
    const read = kind === 'Deployment' ? api.readDeployment : api.readService;
    const del = kind === 'Deployment' ? api.deleteDeployment : api.deleteService;
    const existing = await read(namespace, name);
    if (!existing) return;
    if (!isOurs(existing, instance, ctx.sandbox.name, ctx.resource.name)) return;
    await del(namespace, name, existing.metadata?.uid);
  }

  return {
    type: KUBERNETES_FORK,
    api,
    validate(spec) {
      parse(spec);
    },
    async provision(ctx) {
      const spec = parse(ctx.resource.spec);
      ctx.report({ phase: 'reading', message: `baseline Deployment ${spec.namespace}/${spec.deployment}` });
      const baseline = await api.readDeployment(spec.namespace, spec.deployment);
      if (!baseline)
        throw new KubernetesForkError(
          `kubernetes-fork: there is no Deployment ${spec.namespace}/${spec.deployment} to fork; check spec.deployment and spec.namespace`,
        );
      const services = await api.listServices(spec.namespace);
      const fork = buildFork({
        sandbox: ctx.sandbox,
        resource: ctx.resource.name,
        spec,
        baseline,
        services,
        registry,
        tokenSecret: options.tokenSecret,
        instance,
      });
      ctx.report({ phase: 'creating', message: `Deployment and Service ${fork.namespace}/${fork.name}` });
      const created = await apply(
        fork.deployment,
        ctx,
        api.readDeployment,
        api.createDeployment,
        api.replaceDeployment,
        'Deployment',
      );
      await apply(
        ownedBy(fork.kubeService, created),
        ctx,
        api.readService,
        api.createService,
        api.replaceService,
        'Service',
      );
      await waitForRollout(fork, spec.replicas, ctx);
      return {
        namespace: fork.namespace,
        name: fork.name,
        service: fork.service,
        image: spec.image,
        ...fork.endpoints,
      };
    },
    async deprovision(ctx) {
      // The outputs name what was made; without them (provisioning never finished) the name is derived again.
      let namespace = typeof ctx.outputs?.namespace === 'string' ? ctx.outputs.namespace : undefined;
      let name = typeof ctx.outputs?.name === 'string' ? ctx.outputs.name : undefined;
      if (!namespace || !name) {
        let spec: ReturnType<typeof parse>;
        try {
          spec = parse(ctx.resource.spec);
        } catch {
          return; // never valid, so nothing was made
        }
        namespace = spec.namespace;
        name = sandboxDeploymentName(spec.deployment, ctx.sandbox.name);
      }
      // The Service first: nothing new reaches the pods while they go.
      await remove('Service', namespace, name, ctx);
      await remove('Deployment', namespace, name, ctx);
    },
    async sweep(liveSandboxes) {
      const live = new Set(liveSandboxes);
      for (const namespace of options.namespaces) {
        const selector = forkSelector(instance);
        const orphan = (o: Deployment | Service) => {
          const sandbox = o.metadata?.labels?.[LABELS.sandbox];
          // A fork made after the registry took its list of live sandboxes is not an orphan.
          const created = o.metadata?.creationTimestamp
            ? new Date(o.metadata.creationTimestamp).getTime()
            : 0;
          return sandbox !== undefined && !live.has(sandbox) && Date.now() - created >= SWEEP_GRACE_MS;
        };
        for (const s of (await api.listServices(namespace, selector)).filter(orphan))
          await api.deleteService(namespace, s.metadata!.name!, s.metadata?.uid);
        for (const d of (await api.listDeployments(namespace, selector)).filter(orphan))
          await api.deleteDeployment(namespace, d.metadata!.name!, d.metadata?.uid);
      }
    },
  };
}
