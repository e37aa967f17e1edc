import { renamedOption } from '@branchline/core/transport';
import type { V1Container, V1EnvVar, V1ServicePort } from '@kubernetes/client-node';
import { FORK_OF_ANNOTATION, LABELS, MANAGED_BY, sandboxDeploymentName, serviceHost } from './names.js';
import { KubernetesForkError, type ParsedForkSpec } from './spec.js';
import type { Deployment, Service } from './types.js';

/** What a fork is made from. */
export interface ForkInput {
  sandbox: { name: string };
  /** The resource's name on the sandbox (`resources.<name>`). */
  resource: string;
  spec: ParsedForkSpec;
  /** The baseline Deployment as read from the cluster. */
  baseline: Deployment;
  /** The namespace's Services: the fork's pods must be selected by none of the baseline's. */
  services: Service[];
  /** `BRANCHLINE_REGISTRY` for the fork; unset = keep the baseline's. */
  registry?: string;
  /** @deprecated Use `registry`. */
  registryUrl?: string;
  /** Secret whose key holds the fork's `BRANCHLINE_TOKEN`; unset = keep the baseline's token variables. */
  tokenSecret?: { name: string; key?: string };
  instance: string;
}

/** A fork's objects, ready to create, and what it serves. */
export interface Fork {
  /** Name of both the Deployment and the Service. */
  name: string;
  namespace: string;
  /** The Branchline service name the fork serves. */
  service: string;
  deployment: Deployment;
  /** Without its ownerReference to the Deployment: `ownedBy()` adds it once the Deployment has a uid. */
  kubeService: Service;
  ports: { http?: number; grpc?: number };
  /** In-cluster endpoints of the fork's Service. */
  endpoints: { http?: string; grpc?: string };
}

const fail = (m: string): never => {
  throw new KubernetesForkError(`kubernetes-fork: ${m}`);
};

/** The labels that select a fork's pods; on the Deployment, its pods and its Service. */
export function forkLabels(instance: string, sandbox: string, resource: string): Record<string, string> {
  return {
    [LABELS.managedBy]: MANAGED_BY,
    [LABELS.instance]: instance,
    [LABELS.sandbox]: sandbox,
    [LABELS.resource]: resource,
  };
}

function pickContainer(baseline: Deployment, spec: ParsedForkSpec): V1Container {
  const where = `Deployment ${spec.namespace}/${spec.deployment}`;
  const containers = baseline.spec?.template?.spec?.containers ?? [];
  if (spec.container !== undefined) {
    const c = containers.find((x) => x.name === spec.container);
    if (!c)
      fail(
        `${where} has no container ${JSON.stringify(spec.container)} (it has ${containers.map((x) => x.name).join(', ') || 'none'}); fix spec.container`,
      );
    return c as V1Container;
  }
  if (containers.length !== 1)
    fail(
      `${where} has ${containers.length} containers (${containers.map((x) => x.name).join(', ')}); say which one runs the new image with spec.container`,
    );
  return containers[0]!;
}

const named = (name: string | undefined, proto: string) =>
  name === proto || (name?.startsWith(`${proto}-`) ?? false);

/** Which container ports serve HTTP and gRPC: the spec's, else by port name, else the only port. */
function routingPorts(c: V1Container, spec: ParsedForkSpec): { http?: number; grpc?: number } {
  const ports = c.ports ?? [];
  const http = spec.http ?? ports.find((p) => named(p.name, 'http'))?.containerPort;
  const grpc = spec.grpc ?? ports.find((p) => named(p.name, 'grpc'))?.containerPort;
  if (http !== undefined || grpc !== undefined) return { http, grpc };
  if (ports.length === 1) return { http: ports[0]!.containerPort };
  return fail(
    `cannot tell which port of container ${c.name} in Deployment ${spec.namespace}/${spec.deployment} serves HTTP or gRPC (its ports: ${
      ports.map((p) => `${p.name ?? '(unnamed)'}=${p.containerPort}`).join(', ') || 'none declared'
    }); set spec.http or spec.grpc`,
  );
}

/** The baseline's environment with the fork's identity, the user's overrides, and announcement variables. */
function forkEnv(
  c: V1Container,
  input: ForkInput,
  service: string,
  ports: { http?: number; grpc?: number },
): V1EnvVar[] {
  const { spec } = input;
  const registry = renamedOption('buildFork', input.registry, input.registryUrl, 'registryUrl', 'registry');
  const replaced = new Set(['BRANCHLINE_SANDBOX', 'BRANCHLINE_SERVICE', 'BRANCHLINE_POD_IP']);
  replaced.add('BRANCHLINE_ANNOUNCE_HTTP').add('BRANCHLINE_ANNOUNCE_GRPC');
  if (registry) replaced.add('BRANCHLINE_REGISTRY');
  if (input.tokenSecret) replaced.add('BRANCHLINE_TOKEN').add('BRANCHLINE_TOKEN_FILE');
  // Ours come first: Kubernetes expands $(VAR) only from variables defined earlier.
  const env: V1EnvVar[] = [
    { name: 'BRANCHLINE_POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    { name: 'BRANCHLINE_SANDBOX', value: input.sandbox.name },
    { name: 'BRANCHLINE_SERVICE', value: service },
  ];
  if (registry) env.push({ name: 'BRANCHLINE_REGISTRY', value: registry });
  if (input.tokenSecret)
    env.push({
      name: 'BRANCHLINE_TOKEN',
      valueFrom: { secretKeyRef: { name: input.tokenSecret.name, key: input.tokenSecret.key ?? 'token' } },
    });
  if (spec.register === 'self') {
    if (ports.http !== undefined)
      env.push({ name: 'BRANCHLINE_ANNOUNCE_HTTP', value: `http://$(BRANCHLINE_POD_IP):${ports.http}` });
    if (ports.grpc !== undefined)
      env.push({ name: 'BRANCHLINE_ANNOUNCE_GRPC', value: `$(BRANCHLINE_POD_IP):${ports.grpc}` });
  }
  const overrides = new Map(Object.entries(spec.env ?? {}));
  for (const e of c.env ?? []) {
    if (replaced.has(e.name)) continue;
    const v = overrides.get(e.name);
    if (v === undefined) env.push(structuredClone(e));
    else {
      env.push({ name: e.name, value: v });
      overrides.delete(e.name);
    }
  }
  for (const [name, value] of overrides) env.push({ name, value });
  return env;
}

/**
 * Labels for the fork's pods: the baseline pod template's labels without any that would let the
 * baseline's Deployment or one of the namespace's Services select the fork's pods (or the
 * baseline would send its traffic to the sandbox), plus the fork's own.
 */
function podLabels(input: ForkInput, own: Record<string, string>): Record<string, string> {
  const { baseline } = input;
  const labels: Record<string, string> = { ...(baseline.spec?.template?.metadata?.labels ?? {}) };
  const selector = baseline.spec?.selector;
  for (const k of Object.keys(selector?.matchLabels ?? {})) delete labels[k];
  for (const e of selector?.matchExpressions ?? []) delete labels[e.key];
  for (const svc of input.services) {
    if (svc.metadata?.labels?.[LABELS.managedBy] === MANAGED_BY) continue;
    const sel = Object.entries(svc.spec?.selector ?? {});
    if (sel.length && sel.every(([k, v]) => labels[k] === v)) for (const [k] of sel) delete labels[k];
  }
  return { ...labels, ...own };
}

function servicePorts(c: V1Container, ports: { http?: number; grpc?: number }): V1ServicePort[] {
  const out: V1ServicePort[] = [];
  const used = new Set<string>();
  const add = (port: number, name: string | undefined, protocol: string | undefined) => {
    if (out.some((p) => p.port === port && (p.protocol ?? 'TCP') === (protocol ?? 'TCP'))) return;
    let n = name ?? `port-${port}`;
    if (used.has(n)) n = `port-${port}`;
    used.add(n);
    out.push({ name: n, port, targetPort: port, protocol: protocol ?? 'TCP' });
  };
  if (ports.http !== undefined)
    add(ports.http, c.ports?.find((p) => p.containerPort === ports.http)?.name ?? 'http', 'TCP');
  if (ports.grpc !== undefined)
    add(ports.grpc, c.ports?.find((p) => p.containerPort === ports.grpc)?.name ?? 'grpc', 'TCP');
  for (const p of c.ports ?? []) add(p.containerPort, p.name, p.protocol);
  return out;
}

/**
 * Builds a fork of a baseline Deployment: a Deployment running `spec.image` in the chosen
 * container with the sandbox's identity in its environment, and a ClusterIP Service for it,
 * both labelled for the sandbox. Pure: it reads nothing and creates nothing.
 */
export function buildFork(input: ForkInput): Fork {
  const { spec, baseline } = input;
  const name = sandboxDeploymentName(spec.deployment, input.sandbox.name);
  const namespace = spec.namespace;
  const podSpec = baseline.spec?.template?.spec;
  if (!podSpec) return fail(`Deployment ${namespace}/${spec.deployment} has no pod template`);
  const container = pickContainer(baseline, spec);
  const baselineService = container.env?.find((e) => e.name === 'BRANCHLINE_SERVICE' && e.value)?.value;
  const service = spec.service ?? baselineService ?? spec.deployment;
  const ports = routingPorts(container, spec);
  const own = forkLabels(input.instance, input.sandbox.name, input.resource);
  const annotations = { [FORK_OF_ANNOTATION]: `${namespace}/${spec.deployment}` };

  const pod = structuredClone(podSpec);
  pod.containers = pod.containers.map((c) =>
    c.name === container.name ? { ...c, image: spec.image, env: forkEnv(c, input, service, ports) } : c,
  );
  const deployment: Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace, labels: { ...own }, annotations: { ...annotations } },
    spec: {
      replicas: spec.replicas,
      selector: { matchLabels: { ...own } },
      template: {
        metadata: {
          labels: podLabels(input, own),
          ...(baseline.spec?.template?.metadata?.annotations
            ? { annotations: { ...baseline.spec.template.metadata.annotations } }
            : {}),
        },
        spec: pod,
      },
      revisionHistoryLimit: 1,
      ...(baseline.spec?.strategy ? { strategy: structuredClone(baseline.spec.strategy) } : {}),
      ...(baseline.spec?.minReadySeconds !== undefined
        ? { minReadySeconds: baseline.spec.minReadySeconds }
        : {}),
      ...(baseline.spec?.progressDeadlineSeconds !== undefined
        ? { progressDeadlineSeconds: baseline.spec.progressDeadlineSeconds }
        : {}),
    },
  };
  const kubeService: Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, labels: { ...own }, annotations: { ...annotations } },
    spec: { type: 'ClusterIP', selector: { ...own }, ports: servicePorts(container, ports) },
  };
  const host = serviceHost(name, namespace);
  const endpoints: Fork['endpoints'] = {};
  if (ports.http !== undefined) endpoints.http = `http://${host}:${ports.http}`;
  if (ports.grpc !== undefined) endpoints.grpc = `${host}:${ports.grpc}`;
  return { name, namespace, service, deployment, kubeService, ports, endpoints };
}

/** The Service with an ownerReference to the created Deployment: deleting the Deployment deletes it too. */
export function ownedBy(service: Service, deployment: Deployment): Service {
  const uid = deployment.metadata?.uid;
  const name = deployment.metadata?.name;
  if (!uid || !name) return service;
  return {
    ...service,
    metadata: {
      ...service.metadata,
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name, uid }],
    },
  };
}
