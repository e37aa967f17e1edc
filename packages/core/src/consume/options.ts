import { logger } from '../log.js';

/**
 * Option helpers every transport shares: duration checks, and deprecated option names that are
 * still accepted but say once which name replaces them.
 */

/** Throws a TypeError unless `value` is undefined or a finite number of milliseconds >= 0. */
export function checkDurationMs(name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0))
    throw new TypeError(
      `branchline: option ${name} must be a number of milliseconds >= 0 (got ${String(value)})`,
    );
}

const warned = new Set<string>();

/**
 * Logs, once per process for each (`where`, `oldName`), that a deprecated option name was used
 * and which name replaces it. Returns whether this call logged.
 */
export function warnDeprecatedOption(where: string, oldName: string, newName: string): boolean {
  const id = `${where}\u0000${oldName}`;
  if (warned.has(id)) return false;
  warned.add(id);
  logger().warn(
    `branchline: ${where} option ${oldName} is deprecated; use ${newName} (same meaning, same unit)`,
    { option: oldName, replacement: newName },
  );
  return true;
}

/**
 * The value of an option that has a deprecated alias: the new name wins; the alias is used (with
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
