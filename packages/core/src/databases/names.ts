import { createHash } from 'node:crypto';
import { isValidSandboxName } from '../rules.js';

/** The name prefix of sandbox databases in every database adapter. */
export const DEFAULT_SANDBOX_DATABASE_PREFIX = 'bl_sb_';

/** The first `length` hex digits of the SHA-256 of `input`: a short, stable name part. */
export function nameDigest(input: string, length: number): string {
  return createHash('sha256').update(input).digest('hex').slice(0, length);
}

/**
 * The database of `sandbox` seeded from the baseline database `source`:
 * `<prefix><sandbox>__<source>`, at most `maxLength` characters (the server's identifier
 * limit). Sandbox names cannot contain "_", so the first "__" separates the owner, which the
 * sweeper reads back. When the name would be too long the source is replaced by a hash, and if
 * even that is too long the sandbox name is shortened too (the adapter's catalogue still names
 * the owner). Routed pools compute the same name, so they need no private outputs.
 */
export function sandboxDatabaseName(
  source: string,
  sandbox: string,
  prefix: string,
  maxLength: number,
): string {
  const full = `${prefix}${sandbox}__${source}`;
  if (full.length <= maxLength) return full;
  const digest = nameDigest(`${sandbox}\u0000${source}`, 10);
  const hashed = `${prefix}${sandbox}__h${digest}`;
  if (hashed.length <= maxLength) return hashed;
  const room = maxLength - prefix.length - digest.length - 2;
  return `${prefix}${sandbox.slice(0, room)}_x${digest}`;
}

/** The sandbox that owns a database named by `sandboxDatabaseName`, when the name still says it. */
export function parseSandboxDatabaseName(
  name: string,
  prefix = DEFAULT_SANDBOX_DATABASE_PREFIX,
): string | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  const sep = rest.indexOf('__');
  if (sep <= 0) return undefined;
  const sandbox = rest.slice(0, sep);
  return isValidSandboxName(sandbox) ? sandbox : undefined;
}
