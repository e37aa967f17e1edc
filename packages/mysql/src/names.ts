import {
  checkBaselineDatabaseName,
  checkDatabasePrefix,
  checkDatabaseSandboxName,
  parseSandboxDatabaseName as coreParseSandboxDatabaseName,
  sandboxDatabaseName as coreSandboxDatabaseName,
  type DatabaseNameRules,
  DEFAULT_SANDBOX_DATABASE_PREFIX,
  describeValue,
} from '@branchline/core/transport';

/** MySQL and MariaDB refuse database and table names longer than 64 characters. */
export const MAX_IDENTIFIER_LENGTH = 64;
export const DEFAULT_PREFIX = DEFAULT_SANDBOX_DATABASE_PREFIX;
export const DEFAULT_ADMIN_DATABASE = 'branchline';
export const DEFAULT_CATALOGUE = 'branchline_mysql_databases';

const SOURCE_RE = /^[A-Za-z0-9_][A-Za-z0-9_$-]*$/;
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

const NAME_RULES: DatabaseNameRules = {
  driver: 'mysql',
  maxLength: MAX_IDENTIFIER_LENGTH,
  sourcePattern: SOURCE_RE,
  sourceChars: 'letters, digits, "_", "$" or "-"',
  fail: (message) => new SandboxDatabaseError('invalid-name', message),
};

/** Checks a baseline database name (`spec.from`). */
export function checkSourceName(name: unknown, where = 'spec.from'): string {
  return checkBaselineDatabaseName(name, where, NAME_RULES);
}

/** Checks a sandbox name (core's sandbox-name rule, which the registry applies too). */
export function checkSandboxName(name: unknown, where = 'sandbox name'): string {
  return checkDatabaseSandboxName(name, where, NAME_RULES);
}

export function checkPrefix(prefix: string, option: string): string {
  return checkDatabasePrefix(prefix, option, 'mysql');
}

export function checkTableName(name: string, option: string): string {
  if (typeof name !== 'string' || !TABLE_RE.test(name) || name.length > MAX_IDENTIFIER_LENGTH) {
    throw new TypeError(
      `branchline mysql: option ${option}=${describeValue(name)} must be a plain lowercase name such as "branchline_mysql_databases"`,
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
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline mysql: ${describeValue(name)} is not an identifier`,
    );
  return `\`${name.replace(/`/g, '``')}\``;
}

/** Escapes LIKE wildcards so a prefix matches literally (default escape character `\`). */
export function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
