// The sandbox spec file of `branchline sandbox apply -f`: reading it (YAML or JSON), filling in
// `${VAR}` from the environment, checking it (every error names the field), and turning it into
// the registry's PUT body. Its JSON Schema is schema/sandbox.schema.json.
import { readFileSync } from 'node:fs';
import { isValidRoutingKey, LABEL_NAME_PATTERN, SERVICE_NAME_PATTERN } from '@branchline/core';
import { parseDuration } from '@branchline/registry';
import { parse as parseYaml } from 'yaml';
import { CliError, EXIT } from './client.js';

/** The resource type of a Kubernetes fork (`@branchline/kubernetes`). */
export const KUBERNETES_FORK = 'kubernetes-fork';

type Endpoint = { http?: string | string[]; grpc?: string | string[] };

/** A checked spec, `${VAR}`s filled in. */
export interface SandboxSpecFile {
  name: string;
  key?: string;
  ttl?: string | number;
  labels: Record<string, string>;
  /** Per service: endpoints, or a Kubernetes fork spec. */
  services: Record<string, Endpoint | { kubernetes: Record<string, unknown> }>;
  /** PostgreSQL databases the sandbox gets its own copy of (resource `<db>-db`, type `postgres`). */
  databases: string[];
  resources: Record<string, { type: string; spec: Record<string, unknown> }>;
  /** Route groups the sandbox joins. */
  groups: string[];
}

// The registry's rules for these (packages/registry/src/schemas.ts); the routing key's rule is
// core's, and the sandbox name follows it.
/** Label added to a sandbox that joins group NAME (when this command creates the group). */
export const groupLabel = (group: string): string => `group.${group}`;
/** Group names this command may create: `group.<name>` must fit a label name (63 characters). */
const MAX_GROUP_NAME = 63 - groupLabel('').length;
const TOP = ['$schema', 'name', 'key', 'ttl', 'labels', 'services', 'databases', 'resources', 'groups'];

/** A spec that cannot be used: exit 2, the message names the file and the field. */
function invalid(file: string, problems: string[]): CliError {
  return new CliError(`${file} is not a valid sandbox spec: ${problems.join('; ')}`, EXIT.usage);
}

const show = (v: unknown) => JSON.stringify(v);
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads the file (`-` = stdin) and parses it as YAML (JSON is YAML too). */
export function readSpecFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CliError(
      `-f ${file}: cannot read it (${e.code === 'ENOENT' ? 'no such file' : e.message})`,
      EXIT.usage,
    );
  }
  try {
    return parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    throw new CliError(
      `${file} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`,
      EXIT.usage,
    );
  }
}

const VAR = /\$\$\{|\$\{([^}]*)\}/g;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Fills `${NAME}` and `${NAME:-default}` in every string value (not in keys) from `env`;
 * `$${` stands for a literal `${`. All variables that are unset (and have no default) are named
 * in one error, with the fields that use them.
 */
export function interpolate(
  doc: unknown,
  env: NodeJS.ProcessEnv,
  file: string,
  only?: (path: string) => boolean,
): unknown {
  const missing = new Map<string, string[]>();
  const bad: string[] = [];
  const walk = (v: unknown, path: string): unknown => {
    if (typeof v === 'string') {
      if (only && !only(path)) return v;
      return v.replace(VAR, (m, expr: string | undefined) => {
        if (expr === undefined) return '${';
        const dash = expr.indexOf(':-');
        const name = dash < 0 ? expr : expr.slice(0, dash);
        if (!VAR_NAME.test(name)) {
          bad.push(`${path}: ${m} is not a variable reference; write \${NAME} or \${NAME:-default}`);
          return m;
        }
        const value = env[name];
        if (value !== undefined && value !== '') return value;
        if (dash >= 0) return expr.slice(dash + 2);
        missing.set(name, [...(missing.get(name) ?? []), path]);
        return m;
      });
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}.${i}`));
    if (isObject(v))
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, path ? `${path}.${k}` : k)]));
    return v;
  };
  const out = walk(doc, '');
  for (const [name, paths] of missing)
    bad.push(
      `${paths.join(', ')}: the environment variable ${name} is not set (set it, or write \${${name}:-default})`,
    );
  if (bad.length) throw invalid(file, bad);
  return out;
}

function endpointList(v: unknown, path: string, kind: 'http' | 'grpc', problems: string[]): void {
  const list = Array.isArray(v) ? v : [v];
  if (Array.isArray(v) && v.length === 0) problems.push(`${path}: must not be an empty list`);
  list.forEach((e, i) => {
    const p = Array.isArray(v) ? `${path}.${i}` : path;
    if (typeof e !== 'string' || e.length === 0) {
      problems.push(`${p}: must be ${kind === 'http' ? 'a URL' : 'a host:port'} string (got ${show(e)})`);
      return;
    }
    if (kind === 'http') {
      let ok = false;
      try {
        ok = ['http:', 'https:'].includes(new URL(e).protocol);
      } catch {}
      if (!ok)
        problems.push(
          `${p}: must be an absolute http(s) URL such as "http://10.0.0.7:8080" (got ${show(e)})`,
        );
    } else if (/\s/.test(e))
      problems.push(`${p}: a gRPC target looks like "10.0.0.7:50051" (got ${show(e)})`);
  });
}

/**
 * Checks an interpolated document; returns the spec with defaults, or throws one CliError
 * (exit 2) listing each problem as `field.path: what is wrong (got …)`.
 */
export function checkSandboxSpec(doc: unknown, file: string): SandboxSpecFile {
  const problems: string[] = [];
  if (!isObject(doc))
    throw invalid(file, [`the file must hold an object with at least "name" (got ${show(doc)})`]);
  for (const k of Object.keys(doc))
    if (!TOP.includes(k))
      problems.push(`${k}: not a field of a sandbox spec; the fields are ${TOP.slice(1).join(', ')}`);

  const name = doc.name;
  if (!isValidRoutingKey(name))
    problems.push(
      `name: must be a sandbox name: lowercase letters, digits and inner hyphens, at most 63 (got ${show(name)})`,
    );
  if (doc.key !== undefined && !isValidRoutingKey(doc.key))
    problems.push(
      `key: must be a routing key: lowercase letters, digits and inner hyphens, at most 63 (got ${show(doc.key)})`,
    );
  if (
    doc.ttl !== undefined &&
    !(
      (typeof doc.ttl === 'string' || (typeof doc.ttl === 'number' && doc.ttl > 0)) &&
      parseDuration(doc.ttl) !== undefined
    )
  )
    problems.push(`ttl: must be a duration such as "2h", "3d" or a number of seconds (got ${show(doc.ttl)})`);

  const labels: Record<string, string> = {};
  if (doc.labels !== undefined) {
    if (!isObject(doc.labels))
      problems.push(`labels: must be an object of names to values (got ${show(doc.labels)})`);
    else
      for (const [k, v] of Object.entries(doc.labels)) {
        if (!LABEL_NAME_PATTERN.test(k))
          problems.push(`labels: ${show(k)} is not a label name (letters, digits, . _ / -, at most 63)`);
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
          labels[k] = String(v);
          if (labels[k]!.length > 253) problems.push(`labels.${k}: longer than 253 characters`);
        } else problems.push(`labels.${k}: must be a string (got ${show(v)})`);
      }
  }

  const services: SandboxSpecFile['services'] = {};
  if (doc.services !== undefined) {
    if (!isObject(doc.services))
      problems.push(`services: must be an object of service names to overrides (got ${show(doc.services)})`);
    else
      for (const [svc, ov] of Object.entries(doc.services)) {
        const path = `services.${svc}`;
        if (!SERVICE_NAME_PATTERN.test(svc))
          problems.push(`services: ${show(svc)} is not a service name (letters, digits, . _ -)`);
        if (!isObject(ov)) {
          problems.push(
            `${path}: must be {http: URL}, {grpc: host:port} or {kubernetes: {deployment, image}} (got ${show(ov)})`,
          );
          continue;
        }
        if ('kubernetes' in ov) {
          const extra = Object.keys(ov).filter((k) => k !== 'kubernetes');
          if (extra.length)
            problems.push(
              `${path}: a Kubernetes fork gets its endpoint from the fork; leave out ${extra.join(', ')}`,
            );
          if (!isObject(ov.kubernetes))
            problems.push(
              `${path}.kubernetes: must be a fork spec like {deployment: orders, image: registry/orders:pr-42} (got ${show(ov.kubernetes)})`,
            );
          else {
            for (const f of ['deployment', 'image'])
              if (typeof ov.kubernetes[f] !== 'string' || ov.kubernetes[f] === '')
                problems.push(`${path}.kubernetes.${f}: required, a string (got ${show(ov.kubernetes[f])})`);
            if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(svc))
              problems.push(
                `${path}: a forked service's name names its resource too, so it must be lowercase letters, digits and hyphens`,
              );
          }
          services[svc] = { kubernetes: isObject(ov.kubernetes) ? ov.kubernetes : {} };
          continue;
        }
        for (const k of Object.keys(ov))
          if (k !== 'http' && k !== 'grpc')
            problems.push(`${path}.${k}: not a field of an override; use http, grpc or kubernetes`);
        if (ov.http === undefined && ov.grpc === undefined)
          problems.push(`${path}: needs http (a URL), grpc (host:port) or kubernetes (a fork spec)`);
        if (ov.http !== undefined) endpointList(ov.http, `${path}.http`, 'http', problems);
        if (ov.grpc !== undefined) endpointList(ov.grpc, `${path}.grpc`, 'grpc', problems);
        services[svc] = {
          ...(ov.http !== undefined ? { http: ov.http as string | string[] } : {}),
          ...(ov.grpc !== undefined ? { grpc: ov.grpc as string | string[] } : {}),
        };
      }
  }

  const stringList = (field: 'databases' | 'groups', check: (s: string) => string | undefined) => {
    const v = doc[field];
    if (v === undefined) return [];
    if (!Array.isArray(v)) {
      problems.push(`${field}: must be a list (got ${show(v)})`);
      return [];
    }
    v.forEach((x, i) => {
      const why = typeof x === 'string' ? check(x) : 'must be a string';
      if (why) problems.push(`${field}.${i}: ${why} (got ${show(x)})`);
    });
    return v.filter((x): x is string => typeof x === 'string');
  };
  const databases = stringList('databases', (s) =>
    /^[A-Za-z_][A-Za-z0-9_$-]{0,62}$/.test(s) ? undefined : 'must be a PostgreSQL database name',
  );
  const groups = stringList('groups', (s) =>
    isValidRoutingKey(s) && s.length <= MAX_GROUP_NAME
      ? undefined
      : `must be a route group name: lowercase letters, digits and inner hyphens, at most ${MAX_GROUP_NAME}`,
  );

  const resources: SandboxSpecFile['resources'] = {};
  if (doc.resources !== undefined) {
    if (!isObject(doc.resources))
      problems.push(
        `resources: must be an object of resource names to {type, spec} (got ${show(doc.resources)})`,
      );
    else
      for (const [r, v] of Object.entries(doc.resources)) {
        const path = `resources.${r}`;
        if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(r))
          problems.push(`resources: ${show(r)} is not a resource name (lowercase letters, digits, hyphens)`);
        if (!isObject(v)) {
          problems.push(`${path}: must be {type, spec} (got ${show(v)})`);
          continue;
        }
        for (const k of Object.keys(v))
          if (k !== 'type' && k !== 'spec')
            problems.push(`${path}.${k}: not a field of a resource; use type and spec`);
        if (typeof v.type !== 'string' || v.type === '')
          problems.push(`${path}.type: required, the resource type such as "postgres" (got ${show(v.type)})`);
        if (v.spec !== undefined && !isObject(v.spec))
          problems.push(`${path}.spec: must be an object (got ${show(v.spec)})`);
        resources[r] = { type: String(v.type), spec: isObject(v.spec) ? v.spec : {} };
      }
  }
  if (problems.length) throw invalid(file, problems);
  return {
    name: name as string,
    ...(doc.key !== undefined ? { key: doc.key as string } : {}),
    ...(doc.ttl !== undefined ? { ttl: doc.ttl as string | number } : {}),
    labels,
    services,
    databases,
    resources,
    groups,
  };
}

/** The PostgreSQL resource of a `databases` entry, named like `sandbox create --db`. */
export function databaseResourceName(db: string): string {
  return `${db
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')}-db`;
}

/** What `@branchline/kubernetes` offers this command (loaded when installed; see loadKubernetes). */
export interface KubernetesModule {
  checkForkSpec(spec: unknown): void;
  forkEndpoints(
    sandbox: string,
    spec: unknown,
    options: { namespaces: readonly string[] },
  ): { service: string; endpoint: { http?: string; grpc?: string } };
}

/**
 * `@branchline/kubernetes`, when installed, for checking fork specs before they are sent and
 * for the endpoints of `register: declared` forks; undefined when it is not (the registry, which
 * has it, checks the spec then).
 */
export async function loadKubernetes(): Promise<KubernetesModule | undefined> {
  const name = '@branchline/kubernetes';
  try {
    return (await import(name)) as KubernetesModule;
  } catch {
    return undefined;
  }
}

/** The registry's PUT body for the spec: overrides, resources (forks, databases), labels. */
export function sandboxBody(
  spec: SandboxSpecFile,
  file: string,
  k8s: KubernetesModule | undefined,
): {
  overrides: Record<string, Endpoint>;
  resources: Record<string, { type: string; spec: Record<string, unknown> }>;
  labels: Record<string, string>;
  key?: string;
  ttl?: string | number;
} {
  const problems: string[] = [];
  const overrides: Record<string, Endpoint> = {};
  const resources: Record<string, { type: string; spec: Record<string, unknown> }> = {};
  const add = (name: string, r: { type: string; spec: Record<string, unknown> }, from: string) => {
    if (resources[name])
      problems.push(`${from}: its resource is named ${show(name)}, like another one; rename one`);
    resources[name] = r;
  };
  for (const [svc, ov] of Object.entries(spec.services)) {
    if (!('kubernetes' in ov)) {
      overrides[svc] = ov;
      continue;
    }
    const fork: Record<string, unknown> = { service: svc, ...ov.kubernetes };
    const path = `services.${svc}.kubernetes`;
    try {
      k8s?.checkForkSpec(fork);
    } catch (err) {
      problems.push(
        `${(err as Error).message.replace(/^kubernetes-fork: /, '').replace(/^spec\./, `${path}.`)}`,
      );
      continue;
    }
    if (fork.register === 'declared') {
      if (!k8s)
        problems.push(`${path}.register: "declared" needs @branchline/kubernetes installed next to the CLI`);
      else if (typeof fork.namespace !== 'string')
        problems.push(
          `${path}.namespace: required with register "declared" (the endpoint is computed from it)`,
        );
      else
        overrides[svc] = k8s.forkEndpoints(spec.name, fork, {
          namespaces: [fork.namespace as string],
        }).endpoint;
    }
    add(svc, { type: KUBERNETES_FORK, spec: fork }, `services.${svc}`);
  }
  spec.databases.forEach((db, i) => {
    add(databaseResourceName(db), { type: 'postgres', spec: { from: db } }, `databases.${i}`);
  });
  for (const [r, v] of Object.entries(spec.resources)) add(r, v, `resources.${r}`);
  if (problems.length) throw invalid(file, problems);
  const labels = { ...spec.labels };
  return {
    overrides,
    resources,
    labels,
    ...(spec.key !== undefined ? { key: spec.key } : {}),
    ...(spec.ttl !== undefined ? { ttl: spec.ttl } : {}),
  };
}

/**
 * A registry refusal rewritten in the file's terms: the registry names the resources it was
 * sent (`resources.orders.spec: kubernetes-fork: spec.namespace …`); the file declared them as
 * `services.orders.kubernetes` or `databases.0`.
 */
export function inSpecTerms(message: string, spec: SandboxSpecFile): string {
  const origins = new Map<string, string>();
  for (const [svc, ov] of Object.entries(spec.services))
    if ('kubernetes' in ov) origins.set(svc, `services.${svc}.kubernetes`);
  spec.databases.forEach((db, i) => {
    origins.set(databaseResourceName(db), `databases.${i}`);
  });
  return message.replace(
    /resources\.([a-z0-9-]+)\.(?:spec|type): (?:kubernetes-fork: spec\.([\w.]+))?/g,
    (m, name: string, field: string | undefined) => {
      const origin = origins.get(name);
      if (!origin) return m;
      return field ? `${origin}.${field}` : `${origin}: `;
    },
  );
}

/** Reads, interpolates and checks a spec file. */
export function loadSandboxSpec(file: string, env: NodeJS.ProcessEnv = process.env): SandboxSpecFile {
  return checkSandboxSpec(interpolate(readSpecFile(file), env, file), file);
}

/**
 * Only the sandbox's name, for `sandbox delete -f`: the other fields may use variables a
 * clean-up job does not have (the image tag of a build that never ran).
 */
export function specName(file: string, env: NodeJS.ProcessEnv = process.env): string {
  const doc = interpolate(readSpecFile(file), env, file, (path) => path === 'name');
  const name = isObject(doc) ? doc.name : undefined;
  if (!isValidRoutingKey(name))
    throw invalid(file, [
      `name: must be a sandbox name: lowercase letters, digits and inner hyphens, at most 63 (got ${show(name)})`,
    ]);
  return name;
}
