import { isValidServiceName, SERVICE_NAME_RULE } from '@branchline/core';
import { sandboxDeploymentName, serviceHost } from './names.js';
import type { ForkRegistration, KubernetesForkSpec } from './types.js';

/** A spec or option that cannot be used; the message names the field, the value and the fix. */
export class KubernetesForkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubernetesForkError';
  }
}

/** Variables the fork sets itself: they say which sandbox the process belongs to. */
export const RESERVED_ENV = [
  'BRANCHLINE_SANDBOX',
  'BRANCHLINE_SERVICE',
  'BRANCHLINE_REGISTRY',
  'BRANCHLINE_TOKEN',
  'BRANCHLINE_TOKEN_FILE',
  'BRANCHLINE_ANNOUNCE_HTTP',
  'BRANCHLINE_ANNOUNCE_GRPC',
  'BRANCHLINE_POD_IP',
] as const;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
const KEYS = new Set([
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
]);

const fail = (m: string): never => {
  throw new KubernetesForkError(`kubernetes-fork: ${m}`);
};
const show = (v: unknown) => JSON.stringify(v);

function port(v: unknown, field: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535)
    fail(`spec.${field} must be a container port number such as 8080 (got ${show(v)})`);
  return v as number;
}

/** A checked spec, defaults applied. */
export type ParsedForkSpec = KubernetesForkSpec & {
  namespace: string;
  register: ForkRegistration;
  replicas: number;
};

/**
 * Reads and checks a `kubernetes-fork` spec; every error names the field, the value and what
 * would be accepted. `namespaces` are the ones the hook may create forks in (the first is the
 * default).
 */
export function parseForkSpec(input: unknown, namespaces: readonly string[]): ParsedForkSpec {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    fail(
      `the spec must be an object like {"deployment": "orders", "image": "registry/orders:pr-42"} (got ${show(input)})`,
    );
  const s = input as Record<string, unknown>;
  for (const k of Object.keys(s))
    if (!KEYS.has(k)) fail(`spec.${k} is not a field of a fork; the fields are ${[...KEYS].join(', ')}`);
  const deployment = s.deployment;
  if (typeof deployment !== 'string' || !DNS_SUBDOMAIN.test(deployment))
    fail(`spec.deployment must name the baseline Deployment, e.g. "orders" (got ${show(deployment)})`);
  const namespace = s.namespace ?? namespaces[0];
  if (typeof namespace !== 'string' || !DNS_LABEL.test(namespace))
    fail(`spec.namespace must be a namespace name such as "shop" (got ${show(s.namespace)})`);
  if (!namespaces.includes(namespace as string))
    fail(
      `spec.namespace ${show(namespace)} is not one this registry may create forks in (${namespaces.join(', ')}); ask its operator to add it (BRANCHLINE_KUBERNETES_NAMESPACES)`,
    );
  const image = s.image;
  if (typeof image !== 'string' || image.length === 0 || image.length > 1024 || /\s/.test(image))
    fail(`spec.image must be an image reference such as "ghcr.io/acme/orders:pr-42" (got ${show(image)})`);
  const container = s.container;
  if (container !== undefined && (typeof container !== 'string' || !DNS_LABEL.test(container)))
    fail(`spec.container must name a container of the Deployment (got ${show(container)})`);
  const service = s.service;
  if (service !== undefined && !isValidServiceName(service))
    fail(`spec.service must be a service name: ${SERVICE_NAME_RULE} (got ${show(service)})`);
  const env = s.env;
  if (env !== undefined) {
    if (typeof env !== 'object' || env === null || Array.isArray(env))
      fail(`spec.env must be an object of names to values, e.g. {"LOG_LEVEL": "debug"} (got ${show(env)})`);
    for (const [k, v] of Object.entries(env as Record<string, unknown>)) {
      if (!ENV_NAME.test(k)) fail(`spec.env has ${show(k)}, which is not an environment variable name`);
      if ((RESERVED_ENV as readonly string[]).includes(k))
        fail(`spec.env.${k} is set by the fork itself (it says which sandbox this is); leave it out`);
      if (typeof v !== 'string') fail(`spec.env.${k} must be a string (got ${show(v)}); quote numbers`);
    }
  }
  const http = port(s.http, 'http');
  const grpc = port(s.grpc, 'grpc');
  const replicas = s.replicas ?? 1;
  if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 1 || replicas > 20)
    fail(`spec.replicas must be a whole number from 1 to 20 (got ${show(s.replicas)})`);
  const register = s.register ?? 'self';
  if (register !== 'self' && register !== 'declared')
    fail(
      `spec.register must be "self" (the workload announces itself) or "declared" (got ${show(register)})`,
    );
  if (register === 'declared') {
    if (service === undefined)
      fail('spec.register "declared" needs spec.service: the service whose override the sandbox declares');
    if (http === undefined && grpc === undefined)
      fail('spec.register "declared" needs spec.http or spec.grpc: the port the declared endpoint points at');
  }
  return {
    deployment: deployment as string,
    namespace: namespace as string,
    image: image as string,
    register: register as 'self' | 'declared',
    ...(container !== undefined ? { container: container as string } : {}),
    ...(service !== undefined ? { service: service as string } : {}),
    ...(env !== undefined ? { env: env as Record<string, string> } : {}),
    ...(http !== undefined ? { http } : {}),
    ...(grpc !== undefined ? { grpc } : {}),
    replicas: replicas as number,
  };
}

/**
 * Checks a fork spec's fields without knowing which namespaces the registry allows (that is
 * checked when the sandbox is created): for tools that validate a sandbox file before sending it.
 */
export function checkForkSpec(input: unknown): void {
  const ns = (input as { namespace?: unknown } | null)?.namespace;
  parseForkSpec(input, [typeof ns === 'string' ? ns : 'default']);
}

/** JSON Schema (2020-12) of a fork spec, for sandbox files that embed one; `checkForkSpec` is stricter. */
export const forkSpecJsonSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'kubernetes-fork spec',
  type: 'object',
  additionalProperties: false,
  required: ['deployment', 'image'],
  properties: {
    deployment: { type: 'string', description: 'the baseline Deployment to copy' },
    namespace: { type: 'string', description: "its namespace; default: the registry's first fork namespace" },
    image: { type: 'string', description: 'the image the fork runs' },
    container: { type: 'string', description: 'the container that gets the image; default: the only one' },
    service: {
      type: 'string',
      description: 'the Branchline service name; default: BRANCHLINE_SERVICE of the container',
    },
    env: {
      type: 'object',
      additionalProperties: { type: 'string' },
      description: 'environment overrides for the container',
    },
    http: { type: 'integer', minimum: 1, maximum: 65535, description: 'the container port serving HTTP' },
    grpc: { type: 'integer', minimum: 1, maximum: 65535, description: 'the container port serving gRPC' },
    replicas: { type: 'integer', minimum: 1, maximum: 20, default: 1 },
    register: {
      enum: ['self', 'declared'],
      default: 'self',
      description: "how the fork's endpoint reaches the registry",
    },
  },
} as const;

/**
 * The endpoints a sandbox declares for a fork with `register: 'declared'` (its Service's
 * in-cluster address), computed from the spec alone, before anything exists in the cluster:
 *
 * ```js
 * const { service, endpoint } = forkEndpoints('pr-42', spec, { namespaces: ['shop'] });
 * body.overrides[service] = endpoint; // { http: 'http://orders-pr-42.shop.svc.cluster.local:8080' }
 * ```
 */
export function forkEndpoints(
  sandbox: string,
  spec: unknown,
  options: { namespaces: readonly string[] },
): { service: string; endpoint: { http?: string; grpc?: string } } {
  const s = parseForkSpec(spec, options.namespaces);
  if (s.service === undefined || (s.http === undefined && s.grpc === undefined))
    fail('forkEndpoints needs spec.service and spec.http or spec.grpc (as register "declared" does)');
  const host = serviceHost(sandboxDeploymentName(s.deployment, sandbox), s.namespace);
  const endpoint: { http?: string; grpc?: string } = {};
  if (s.http !== undefined) endpoint.http = `http://${host}:${s.http}`;
  if (s.grpc !== undefined) endpoint.grpc = `${host}:${s.grpc}`;
  return { service: s.service as string, endpoint };
}
