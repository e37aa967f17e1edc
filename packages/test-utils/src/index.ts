import { randomBytes } from 'node:crypto';
import { relative } from 'node:path';
import { afterEach, expect, onTestFailed } from 'vitest';

export interface UntilOptions {
  /** Give up after this long, ms (default 30 s). */
  timeoutMs?: number;
  /** Pause between two checks, ms (default 25). */
  intervalMs?: number;
}

/**
 * Calls `check` until it returns a truthy value and returns that value. After `timeoutMs` it
 * throws an error naming what it waited for and the last value `check` returned, so a timeout
 * says how far things got. `what` may be a function when the description depends on state that
 * changes while waiting (it is called once, for the error). An error thrown by `check` ends the
 * wait at once (a check that fails fast, e.g. "provisioning failed"); catch inside `check` what
 * should be retried instead.
 */
export async function until<T>(
  check: () => T | Promise<T>,
  what: string | (() => string),
  { timeoutMs = 30_000, intervalMs = 25 }: UntilOptions = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await check();
    if (last) return last as NonNullable<T>;
    if (Date.now() >= deadline) {
      const description = typeof what === 'function' ? what() : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}; last seen: ${show(last)}`);
    }
    await sleep(intervalMs);
  }
}

function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  try {
    const text = JSON.stringify(value);
    return text.length > 500 ? `${text.slice(0, 500)}…` : text;
  } catch {
    return String(value);
  }
}

/**
 * Waits `ms`. For pacing work (traffic, lifetimes), not for proving that something did not
 * happen: use `barrier` for that, or `until` for something that must happen.
 */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A name no other test run uses (topics, queues, vhosts and groups outlive a run). */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

/** `Math.random` with a seed: a run that failed can be repeated with the same choices. */
export interface SeededRandom {
  /** A number in [0, 1), like `Math.random()`. */
  (): number;
  readonly seed: number;
  /** An integer in [lo, hi). */
  int(lo: number, hi: number): number;
  /** A number in [lo, hi). */
  between(lo: number, hi: number): number;
}

/** The environment variable that fixes the seed of every `seededRandom()` in a run. */
export const SEED_ENV = 'BRANCHLINE_TEST_SEED';

/**
 * A small seeded generator (mulberry32). The seed comes from `BRANCHLINE_TEST_SEED` when set,
 * else it is drawn at random. When the test that called it (or, called at module level, any
 * test of the file) fails, the seed and the command that repeats the run with it are printed.
 */
export function seededRandom(seed = seedFromEnv()): SeededRandom {
  let state = seed >>> 0;
  const next = (() => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }) as SeededRandom;
  Object.defineProperty(next, 'seed', { value: seed >>> 0, enumerable: true });
  next.between = (lo, hi) => lo + next() * (hi - lo);
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo));
  printSeedOnFailure(seed >>> 0);
  return next;
}

function seedFromEnv(): number {
  const raw = process.env[SEED_ENV];
  if (raw === undefined || raw === '') return randomBytes(4).readUInt32LE(0);
  const seed = Number(raw);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new Error(`${SEED_ENV} must be an integer from 0 to 4294967295, got "${raw}"`);
  return seed;
}

function printSeedOnFailure(seed: number): void {
  const path = expect.getState().testPath;
  const file = path ? relative(process.cwd(), path) || path : '<test file>';
  const message = () =>
    `[seeded random] this run used seed ${seed}; repeat it with: ${SEED_ENV}=${seed} npx vitest run ${file}`;
  try {
    // Inside a test: only that test's failure prints it.
    onTestFailed(() => {
      console.error(message());
    });
  } catch {
    // At module level (no running test): any failing test of the file prints it.
    afterEach((context) => {
      if (context.task.result?.state === 'fail') console.error(message());
    });
  }
}

const MARKER_PREFIX = 'barrier-';

/** Whether an id was made by `barrier`, to leave markers out of what a test asserts on. */
export function isBarrierMarker(id: string | undefined): boolean {
  return id?.startsWith(MARKER_PREFIX) ?? false;
}

export interface BarrierOptions<Path> {
  /**
   * The independent ordered channels to close, one marker each: partitions, consumers, queues.
   * A marker proves only what was sent before it on its own path.
   */
  paths: readonly Path[];
  /** Sends `marker` down `path`, after everything whose absence the test will assert. */
  send(marker: string, path: Path): unknown;
  /** Whether `marker` came out at the end of `path`. */
  arrived(marker: string, path: Path): boolean | Promise<boolean>;
  /** Named in the timeout error. */
  what?: string;
  timeoutMs?: number;
}

/**
 * Proves that nothing else is still on its way, without a fixed sleep. On an ordered channel,
 * once a marker sent after the messages under test has come out, those messages have come out
 * too: whatever has not arrived by then is not coming. So: send a marker down every path, wait
 * for every marker, then assert on what arrived (leaving markers out with `isBarrierMarker`).
 * Returns the markers, in the order of `paths`.
 */
export async function barrier<Path>(options: BarrierOptions<Path>): Promise<string[]> {
  const run = randomBytes(3).toString('hex');
  const markers = options.paths.map((_, i) => `${MARKER_PREFIX}${run}-${i}`);
  for (const [i, path] of options.paths.entries()) await options.send(markers[i]!, path);
  const pending = new Set(markers.keys());
  await until(
    async () => {
      for (const i of pending) if (await options.arrived(markers[i]!, options.paths[i]!)) pending.delete(i);
      return pending.size === 0;
    },
    () =>
      `the barrier markers${options.what ? ` (${options.what})` : ''} on ${[...pending]
        .map((i) => JSON.stringify(options.paths[i]))
        .join(', ')}`,
    { timeoutMs: options.timeoutMs ?? 30_000 },
  );
  return markers;
}
