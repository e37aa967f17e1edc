import { isValidRoutingKey } from '@branchline/core';
import {
  parseSandboxDatabaseName as coreParseSandboxDatabaseName,
  sandboxDatabaseName as coreSandboxDatabaseName,
  DEFAULT_SANDBOX_DATABASE_PREFIX,
} from '@branchline/core/transport';

/** MySQL and MariaDB refuse database and table names longer than 64 characters. */
export const MAX_IDENTIFIER_LENGTH = 64;
export const DEFAULT_PREFIX = DEFAULT_SANDBOX_DATABASE_PREFIX;
export const DEFAULT_ADMIN_DATABASE = 'branchline';
export const DEFAULT_CATALOGUE = 'branchline_mysql_databases';

const SOURCE_RE = /^[A-Za-z0-9_][A-Za-z0-9_$-]*$/;
const PREFIX_RE = /^[a-z][a-z0-9_]*_$/;
const TABLE_RE = /^[a-z_][a-z0-9_]*$/;

/** Databases of the server itself; never a source, never swept. */
export const SYSTEM_DATABASES: ReadonlySet<string> = new Set([
  'mysql',
  'information_schema',
  'performance_schema',
  'sys',
]);

/** A name, option or spec value a person must fix, or a copy that failed; the message says which and how. */
export class SandboxDatabaseError extends Error {
  constructor(
    readonly code: 'invalid-name' | 'missing-source' | 'not-allowed' | 'clone-failed',
    message: string,
  ) {
    super(message);
    this.name = 'SandboxDatabaseError';
  }
}

function show(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** Checks a baseline database name (`spec.from`). */
export function checkSourceName(name: unknown, where = 'spec.from'): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline mysql: ${where} must name the baseline database to copy, e.g. "orders" (got ${show(name)})`,
    );
  }
  if (name.length > MAX_IDENTIFIER_LENGTH || !SOURCE_RE.test(name)) {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline mysql: ${where}=${show(name)} is not a database name Branchline can branch: use at most ${MAX_IDENTIFIER_LENGTH} letters, digits, "_", "$" or "-", not starting with "-"`,
    );
  }
  return name;
}

/** Checks a sandbox name (the registry's DNS-label rule from @branchline/core). */
export function checkSandboxName(name: unknown, where = 'sandbox name'): string {
  if (typeof name !== 'string' || !isValidRoutingKey(name)) {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline mysql: ${where} ${show(name)} is not a sandbox name: use lowercase letters, digits and inner hyphens, at most 63 characters`,
    );
  }
  return name;
}

export function checkPrefix(prefix: string, option: string): string {
  if (typeof prefix !== 'string' || !PREFIX_RE.test(prefix) || prefix.length < 3 || prefix.length > 24) {
    throw new TypeError(
      `branchline mysql: option ${option}=${show(prefix)} must be 3-24 lowercase letters, digits or "_", start with a letter and end with "_" (e.g. "bl_sb_"); the sweeper drops databases by this prefix, so it must be specific`,
    );
  }
  return prefix;
}

export function checkTableName(name: string, option: string): string {
  if (typeof name !== 'string' || !TABLE_RE.test(name) || name.length > MAX_IDENTIFIER_LENGTH) {
    throw new TypeError(
      `branchline mysql: option ${option}=${show(name)} must be a plain lowercase name such as "branchline_mysql_databases"`,
    );
  }
  return name;
}

/**
 * The database of `sandbox` seeded from the baseline database `database`:
 * `<prefix><sandbox>__<database>`, at most 64 characters (the rule and its hashing live in
 * `@branchline/core/transport`, shared by every database adapter). The routed pool computes the
 * same name, so it needs no private outputs.
 */
export function sandboxDatabaseName(database: string, sandbox: string, prefix = DEFAULT_PREFIX): string {
  return coreSandboxDatabaseName(database, sandbox, prefix, MAX_IDENTIFIER_LENGTH);
}

/** The sandbox that owns a database named by `sandboxDatabaseName`, when the name still says it. */
export const parseSandboxDatabaseName: (name: string, prefix?: string) => string | undefined =
  coreParseSandboxDatabaseName;

/** Backtick-quotes an identifier for SQL (every name we interpolate goes through this). */
export function quoteIdent(name: string): string {
  if (name.length === 0 || name.length > MAX_IDENTIFIER_LENGTH || name.includes('\u0000'))
    throw new SandboxDatabaseError('invalid-name', `branchline mysql: ${show(name)} is not an identifier`);
  return `\`${name.replace(/`/g, '``')}\``;
}

/** Escapes LIKE wildcards so a prefix matches literally (default escape character `\`). */
export function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
