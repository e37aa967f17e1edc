// The resource-hook contract is defined in @branchline/core (transport packages implement it
// without depending on the registry) and re-exported here. See docs/registry.md.

export type {
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  ResourceState,
  ResourceStatus,
  SandboxDeletedListener,
} from '@branchline/core/transport';
export { parseTokens, readTokensFile, type Scope, type TokenEntry } from './auth.js';
export { formatDuration, parseDuration } from './duration.js';
export { PostgresStore } from './postgres-store.js';
export {
  createRegistryServer,
  RegistryServer,
  type RegistryServerOptions,
  storeFromOption,
} from './server.js';
export { SqliteStore } from './sqlite-store.js';
export { RegistryError } from './state.js';
export type { Lease, LoadedState, Secret, Store, WriteContext } from './store.js';
export type { Change, GroupDoc, ObjectKind, SandboxDoc, SandboxStatus } from './types.js';
export type { GithubSandboxTemplate } from './webhook-template.js';
