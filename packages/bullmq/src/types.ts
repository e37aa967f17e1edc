import type { BackoffOptions, BranchlineRuntime, RouteTableSpec } from '@branchline/core';
import type { RouteSource, RouteTable } from '@branchline/core/transport';
import type { ConnectionOptions, Job, WorkerOptions } from 'bullmq';

/** The application's job handler, as for a BullMQ `Worker`. */
// biome-ignore lint/suspicious/noExplicitAny: BullMQ's own defaults, so typed workers assign to the default type
export type SelectiveProcessor<D = any, R = any> = (
  job: Job<D, R>,
  token?: string,
  signal?: AbortSignal,
) => Promise<R>;

// biome-ignore lint/suspicious/noExplicitAny: BullMQ's own defaults, so typed workers assign to the default type
export interface SelectiveWorkerOptions<D = any, R = any> {
  /** The baseline queue. A sandbox worker reads `sandboxQueueName(queue, sandbox)` instead. */
  queue: string;
  /** The job handler. It runs with the job's routing key active (`getRoutingKey()`). */
  processor: SelectiveProcessor<D, R>;
  /** Redis: ioredis options (host, port, …) or an ioredis instance, as for BullMQ. */
  connection: ConnectionOptions;
  /** BullMQ key prefix; default `bull`. */
  prefix?: string;
  /** This worker's service; default `BRANCHLINE_SERVICE`. */
  service?: string;
  /** This worker's sandbox; default `BRANCHLINE_SANDBOX`; `null` forces baseline. */
  sandbox?: string | null;
  /** Route source, table or table document; default the runtime's. */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  runtime?: BranchlineRuntime;
  /** Longest time a job waits for the route view to cover its time, ms. Default 30000. */
  holdTimeoutMs?: number;
  /** Delays for re-trying held jobs, failed moves and cleanups. */
  backoff?: BackoffOptions;
  /** Other BullMQ worker options (`concurrency`, `lockDuration`, …). */
  workerOptions?: Omit<WorkerOptions, 'connection' | 'prefix' | 'autorun'>;
}

export interface SelectiveWorkerStats {
  /** Jobs handed to the processor. */
  processed: number;
  /** Jobs a baseline worker moved to their sandbox's queue. */
  moved: number;
  /** Jobs whose owner at their time no longer overrides the service; the baseline processed them. */
  ownerGone: number;
  /** Jobs held because the route view did not cover their time yet. */
  held: number;
  /** Holds that reached `holdTimeoutMs`; those jobs were moved to delayed and come back. */
  holdTimeouts: number;
  /** Jobs put back as delayed (hold timeout, worker stopping, a failed move). */
  delayed: number;
  /** Jobs returned from deleted sandboxes' queues to the baseline queue. */
  returned: number;
}

export interface SandboxQueueCleanupResult {
  queue: string;
  sandbox: string;
  /** Jobs returned to the baseline queue. */
  returned: number;
  /** Jobs left because a newer incarnation of the sandbox owns them. */
  kept: number;
  /** Whether the sandbox queue was removed (obliterated). */
  removed: boolean;
}
