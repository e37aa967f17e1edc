import { createHash } from 'node:crypto';
import { warnDeprecatedOption } from '@branchline/core/transport';

/** Labels every object of a fork carries: how it is found (`kubectl get deploy,svc -l …`) and swept. */
export const LABELS = {
  managedBy: 'app.kubernetes.io/managed-by',
  sandbox: 'branchline.dev/sandbox',
  resource: 'branchline.dev/resource',
  instance: 'branchline.dev/instance',
} as const;
export const MANAGED_BY = 'branchline';
/** Annotation on the fork's Deployment and Service: the baseline it was copied from (`namespace/name`). */
export const FORK_OF_ANNOTATION = 'branchline.dev/fork-of';

const DNS_LABEL_MAX = 63;

/**
 * The name of a fork's Deployment and Service: `<deployment>-<sandbox>`, e.g. `orders-pr-42`.
 * A Service name must be a DNS label (≤ 63 characters, starting with a letter), so a longer name
 * is cut and ends in 8 characters of a hash of the whole, and one starting with a digit gets `bl-`.
 */
export function sandboxDeploymentName(deployment: string, sandbox: string): string {
  const full = `${deployment}-${sandbox}`;
  const ok = /^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(full) && full.length <= DNS_LABEL_MAX;
  if (ok) return full;
  const hash = createHash('sha256').update(`${deployment}/${sandbox}`).digest('hex').slice(0, 8);
  let stem = full.toLowerCase().replace(/[^-a-z0-9]/g, '-');
  if (!/^[a-z]/.test(stem)) stem = `bl-${stem}`;
  stem = stem.slice(0, DNS_LABEL_MAX - hash.length - 1).replace(/-+$/, '');
  return `${stem}-${hash}`;
}

/**
 * @deprecated Use `sandboxDeploymentName(deployment, sandbox)`, the same function under the name
 * every package's name helper follows.
 */
export function forkName(deployment: string, sandbox: string): string {
  warnDeprecatedOption('@branchline/kubernetes', 'forkName()', 'sandboxDeploymentName()');
  return sandboxDeploymentName(deployment, sandbox);
}

/** In-cluster DNS name of a Service. */
export function serviceHost(name: string, namespace: string): string {
  return `${name}.${namespace}.svc.cluster.local`;
}

/** The label selector of one sandbox's forks in a namespace, for `kubectl` and for the sweep. */
export function forkSelector(instance: string, sandbox?: string): string {
  const parts = [`${LABELS.managedBy}=${MANAGED_BY}`, `${LABELS.instance}=${instance}`];
  if (sandbox) parts.push(`${LABELS.sandbox}=${sandbox}`);
  return parts.join(',');
}
