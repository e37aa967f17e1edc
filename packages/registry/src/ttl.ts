// Expiry of sandboxes and groups: the default and maximum TTL, and turning a request's `ttl` or
// `expiresAt` into an expiry time.

import { formatDuration, parseDuration } from './duration.js';
import { RegistryError } from './state.js';

/** What a request may say about its expiry. */
export interface ExpiryFields {
  ttl?: string | number;
  expiresAt?: number | null;
}

const DAY_MS = 86_400_000;

export class TtlPolicy {
  readonly defaultTtlMs: number | null;
  readonly maxTtlMs: number | null;

  /** Unset options: the maximum is 30 days, the default 24 h or the maximum, whichever is shorter. */
  constructor(defaultTtlMs: number | null | undefined, maxTtlMs: number | null | undefined) {
    this.maxTtlMs = maxTtlMs === undefined ? 30 * DAY_MS : maxTtlMs;
    this.defaultTtlMs =
      defaultTtlMs === undefined
        ? Math.min(24 * 3_600_000, this.maxTtlMs ?? Number.POSITIVE_INFINITY)
        : defaultTtlMs;
    checkTtlOptions(this.defaultTtlMs, this.maxTtlMs);
  }

  /** Refuses (400) a `ttl` or `expiresAt` past the maximum, naming the field and the maximum. */
  check(body: ExpiryFields): void {
    const max = this.maxTtlMs;
    if (max === null) return;
    if (body.ttl !== undefined && !(parseDuration(body.ttl)! <= max)) throw overMaximum('ttl', max, body.ttl);
    if (body.expiresAt === null || (body.expiresAt !== undefined && body.expiresAt > Date.now() + max))
      throw overMaximum('expiresAt', max, body.expiresAt);
  }

  /** When an object written at `time` expires (`null`: never). */
  expiry(body: ExpiryFields, time: number): number | null {
    if (body.expiresAt !== undefined) return body.expiresAt;
    if (body.ttl !== undefined) return time + parseDuration(body.ttl)!;
    return this.defaultTtlMs === null ? null : time + this.defaultTtlMs;
  }
}

function overMaximum(field: string, max: number, got: unknown): RegistryError {
  let shown = JSON.stringify(got);
  if (shown.length > 40) shown = `${shown.slice(0, 24)}… (${shown.length} characters)`;
  const message = `at most ${formatDuration(max)}${field === 'expiresAt' ? ' from now' : ''} (${max / 1000} seconds); got ${shown}`;
  return new RegistryError(400, 'invalid_request', `${field}: ${message}`, {
    issues: [{ path: field, message }],
  });
}

function checkTtlOptions(defaultTtlMs: number | null, maxTtlMs: number | null): void {
  if (maxTtlMs === null) return;
  if (!(Number.isFinite(maxTtlMs) && maxTtlMs > 0))
    throw new TypeError(
      `branchline registry: maxTtlMs must be a positive number of milliseconds or null, got ${maxTtlMs}`,
    );
  if (defaultTtlMs === null)
    throw new TypeError(
      `branchline registry: defaultTtlMs null (never expire) is over maxTtlMs (${formatDuration(maxTtlMs)}); set maxTtlMs: null too (--max-ttl none)`,
    );
  if (defaultTtlMs > maxTtlMs)
    throw new TypeError(
      `branchline registry: defaultTtlMs (${formatDuration(defaultTtlMs)}) is over maxTtlMs (${formatDuration(maxTtlMs)})`,
    );
}
