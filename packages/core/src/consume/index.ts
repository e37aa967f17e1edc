export {
  type BackoffOptions,
  backoffDelay,
  DEFAULT_BACKOFF,
  type DeprecatedBackoffOptions,
  resolveBackoff,
} from './backoff.js';
export { HoldAbandonedError, type HoldReason, HoldTimeoutError } from './errors.js';
export { checkDurationMs, optionWithAlias, warnDeprecatedOption } from './options.js';
export {
  activationTime,
  type OwnersChange,
  type OwnersListener,
  overrideIntervals,
  ownershipOf,
  type SandboxOwnership,
} from './ownership.js';
export {
  createMessageSelector,
  type FinalSelection,
  type HoldOptions,
  type HoldSelection,
  type MessageSelector,
  type MessageSelectorOptions,
  type Selection,
  type SelectorStats,
} from './selector.js';
