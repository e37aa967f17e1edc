export {
  createKubernetesApi,
  type KubernetesApi,
  KubernetesApiError,
  type KubernetesApiOptions,
} from './api.js';
export { buildFork, type Fork, type ForkInput, forkLabels, ownedBy } from './fork.js';
export { KUBERNETES_FORK, type KubernetesForkHook, kubernetesForkHook } from './hook.js';
export {
  FORK_OF_ANNOTATION,
  forkName,
  forkSelector,
  LABELS,
  MANAGED_BY,
  sandboxDeploymentName,
  serviceHost,
} from './names.js';
export { forkHookOptionsFromEnv } from './plugin.js';
export {
  checkForkSpec,
  forkEndpoints,
  forkSpecJsonSchema,
  KubernetesForkError,
  type ParsedForkSpec,
  parseForkSpec,
  RESERVED_ENV,
} from './spec.js';
export type {
  Deployment,
  ForkRegistration,
  KubernetesForkHookOptions,
  KubernetesForkOutputs,
  KubernetesForkSpec,
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  Service,
} from './types.js';
