import {
  checkBaselineDatabaseName,
  checkDatabasePrefix,
  checkDatabaseSandboxName,
  parseSandboxDatabaseName as coreParseSandboxDatabaseName,
  sandboxDatabaseName as coreSandboxDatabaseName,
  type DatabaseNameRules,
  DEFAULT_SANDBOX_DATABASE_PREFIX,
  describeValue,
  nameDigest,
} from '@branchline/core/transport';

/** PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes; we never let it. */
export const MAX_IDENTIFIER_LENGTH = 63;
export const DEFAULT_PREFIX = DEFAULT_SANDBOX_DATABASE_PREFIX;
export const DEFAULT_SNAPSHOT_PREFIX = 'branchline_snap_';
export const DEFAULT_CATALOGUE = 'branchline_pg_databases';

const SOURCE_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/;
const TABLE_RE = /^[a-z_][a-z0-9_]*$/;
const ROLE_RE = /^[A-Za-z_][A-Za-z0-9_$-]*$/;

/** A name, option or spec value a person must fix; the message says which value and how. */
export class SandboxDatabaseError extends Error {
  constructor(
    readonly code: 'invalid-name' | 'missing-source' | 'not-allowed' | 'snapshot-failed' | 'clone-failed',
    message: string,
  ) {
    super(message);
    this.name = 'SandboxDatabaseError';
  }
}

const NAME_RULES: DatabaseNameRules = {
  driver: 'pg',
  maxLength: MAX_IDENTIFIER_LENGTH,
  sourcePattern: SOURCE_RE,
  sourceChars: 'letters, digits, "_" or "-"',
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
  return checkDatabasePrefix(prefix, option, 'pg');
}

export function checkTableName(name: string, option: string): string {
  if (!TABLE_RE.test(name) || name.length > MAX_IDENTIFIER_LENGTH) {
    throw new TypeError(
      `branchline pg: option ${option}=${describeValue(name)} must be a plain lowercase table name such as "branchline_pg_databases"`,
    );
  }
  return name;
}

export function checkRoleName(name: string, option: string): string {
  if (!ROLE_RE.test(name) || name.length > MAX_IDENTIFIER_LENGTH) {
    throw new TypeError(`branchline pg: option ${option}=${describeValue(name)} is not a role name`);
  }
  return name;
}

/**
 * The database of `sandbox` seeded from the baseline database `source`:
 * `<prefix><sandbox>__<source>`, at most 63 bytes (the rule and its hashing live in
 * `@branchline/core/transport`, shared by every database adapter). The routed pool computes the
 * same name, so it needs no private outputs.
 */
export function sandboxDatabaseName(source: string, sandbox: string, prefix = DEFAULT_PREFIX): string {
  return coreSandboxDatabaseName(source, sandbox, prefix, MAX_IDENTIFIER_LENGTH);
}

/** The sandbox that owns a database named by `sandboxDatabaseName`, when the name still says it. */
export const parseSandboxDatabaseName: (name: string, prefix?: string) => string | undefined =
  coreParseSandboxDatabaseName;

function fit(base: string, suffix: string, seed: string): string {
  const name = `${base}${suffix}`;
  if (name.length <= MAX_IDENTIFIER_LENGTH) return name;
  const digest = nameDigest(seed, 10);
  return `${base.slice(0, MAX_IDENTIFIER_LENGTH - suffix.length - digest.length - 1)}_${digest}${suffix}`;
}

/** The snapshot database of `source` that sandbox databases are cloned from. */
export function snapshotDatabaseName(source: string, snapshotPrefix = DEFAULT_SNAPSHOT_PREFIX): string {
  return fit(`${snapshotPrefix}${source}`, '', source);
}

/** Where a new snapshot is built before it replaces the current one. */
export function nextSnapshotName(source: string, snapshotPrefix = DEFAULT_SNAPSHOT_PREFIX): string {
  return fit(`${snapshotPrefix}${source}`, '__next', source);
}

/** Quotes an identifier for SQL (every name we interpolate goes through this). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Quotes a string literal for the statements that cannot take parameters (COMMENT ON). */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** Escapes LIKE wildcards so a prefix matches literally. */
export function likePrefix(prefix: string): string {
  return `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
