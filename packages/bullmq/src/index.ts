export { type ReturnSandboxJobsOptions, returnSandboxJobs } from './cleanup.js';
export { type BullmqQueuesHook, type BullmqQueuesHookOptions, bullmqQueuesHook } from './cleanup-hook.js';
export { RedisClock, type TimeClient } from './clock.js';
export {
  type BranchlineJobMeta,
  intervalStart,
  JOB_OPTION,
  movedJobId,
  returnedJobId,
  sandboxQueueName,
} from './names.js';
export {
  instrumentQueue,
  type QueueInstrumentationOptions,
  routingMeta,
  withRoutingOptions,
} from './producer.js';
export type {
  SandboxQueueCleanupResult,
  SelectiveProcessor,
  SelectiveWorkerOptions,
  SelectiveWorkerStats,
} from './types.js';
export { createSelectiveWorker, type SelectiveWorker } from './worker.js';
