import {
  type DatabaseResourceHook,
  databaseResourceHook,
  parseDatabaseSpec,
} from '@branchline/core/transport';
import { createSandboxDatabases, type SandboxDatabases } from './databases.js';
import { checkSourceName, SandboxDatabaseError } from './names.js';
import type { MysqlResourceSpec, SandboxDatabaseOutputs, SandboxDatabasesOptions } from './types.js';

export interface MysqlResourceHook
  extends DatabaseResourceHook<'mysql', SandboxDatabaseOutputs, SandboxDatabases> {}

/**
 * Reads a resource spec. Accepts `{ from }` in `spec` and, for hand-written documents, at the
 * top level of the resource (`{ type: 'mysql', from: 'orders' }`).
 */
export function parseMysqlSpec(spec: unknown): MysqlResourceSpec {
  return parseDatabaseSpec(spec, {
    type: 'mysql',
    driver: 'mysql',
    checkSource: checkSourceName,
    fail: (message) => new SandboxDatabaseError('invalid-name', message),
  });
}

/**
 * The registry resource hook for `{ type: 'mysql', spec: { from: 'orders' } }` (MySQL and
 * MariaDB): provisions a sandbox database copied from the baseline, reports progress, returns
 * the connection details as private outputs, drops it when the sandbox goes, and sweeps orphans.
 * `databases` is the manager behind it (listings, sweeps with a report).
 *
 * ```ts
 * createRegistryServer({ resourceHooks: [mysqlResourceHook({ connection: process.env.ADMIN_MYSQL_URL })] })
 * ```
 */
export function mysqlResourceHook(options: SandboxDatabasesOptions = {}): MysqlResourceHook {
  return databaseResourceHook('mysql', createSandboxDatabases(options), parseMysqlSpec);
}
