/**
 * Names and the job option Branchline reads and writes. BullMQ forbids `:` in queue names and
 * custom job ids, so every derived name uses `.` and `-`.
 */

/**
 * The job option that carries Branchline's routing data. It lives in the job's options, not in
 * its data: job data may be any JSON value (a string, an array), belongs to the application
 * (`job.updateData` replaces it, schema validators reject extra fields), while options are an
 * object BullMQ stores as it was given and keeps across retries.
 */
export const JOB_OPTION = 'branchline';

/** What a routed job carries in `opts.branchline`. */
export interface BranchlineJobMeta {
  /** The W3C `baggage` header value carrying the routing key (and any other members). */
  baggage?: string;
  /** Other propagation fields the application's OpenTelemetry propagator wrote (`traceparent`, …). */
  [field: string]: unknown;
  /** Enqueue time, ms, from the Redis server's clock (see docs/bullmq.md, "Message time"). */
  time?: number;
  /** Set on a copy a baseline worker moved to a sandbox queue: the baseline queue it came from. */
  movedFrom?: string;
  /** Set on a job returned from a deleted sandbox's queue: the sandbox. Processed without deciding. */
  returnedFrom?: string;
}

const QUEUE_NAME_MAX = 255;

/** The queue a sandbox's worker reads: `<queue>.sandbox.<sandbox>`. */
export function sandboxQueueName(queue: string, sandbox: string): string {
  if (typeof queue !== 'string' || queue.length === 0)
    throw new TypeError(`branchline: sandboxQueueName needs the baseline queue name (got ${String(queue)})`);
  if (typeof sandbox !== 'string' || sandbox.length === 0)
    throw new TypeError(`branchline: sandboxQueueName needs a sandbox name (got ${String(sandbox)})`);
  const name = `${queue}.sandbox.${sandbox}`;
  if (name.includes(':'))
    throw new RangeError(`branchline: BullMQ queue names cannot contain ":" (got "${name}")`);
  if (name.length > QUEUE_NAME_MAX)
    throw new RangeError(
      `branchline: the sandbox queue name "${name.slice(0, 80)}…" is longer than ${QUEUE_NAME_MAX} characters; use a shorter queue or sandbox name`,
    );
  return name;
}

/** The id of the copy a baseline worker adds to a sandbox queue: deterministic, so a retried move adds nothing. */
export function movedJobId(jobId: string): string {
  return `m-${jobId}`;
}

/** The id of a job returned from a sandbox queue (incarnation `since`) to the baseline queue. */
export function returnedJobId(jobId: string, sandbox: string, since: number): string {
  return `r-${sandbox}-${since}-${jobId}`;
}

/** Redis keys of the move protocol between baseline workers and a sandbox queue's cleanup. */
export function moveKeys(
  prefix: string,
  sandboxQueue: string,
  since: number,
): { closed: string; moving: string; lock: string } {
  const base = `${prefix}:branchline:${sandboxQueue}:${since}`;
  return { closed: `${base}:closed`, moving: `${base}:moving`, lock: `${base}:cleanup` };
}

export function metaOf(opts: unknown): BranchlineJobMeta | undefined {
  const m = (opts as Record<string, unknown> | undefined)?.[JOB_OPTION];
  return typeof m === 'object' && m !== null ? (m as BranchlineJobMeta) : undefined;
}

/**
 * Which ownership interval a move or a removal belongs to, by its start (registry time, ms): for a
 * job at `at`, the interval that contains it; without `at`, the latest one (the one that ended,
 * for a removal). The move protocol's keys are per interval, so an override removed and added
 * again gets a fresh sandbox queue protocol while the old interval's removal stays closed.
 */
export function intervalStart(
  intervals: readonly { from: number; to?: number | null }[],
  since: number,
  at?: number,
): number {
  let latest: number | undefined;
  for (const iv of intervals) {
    if (at !== undefined && at >= iv.from && (iv.to == null || at < iv.to)) return iv.from;
    if (latest === undefined || iv.from > latest) latest = iv.from;
  }
  return latest ?? since;
}
