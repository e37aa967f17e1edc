export { HoldAbandonedError, type HoldReason, HoldTimeoutError } from './errors.js';
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
