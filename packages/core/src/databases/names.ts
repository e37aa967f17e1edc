import { createHash } from 'node:crypto';
import { isValidSandboxName, SANDBOX_NAME_RULE } from '../rules.js';

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

/** A value as it appears in a message: its JSON where it has one, else `String(value)`. */
export function describeValue(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** What a database adapter's name checks differ in. */
export interface DatabaseNameRules {
  /** Adapter name in messages (`branchline <driver>: …`). */
  driver: string;
  /** The server's identifier limit. */
  maxLength: number;
  /** The baseline database names the adapter can branch. */
  sourcePattern: RegExp;
  /** Those names' characters, for messages, e.g. `letters, digits, "_" or "-"`. */
  sourceChars: string;
  /** The adapter's error for a name a person must fix. */
  fail(message: string): Error;
}

/** Checks a baseline database name (`spec.from`, an option); `where` names it in the message. */
export function checkBaselineDatabaseName(name: unknown, where: string, rules: DatabaseNameRules): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw rules.fail(
      `branchline ${rules.driver}: ${where} must name the baseline database to copy, e.g. "orders" (got ${describeValue(name)})`,
    );
  }
  if (name.length > rules.maxLength || !rules.sourcePattern.test(name)) {
    throw rules.fail(
      `branchline ${rules.driver}: ${where}=${describeValue(name)} is not a database name Branchline can branch: use at most ${rules.maxLength} ${rules.sourceChars}, not starting with "-"`,
    );
  }
  return name;
}

/** Checks a sandbox name (core's sandbox-name rule, which the registry applies too). */
export function checkDatabaseSandboxName(
  name: unknown,
  where: string,
  rules: Pick<DatabaseNameRules, 'driver' | 'fail'>,
): string {
  if (typeof name !== 'string' || !isValidSandboxName(name)) {
    throw rules.fail(
      `branchline ${rules.driver}: ${where} ${describeValue(name)} is not a sandbox name: use ${SANDBOX_NAME_RULE}`,
    );
  }
  return name;
}

const PREFIX_RE = /^[a-z][a-z0-9_]*_$/;

/** Checks a sandbox (or snapshot) database name prefix: the sweeper drops databases by it. */
export function checkDatabasePrefix(prefix: unknown, option: string, driver: string): string {
  if (typeof prefix !== 'string' || !PREFIX_RE.test(prefix) || prefix.length < 3 || prefix.length > 24) {
    throw new TypeError(
      `branchline ${driver}: option ${option}=${describeValue(prefix)} must be 3-24 lowercase letters, digits or "_", start with a letter and end with "_" (e.g. "bl_sb_"); the sweeper drops databases by this prefix, so it must be specific`,
    );
  }
  return prefix;
}
