/**
 * Process-wide counters every Branchline package increments. Plain numbers on one object so
 * that counting costs an increment; `metricsText()` renders them for Prometheus.
 */
export interface BranchlineCounters {
  /** A routing key was present but not valid; it was treated as absent. */
  invalidKey: number;
  /**
   * A baggage header had malformed members (dropped, the others kept), or carried the routing
   * key twice with different values (no key taken).
   */
  malformedBaggage: number;
  /** A baggage header exceeded 8192 bytes or 180 members; what lay past the limits was dropped. */
  oversizeBaggage: number;
  /** Baggage members dropped when reading or writing: malformed, or past the limits. */
  baggageMembersDropped: number;
  /** A request that had already been forwarded once would have been forwarded again. */
  loopPrevented: number;
  /** Requests forwarded to a sandbox. */
  forwarded: number;
  /** Forwarding failed and the request was answered with an error or served by baseline. */
  forwardFailed: number;
  /** Outgoing calls sent to a sandbox endpoint instead of the baseline address. */
  outgoingRouted: number;
  /** Outgoing calls to external hosts whose routing key was withheld. */
  egressWithheld: number;
  /** Messages processed by this consumer. */
  messagesProcessed: number;
  /** Messages skipped because another consumer owns them. */
  messagesSkipped: number;
  /** Times a consumer held a message because its route view was not complete yet. */
  messagesHeld: number;
}

export const counters: BranchlineCounters = {
  invalidKey: 0,
  malformedBaggage: 0,
  oversizeBaggage: 0,
  baggageMembersDropped: 0,
  loopPrevented: 0,
  forwarded: 0,
  forwardFailed: 0,
  outgoingRouted: 0,
  egressWithheld: 0,
  messagesProcessed: 0,
  messagesSkipped: 0,
  messagesHeld: 0,
};

export function resetCounters(): void {
  for (const k of Object.keys(counters) as (keyof BranchlineCounters)[]) counters[k] = 0;
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** Prometheus text exposition of the counters, `branchline_<name>_total`. */
export function metricsText(): string {
  let out = '';
  for (const [k, v] of Object.entries(counters)) {
    const name = `branchline_${snake(k)}_total`;
    out += `# TYPE ${name} counter\n${name} ${v}\n`;
  }
  return out;
}
