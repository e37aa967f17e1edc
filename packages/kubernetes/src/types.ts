import type { V1Deployment, V1Service } from '@kubernetes/client-node';
import type { KubernetesApi } from './api.js';

export type { ResourceContext, ResourceHook, ResourceProgress } from '@branchline/core/transport';

/** A Deployment as the Kubernetes API returns and accepts it (`@kubernetes/client-node`'s type). */
export type Deployment = V1Deployment;
/** A Service as the Kubernetes API returns and accepts it. */
export type Service = V1Service;

/**
 * How the fork's endpoint reaches the registry.
 * - `self` (default): the workload calls `announceWorkload()` from `@branchline/core`; the fork
 *   sets `BRANCHLINE_ANNOUNCE_HTTP`/`_GRPC` to its pod's IP, so each ready pod announces itself
 *   and withdraws on SIGTERM. Needs a token that may announce (see `tokenSecret`).
 * - `declared`: the workload does nothing; the sandbox declares the fork's Service URL in its
 *   `overrides` (`forkEndpoints()` computes it). For workloads that do not use Branchline's SDK.
 */
export type ForkRegistration = 'self' | 'declared';

/** The spec of a `kubernetes-fork` resource, as declared on a sandbox (`resources.<name>.spec`). */
export interface KubernetesForkSpec {
  /** The baseline Deployment to copy. */
  deployment: string;
  /** Its namespace (the fork goes there too). Default: the hook's first allowed namespace. */
  namespace?: string;
  /** The image the fork runs, e.g. `ghcr.io/acme/orders:pr-42`. */
  image: string;
  /** The container whose image is replaced. Default: the only container (required when there are several). */
  container?: string;
  /**
   * The Branchline service name (`BRANCHLINE_SERVICE`). Default: the baseline container's
   * `BRANCHLINE_SERVICE`, else the Deployment's name. Required with `register: 'declared'`.
   */
  service?: string;
  /** Environment overrides for that container. The `BRANCHLINE_*` identity variables are set by the fork. */
  env?: Record<string, string>;
  /** The container port that serves HTTP. Default: the port named `http` (or `http-…`), else the only port. */
  http?: number;
  /** The container port that serves gRPC. Default: the port named `grpc` (or `grpc-…`). */
  grpc?: number;
  /** Pods of the fork. Default 1. */
  replicas?: number;
  /** Default `self`; see `ForkRegistration`. */
  register?: ForkRegistration;
}

/** What `provision` returns: stored by the registry as the resource's private outputs. */
export interface KubernetesForkOutputs extends Record<string, unknown> {
  namespace: string;
  /** Name of the fork's Deployment and of its Service. */
  name: string;
  service: string;
  image: string;
  /** In-cluster URL of the fork's Service for HTTP, e.g. `http://orders-pr-42.shop.svc.cluster.local:8080`. */
  http?: string;
  /** In-cluster gRPC target of the fork's Service. */
  grpc?: string;
}

export interface KubernetesForkHookOptions {
  /**
   * The namespaces forks may be created in; a spec naming another is refused at PUT time. The
   * first is the default for specs without `namespace`.
   */
  namespaces: string[];
  /**
   * `BRANCHLINE_REGISTRY` given to the fork, e.g. `http://branchline-registry.branchline.svc:7070`.
   * Default: the baseline container's own `BRANCHLINE_REGISTRY`, kept as it is.
   */
  registry?: string;
  /** @deprecated Use `registry`. */
  registryUrl?: string;
  /**
   * A Secret in the fork's namespace whose key holds the registry token the fork gets as
   * `BRANCHLINE_TOKEN` (for the watch stream and, with `register: 'self'`, announcing). Default
   * key `token`. Default: the baseline container's own token variables, kept as they are.
   */
  tokenSecret?: { name: string; key?: string };
  /** The one module that talks to Kubernetes. Default: `createKubernetesApi()` (in-cluster or `KUBECONFIG`). */
  api?: KubernetesApi;
  /** How long `provision` waits for the fork to become available. Default 300000 ms (5 min). */
  rolloutTimeoutMs?: number;
  /** How often it looks at the rollout meanwhile. Default 1000 ms. */
  pollIntervalMs?: number;
  /**
   * Tells this registry's forks apart from another registry's in the same namespaces (label
   * `branchline.dev/instance`): the sweep deletes only its own orphans. Default `default`.
   */
  instance?: string;
}
