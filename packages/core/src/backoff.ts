import { optionWithAlias } from './options.js';

/**
 * One shape for every retry schedule in Branchline: reconnecting to the registry, retrying a
 * heartbeat, reconnecting a consumer, re-deciding a held message. Used as the `backoff` option
 * (or `reconnect`, for connection retries).
 */
export interface BackoffOptions {
  /** The first delay, in milliseconds. */
  initialMs?: number;
  /** The longest delay, in milliseconds. */
  maxMs?: number;
  /** How much the delay grows per failed attempt (>= 1). Default 2. */
  factor?: number;
}

/** Older spellings of `BackoffOptions`, still accepted with one warning per process. */
export interface DeprecatedBackoffOptions {
  /** @deprecated Use `initialMs`. */
  initialDelayMs?: number;
  /** @deprecated Use `initialMs`. */
  initialBackoffMs?: number;
  /** @deprecated Use `maxMs`. */
  maxDelayMs?: number;
}

/** A backoff with every field decided. */
export type ResolvedBackoff = Required<BackoffOptions>;

export const DEFAULT_BACKOFF: Readonly<ResolvedBackoff> = Object.freeze({
  initialMs: 100,
  maxMs: 5000,
  factor: 2,
});

/**
 * `options` over `defaults`, checked: a bad value throws a TypeError naming the option (`where`,
 * for example `amqplib reconnect`) and what it must be. Deprecated names (`initialDelayMs`,
 * `initialBackoffMs`, `maxDelayMs`) are accepted with one warning per process.
 */
export function resolveBackoff(
  options: (BackoffOptions & DeprecatedBackoffOptions) | undefined,
  where = 'backoff',
  defaults: Readonly<ResolvedBackoff> = DEFAULT_BACKOFF,
): ResolvedBackoff {
  if (options !== undefined && (typeof options !== 'object' || options === null))
    throw new TypeError(
      `branchline: option ${where} must be an object { initialMs, maxMs, factor } (got ${String(options)})`,
    );
  const givenInitial = optionWithAlias<number>(where, options, 'initialMs', [
    'initialDelayMs',
    'initialBackoffMs',
  ]);
  const givenMax = optionWithAlias<number>(where, options, 'maxMs', ['maxDelayMs']);
  const out: ResolvedBackoff = {
    initialMs: givenInitial ?? defaults.initialMs,
    maxMs: givenMax ?? defaults.maxMs,
    factor: options?.factor ?? defaults.factor,
  };
  for (const k of ['initialMs', 'maxMs'] as const)
    if (typeof out[k] !== 'number' || !Number.isFinite(out[k]) || out[k] <= 0)
      throw new TypeError(
        `branchline: option ${where}.${k} must be a positive number of milliseconds (got ${String(out[k])})`,
      );
  if (typeof out.factor !== 'number' || !Number.isFinite(out.factor) || out.factor < 1)
    throw new TypeError(
      `branchline: option ${where}.factor must be a number >= 1 (got ${String(out.factor)})`,
    );
  if (out.maxMs < out.initialMs) {
    // A default ceiling below a given first delay gives way; two given values that disagree do not.
    if (givenMax !== undefined && givenInitial !== undefined)
      throw new TypeError(
        `branchline: option ${where}.maxMs=${out.maxMs} must be at least ${where}.initialMs=${out.initialMs}`,
      );
    if (givenMax === undefined) out.maxMs = out.initialMs;
    else out.initialMs = out.maxMs;
  }
  return out;
}

/**
 * The delay before retry number `attempt` (0 = the first retry): `initialMs * factor^attempt`,
 * capped at `maxMs`, with +-20% jitter so replicas that failed together do not retry together.
 */
export function backoffDelay(backoff: ResolvedBackoff, attempt: number): number {
  const base = Math.min(
    backoff.maxMs,
    backoff.initialMs * backoff.factor ** Math.min(Math.max(0, attempt), 30),
  );
  return Math.round(base * (0.8 + Math.random() * 0.4));
}
