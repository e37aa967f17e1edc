// An in-memory stand-in for the one module that talks to Kubernetes (`KubernetesApi`). It keeps
// objects by kind, namespace and name the way the API server does for these calls: uids,
// resourceVersions (a stale replace is a 409), generations, 404 and 409 answers, delete
// preconditions, label-selector lists, and the garbage collector deleting a Service whose owner
// Deployment is gone. Every object written is checked against the Kubernetes schema (schema.ts)
// and refused with a 422 like the API server's when it does not fit. The Deployment controller is
// a function the test sets: it decides what a fork's status says when it is read.
import { randomUUID } from 'node:crypto';
import { type Deployment, type KubernetesApi, KubernetesApiError, type Service } from '../src/index.js';
import { schemaProblems } from './schema.js';

type Kind = 'Deployment' | 'Service';
type Obj = Deployment | Service;

/** What the stand-in's Deployment controller reports; default: every replica available at once. */
export type Controller = (d: Deployment) => Deployment['status'];

export const available: Controller = (d) => ({
  observedGeneration: d.metadata?.generation,
  replicas: d.spec?.replicas ?? 1,
  updatedReplicas: d.spec?.replicas ?? 1,
  readyReplicas: d.spec?.replicas ?? 1,
  availableReplicas: d.spec?.replicas ?? 1,
  conditions: [{ type: 'Available', status: 'True' }],
});

export class FakeKubernetes implements KubernetesApi {
  private readonly objects = new Map<string, Obj>();
  private version = 1;
  /** Every call that changed something, in order: `create Deployment shop/orders-pr-42`. */
  readonly writes: string[] = [];
  /** Every call, reads included. */
  readonly calls: string[] = [];
  controller: Controller = available;
  /** Answer every call with this error instead (the API server away, RBAC missing). */
  failWith: KubernetesApiError | undefined;

  /** Puts an object in place as if someone had applied it (the baseline). */
  seed(o: Obj): void {
    const kind = o.kind as Kind;
    const stored = this.stamp(structuredClone(o));
    stored.metadata!.generation = 1;
    this.objects.set(this.key(kind, o.metadata!.namespace!, o.metadata!.name!), stored);
  }

  get(kind: 'Deployment', namespace: string, name: string): Deployment | undefined;
  get(kind: 'Service', namespace: string, name: string): Service | undefined;
  get(kind: Kind, namespace: string, name: string): Obj | undefined {
    const o = this.objects.get(this.key(kind, namespace, name));
    return o && structuredClone(o);
  }

  /** Every object of `kind`, as `namespace/name`. */
  names(kind: Kind): string[] {
    return [...this.objects.keys()]
      .filter((k) => k.startsWith(`${kind}/`))
      .map((k) => k.slice(kind.length + 1))
      .sort();
  }

  /** Ages an object, as if it had been created `ms` ago. */
  age(kind: Kind, namespace: string, name: string, ms: number): void {
    const o = this.objects.get(this.key(kind, namespace, name));
    if (o?.metadata) o.metadata.creationTimestamp = new Date(Date.now() - ms);
  }

  private key(kind: Kind, namespace: string, name: string) {
    return `${kind}/${namespace}/${name}`;
  }

  private stamp<T extends Obj>(o: T): T {
    o.metadata = {
      ...o.metadata,
      uid: o.metadata?.uid ?? randomUUID(),
      resourceVersion: String(++this.version),
      creationTimestamp: o.metadata?.creationTimestamp ?? new Date(),
    };
    return o;
  }

  private enter(call: string, write: boolean): void {
    this.calls.push(call);
    if (write) this.writes.push(call);
    if (this.failWith) throw this.failWith;
  }

  private async check(o: Obj): Promise<void> {
    const problems = await schemaProblems(o);
    if (problems.length)
      throw new KubernetesApiError(422, `${o.kind} ${o.metadata?.name} is invalid: ${problems.join('; ')}`);
  }

  private read<T extends Obj>(kind: Kind, namespace: string, name: string): T | undefined {
    this.enter(`read ${kind} ${namespace}/${name}`, false);
    const o = this.objects.get(this.key(kind, namespace, name)) as T | undefined;
    if (!o) return undefined;
    if (kind === 'Deployment' && o.metadata?.labels?.['app.kubernetes.io/managed-by'] === 'branchline')
      (o as Deployment).status = this.controller(structuredClone(o as Deployment));
    return structuredClone(o);
  }

  private async create<T extends Obj>(kind: Kind, o: T): Promise<T> {
    const { namespace, name } = o.metadata as { namespace: string; name: string };
    this.enter(`create ${kind} ${namespace}/${name}`, true);
    await this.check(o);
    const key = this.key(kind, namespace, name);
    if (this.objects.has(key))
      throw new KubernetesApiError(409, `${kind} ${namespace}/${name} already exists`);
    if (o.metadata?.resourceVersion)
      throw new KubernetesApiError(400, 'resourceVersion should not be set on objects to be created');
    const stored = this.stamp(structuredClone(o));
    stored.metadata!.generation = 1;
    this.objects.set(key, stored);
    return structuredClone(stored);
  }

  private async replace<T extends Obj>(kind: Kind, o: T): Promise<T> {
    const { namespace, name } = o.metadata as { namespace: string; name: string };
    this.enter(`replace ${kind} ${namespace}/${name}`, true);
    await this.check(o);
    const key = this.key(kind, namespace, name);
    const cur = this.objects.get(key);
    if (!cur) throw new KubernetesApiError(404, `${kind} ${namespace}/${name} not found`);
    if (o.metadata?.resourceVersion !== cur.metadata?.resourceVersion)
      throw new KubernetesApiError(
        409,
        `the object has been modified; please apply your changes to the latest version`,
      );
    if (kind === 'Service' && (cur as Service).spec?.clusterIP !== (o as Service).spec?.clusterIP)
      throw new KubernetesApiError(422, 'spec.clusterIP: Invalid value: field is immutable');
    const stored = this.stamp(structuredClone(o));
    stored.metadata!.uid = cur.metadata!.uid;
    stored.metadata!.creationTimestamp = cur.metadata!.creationTimestamp;
    stored.metadata!.generation = (cur.metadata?.generation ?? 1) + 1;
    this.objects.set(key, stored);
    return structuredClone(stored);
  }

  private remove(kind: Kind, namespace: string, name: string, uid?: string): boolean {
    this.enter(`delete ${kind} ${namespace}/${name}`, true);
    const key = this.key(kind, namespace, name);
    const cur = this.objects.get(key);
    if (!cur) return false;
    if (uid && cur.metadata?.uid !== uid)
      throw new KubernetesApiError(
        409,
        `Precondition failed: UID in precondition: ${uid}, UID in object meta: ${cur.metadata?.uid}`,
      );
    this.objects.delete(key);
    // The garbage collector: dependents of a deleted owner go too.
    for (const [k, o] of this.objects)
      if (o.metadata?.ownerReferences?.some((r) => r.uid === cur.metadata?.uid)) this.objects.delete(k);
    return true;
  }

  private list<T extends Obj>(kind: Kind, namespace: string, selector?: string): T[] {
    this.enter(`list ${kind} ${namespace}${selector ? ` ${selector}` : ''}`, false);
    const want = (selector ?? '')
      .split(',')
      .filter(Boolean)
      .map((p) => p.split('=') as [string, string]);
    return [...this.objects.entries()]
      .filter(([k]) => k.startsWith(`${kind}/${namespace}/`))
      .map(([, o]) => o as T)
      .filter((o) => want.every(([k, v]) => o.metadata?.labels?.[k] === v))
      .map((o) => structuredClone(o));
  }

  readDeployment = async (ns: string, name: string) => this.read<Deployment>('Deployment', ns, name);
  createDeployment = (d: Deployment) => this.create('Deployment', d);
  replaceDeployment = (d: Deployment) => this.replace('Deployment', d);
  deleteDeployment = async (ns: string, name: string, uid?: string) =>
    this.remove('Deployment', ns, name, uid);
  listDeployments = async (ns: string, selector: string) => this.list<Deployment>('Deployment', ns, selector);
  readService = async (ns: string, name: string) => this.read<Service>('Service', ns, name);
  createService = (s: Service) => this.create('Service', s);
  replaceService = (s: Service) => this.replace('Service', s);
  deleteService = async (ns: string, name: string, uid?: string) => this.remove('Service', ns, name, uid);
  listServices = async (ns: string, selector?: string) => this.list<Service>('Service', ns, selector);
}

/** A baseline as a team would have it: Deployment `orders` in `shop` with its Service. */
export function shopBaseline(): { deployment: Deployment; service: Service } {
  return {
    deployment: {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {
        name: 'orders',
        namespace: 'shop',
        labels: { app: 'orders', 'app.kubernetes.io/instance': 'shop' },
      },
      spec: {
        replicas: 3,
        selector: { matchLabels: { app: 'orders' } },
        template: {
          metadata: {
            labels: { app: 'orders', tier: 'backend', team: 'checkout' },
            annotations: { 'prometheus.io/scrape': 'true' },
          },
          spec: {
            serviceAccountName: 'orders',
            containers: [
              {
                name: 'orders',
                image: 'ghcr.io/acme/orders:1.8.0',
                ports: [
                  { name: 'http', containerPort: 8080 },
                  { name: 'metrics', containerPort: 9090 },
                ],
                env: [
                  { name: 'BRANCHLINE_SERVICE', value: 'orders' },
                  { name: 'BRANCHLINE_REGISTRY', value: 'http://branchline-registry.branchline.svc:7070' },
                  {
                    name: 'BRANCHLINE_TOKEN',
                    valueFrom: { secretKeyRef: { name: 'branchline-service-token', key: 'token' } },
                  },
                  { name: 'DATABASE_URL', valueFrom: { secretKeyRef: { name: 'orders-db', key: 'url' } } },
                  { name: 'LOG_LEVEL', value: 'info' },
                ],
                readinessProbe: { httpGet: { path: '/healthz', port: 'http' } },
              },
              { name: 'log-shipper', image: 'fluent/fluent-bit:3.0' },
            ],
          },
        },
      },
    },
    service: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'orders', namespace: 'shop' },
      spec: {
        selector: { app: 'orders', tier: 'backend' },
        ports: [{ name: 'http', port: 80, targetPort: 'http' }],
      },
    },
  };
}
