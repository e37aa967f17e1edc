/**
 * One shape for every retry schedule in Branchline: reconnecting to the registry, retrying a
 * heartbeat, reconnecting a consumer. Used as the `backoff` option (or `reconnect`, for
 * connection retries).
 */
export interface BackoffOptions {
  /** The first delay, in milliseconds. */
  initialMs?: number;
  /** The longest delay, in milliseconds. */
  maxMs?: number;
  /** How much the delay grows per failed attempt. Default 2. */
  factor?: number;
}

/** A backoff with every field decided. */
export type ResolvedBackoff = Required<BackoffOptions>;

/**
 * `options` over `defaults`, checked: a bad value throws a TypeError naming `option` (for
 * example `reconnect.initialMs`) and what it must be.
 */
export function resolveBackoff(
  options: BackoffOptions | undefined,
  defaults: ResolvedBackoff,
  option = 'backoff',
): ResolvedBackoff {
  const out: ResolvedBackoff = {
    initialMs: options?.initialMs ?? defaults.initialMs,
    maxMs: options?.maxMs ?? defaults.maxMs,
    factor: options?.factor ?? defaults.factor,
  };
  for (const k of ['initialMs', 'maxMs'] as const)
    if (!Number.isFinite(out[k]) || out[k] <= 0)
      throw new TypeError(
        `branchline: option ${option}.${k}=${out[k]} must be a positive number of milliseconds`,
      );
  if (!Number.isFinite(out.factor) || out.factor < 1)
    throw new TypeError(`branchline: option ${option}.factor=${out.factor} must be a number of at least 1`);
  if (out.maxMs < out.initialMs) {
    // A default ceiling below a given first delay gives way; two given values that disagree do not.
    if (options?.maxMs !== undefined && options.initialMs !== undefined)
      throw new TypeError(
        `branchline: option ${option}.maxMs=${out.maxMs} must be at least ${option}.initialMs=${out.initialMs}`,
      );
    if (options?.maxMs === undefined) out.maxMs = out.initialMs;
    else out.initialMs = out.maxMs;
  }
  return out;
}

/**
 * The delay before retry number `attempt` (0 for the first retry): `initialMs * factor^attempt`,
 * capped at `maxMs`, with equal jitter (half fixed, half random) so that a fleet retrying at
 * once spreads out.
 */
export function backoffDelay(backoff: ResolvedBackoff, attempt: number): number {
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** Math.min(attempt, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
