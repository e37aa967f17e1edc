// `branchline registry --plugin @branchline/kubernetes/plugin`: the kubernetes-fork resource
// hook, configured from the registry's environment (see the package README for the variables).
import type { ResourceHook } from '@branchline/core/transport';
import { kubernetesForkHook } from './hook.js';
import { KubernetesForkError } from './spec.js';
import type { KubernetesForkHookOptions } from './types.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function duration(name: string, v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m || Number(m[1]) <= 0)
    throw new KubernetesForkError(
      `${name}=${JSON.stringify(v)} is not a duration such as 5m, 90s or 300 (seconds)`,
    );
  return Number(m[1]) * UNITS[m[2] ?? 's']!;
}

/** The hook's options from `BRANCHLINE_KUBERNETES_*` variables; throws an error naming the variable. */
export function forkHookOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): KubernetesForkHookOptions {
  const namespaces = (env.BRANCHLINE_KUBERNETES_NAMESPACES ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (namespaces.length === 0)
    throw new KubernetesForkError(
      'BRANCHLINE_KUBERNETES_NAMESPACES is unset: list the namespaces sandbox forks may be created in, e.g. shop,payments',
    );
  const options: KubernetesForkHookOptions = { namespaces };
  const registry = env.BRANCHLINE_KUBERNETES_REGISTRY_URL?.trim();
  if (registry) options.registry = registry;
  const secret = env.BRANCHLINE_KUBERNETES_TOKEN_SECRET?.trim();
  if (secret) {
    const [name, key] = secret.split('/');
    options.tokenSecret = { name: name!, ...(key ? { key } : {}) };
  }
  const timeout = duration(
    'BRANCHLINE_KUBERNETES_ROLLOUT_TIMEOUT',
    env.BRANCHLINE_KUBERNETES_ROLLOUT_TIMEOUT,
  );
  if (timeout !== undefined) options.rolloutTimeoutMs = timeout;
  const instance = env.BRANCHLINE_KUBERNETES_INSTANCE?.trim();
  if (instance) options.instance = instance;
  return options;
}

/** Called by `branchline registry --plugin`: one kubernetes-fork hook talking to the cluster it runs in. */
export function resourceHooks(): ResourceHook[] {
  return [kubernetesForkHook(forkHookOptionsFromEnv())];
}
