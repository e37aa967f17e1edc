import { checkDurationMs, optionWithAlias } from './options.js';

/** How retries back off: the one shape every Branchline package uses (`backoff`, `reconnect`). */
export interface BackoffOptions {
  /** First delay, ms. */
  initialMs?: number;
  /** Largest delay, ms. */
  maxMs?: number;
  /** Growth factor per failed attempt (>= 1). */
  factor?: number;
}

/** Older spellings of `BackoffOptions`, still accepted. */
export interface DeprecatedBackoffOptions {
  /** @deprecated Use `initialMs`. */
  initialDelayMs?: number;
  /** @deprecated Use `initialMs`. */
  initialBackoffMs?: number;
  /** @deprecated Use `maxMs`. */
  maxDelayMs?: number;
}

export const DEFAULT_BACKOFF: Readonly<Required<BackoffOptions>> = Object.freeze({
  initialMs: 100,
  maxMs: 5000,
  factor: 2,
});

/**
 * Validates backoff options and fills in defaults. Deprecated names (`initialDelayMs`,
 * `initialBackoffMs`, `maxDelayMs`) are accepted with one warning per process; `where` names the
 * option in that warning and in errors (for example `amqplib reconnect`).
 */
export function resolveBackoff(
  options: (BackoffOptions & DeprecatedBackoffOptions) | undefined,
  where = 'backoff',
  defaults: Readonly<Required<BackoffOptions>> = DEFAULT_BACKOFF,
): Required<BackoffOptions> {
  if (options !== undefined && (typeof options !== 'object' || options === null))
    throw new TypeError(
      `branchline: option ${where} must be an object { initialMs, maxMs, factor } (got ${String(options)})`,
    );
  const initialMs =
    optionWithAlias<number>(where, options, 'initialMs', ['initialDelayMs', 'initialBackoffMs']) ??
    defaults.initialMs;
  const maxMs = optionWithAlias<number>(where, options, 'maxMs', ['maxDelayMs']) ?? defaults.maxMs;
  const factor = options?.factor ?? defaults.factor;
  checkDurationMs(`${where}.initialMs`, initialMs);
  checkDurationMs(`${where}.maxMs`, maxMs);
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1)
    throw new TypeError(`branchline: option ${where}.factor must be a number >= 1 (got ${String(factor)})`);
  return { initialMs, maxMs: Math.max(initialMs, maxMs), factor };
}

/**
 * The delay before retry number `attempt` (0 = the first retry): exponential, capped at `maxMs`,
 * with +-20% jitter so replicas that failed together do not retry together.
 */
export function backoffDelay(backoff: Required<BackoffOptions>, attempt: number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * backoff.factor ** Math.max(0, attempt));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}
