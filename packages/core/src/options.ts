import { warnDeprecatedOption } from './log.js';

/**
 * Option helpers every package shares: duration checks, and deprecated option names that are
 * still accepted but say once which name replaces them (see also `renamedOption` in log.ts).
 */

/** Throws a TypeError unless `value` is undefined or a finite number of milliseconds >= 0. */
export function checkDurationMs(name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0))
    throw new TypeError(
      `branchline: option ${name} must be a number of milliseconds >= 0 (got ${String(value)})`,
    );
}

/**
 * The value of an option that has deprecated aliases: the new name wins; an alias is used (with
 * one warning per process) only when the new name is absent.
 */
export function optionWithAlias<T>(
  where: string,
  options: object | undefined,
  name: string,
  aliases: readonly string[],
): T | undefined {
  if (!options) return undefined;
  const record = options as Record<string, unknown>;
  if (record[name] !== undefined) return record[name] as T;
  for (const alias of aliases) {
    if (record[alias] === undefined) continue;
    warnDeprecatedOption(where, alias, name);
    return record[alias] as T;
  }
  return undefined;
}
