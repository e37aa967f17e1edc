// The one module that talks to the Kubernetes API. Everything else in this package builds
// objects and decides what to do; tests replace this module with an in-memory one.
import type { KubeConfig } from '@kubernetes/client-node';
import type { Deployment, Service } from './types.js';

/** What the fork hook needs from Kubernetes: Deployments and Services, by namespace and name. */
export interface KubernetesApi {
  /** The Deployment, or undefined when there is none. */
  readDeployment(namespace: string, name: string): Promise<Deployment | undefined>;
  /** Creates it; rejects with an error whose `status` is 409 when one of that name exists. */
  createDeployment(deployment: Deployment): Promise<Deployment>;
  /** Replaces it; `metadata.resourceVersion` must be the one read (409 when it changed since). */
  replaceDeployment(deployment: Deployment): Promise<Deployment>;
  /** Deletes it (and, in the background, its ReplicaSets and pods) if its uid is still `uid`; false when gone. */
  deleteDeployment(namespace: string, name: string, uid?: string): Promise<boolean>;
  listDeployments(namespace: string, labelSelector: string): Promise<Deployment[]>;
  readService(namespace: string, name: string): Promise<Service | undefined>;
  createService(service: Service): Promise<Service>;
  replaceService(service: Service): Promise<Service>;
  deleteService(namespace: string, name: string, uid?: string): Promise<boolean>;
  /** The namespace's Services (all of them without a selector). */
  listServices(namespace: string, labelSelector?: string): Promise<Service[]>;
}

/** A refusal or failure of the Kubernetes API, with its HTTP status (0 when it could not be reached). */
export class KubernetesApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'KubernetesApiError';
  }
}

export interface KubernetesApiOptions {
  /** A loaded `KubeConfig`. Default: `loadFromDefault()` (the pod's service account in a cluster, else `KUBECONFIG` or `~/.kube/config`). */
  kubeConfig?: KubeConfig;
}

type Client = typeof import('@kubernetes/client-node');
type Apis = {
  apps: import('@kubernetes/client-node').AppsV1Api;
  core: import('@kubernetes/client-node').CoreV1Api;
};

/** What to do about a refusal, for the statuses a person can act on. */
function hint(status: number, what: string, namespace: string): string {
  if (status === 401)
    return '; the registry could not authenticate to Kubernetes (check its service account token or KUBECONFIG)';
  if (status === 403)
    return `; give the registry's service account the right to ${what} in namespace ${namespace} (deploy/kubernetes/fork-rbac)`;
  return '';
}

/**
 * The Kubernetes API through `@kubernetes/client-node` (loaded on first use). Errors become
 * `KubernetesApiError`s that name the call, the object and, for 401/403, the fix.
 */
export function createKubernetesApi(options: KubernetesApiOptions = {}): KubernetesApi {
  let apis: Promise<Apis> | undefined;
  const load = (): Promise<Apis> => {
    apis ??= (async () => {
      let k8s: Client;
      try {
        k8s = await import('@kubernetes/client-node');
      } catch (err) {
        throw new KubernetesApiError(
          0,
          `@branchline/kubernetes needs @kubernetes/client-node: npm install @kubernetes/client-node (${(err as Error).message})`,
        );
      }
      const kc = options.kubeConfig ?? new k8s.KubeConfig();
      if (!options.kubeConfig) kc.loadFromDefault();
      return { apps: kc.makeApiClient(k8s.AppsV1Api), core: kc.makeApiClient(k8s.CoreV1Api) };
    })();
    return apis;
  };

  /** Runs one call; `missing` is returned for a 404 (undefined: a 404 is an error). */
  async function call<T>(
    verb: string,
    kind: string,
    namespace: string,
    name: string | undefined,
    fn: (a: Apis) => Promise<T>,
    missing?: { value: T },
  ): Promise<T> {
    const a = await load();
    try {
      return await fn(a);
    } catch (err) {
      const status =
        typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 0;
      if (status === 404 && missing) return missing.value;
      const what = `${verb} ${kind}s`;
      const target = name ? `${kind} ${namespace}/${name}` : `${kind}s in ${namespace}`;
      throw new KubernetesApiError(
        status,
        `Kubernetes: ${verb} ${target} failed (${status || 'no answer'}: ${reason(err)})${hint(status, what, namespace)}`,
      );
    }
  }

  const meta = (o: Deployment | Service) => {
    const name = o.metadata?.name;
    const namespace = o.metadata?.namespace;
    if (!name || !namespace)
      throw new TypeError('a Kubernetes object needs metadata.name and metadata.namespace');
    return { name, namespace };
  };
  const deleteOptions = (uid: string | undefined) => ({
    propagationPolicy: 'Background',
    ...(uid ? { preconditions: { uid } } : {}),
  });

  return {
    readDeployment: (namespace, name) =>
      call(
        'read',
        'Deployment',
        namespace,
        name,
        (a) => a.apps.readNamespacedDeployment({ name, namespace }),
        {
          value: undefined,
        },
      ),
    createDeployment: (d) => {
      const { namespace, name } = meta(d);
      return call('create', 'Deployment', namespace, name, (a) =>
        a.apps.createNamespacedDeployment({ namespace, body: d }),
      );
    },
    replaceDeployment: (d) => {
      const { namespace, name } = meta(d);
      return call('replace', 'Deployment', namespace, name, (a) =>
        a.apps.replaceNamespacedDeployment({ name, namespace, body: d }),
      );
    },
    deleteDeployment: (namespace, name, uid) =>
      call(
        'delete',
        'Deployment',
        namespace,
        name,
        async (a) => {
          await a.apps.deleteNamespacedDeployment({ name, namespace, body: deleteOptions(uid) });
          return true;
        },
        { value: false },
      ),
    listDeployments: (namespace, labelSelector) =>
      call('list', 'Deployment', namespace, undefined, async (a) => {
        return (await a.apps.listNamespacedDeployment({ namespace, labelSelector })).items;
      }),
    readService: (namespace, name) =>
      call('read', 'Service', namespace, name, (a) => a.core.readNamespacedService({ name, namespace }), {
        value: undefined,
      }),
    createService: (s) => {
      const { namespace, name } = meta(s);
      return call('create', 'Service', namespace, name, (a) =>
        a.core.createNamespacedService({ namespace, body: s }),
      );
    },
    replaceService: (s) => {
      const { namespace, name } = meta(s);
      return call('replace', 'Service', namespace, name, (a) =>
        a.core.replaceNamespacedService({ name, namespace, body: s }),
      );
    },
    deleteService: (namespace, name, uid) =>
      call(
        'delete',
        'Service',
        namespace,
        name,
        async (a) => {
          await a.core.deleteNamespacedService({ name, namespace, body: deleteOptions(uid) });
          return true;
        },
        { value: false },
      ),
    listServices: (namespace, labelSelector) =>
      call('list', 'Service', namespace, undefined, async (a) => {
        return (
          await a.core.listNamespacedService({ namespace, ...(labelSelector ? { labelSelector } : {}) })
        ).items;
      }),
  };
}

/** The API server's own words (a Status object's message) or the client's. */
function reason(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = body;
    }
  }
  if (parsed && typeof parsed === 'object' && typeof (parsed as { message?: unknown }).message === 'string')
    return (parsed as { message: string }).message;
  if (typeof parsed === 'string' && parsed.trim()) return parsed.trim().slice(0, 300);
  // fetch's "fetch failed" says nothing; its cause says ECONNREFUSED, ENOTFOUND, a TLS problem…
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const why = cause?.code ?? cause?.message;
  return `${(err as Error)?.message ?? String(err)}${why ? ` (${why})` : ''}`;
}
