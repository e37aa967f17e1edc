/**
 * Resource hooks: the contract is defined in @branchline/core (so transport packages implement
 * it without depending on the registry); the registry re-exports it. See docs/registry.md.
 */
export type {
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  ResourceState,
  ResourceStatus,
  SandboxDeletedListener,
} from '@branchline/core';
