import {
  type DatabaseResourceHook,
  databaseResourceHook,
  parseDatabaseSpec,
} from '@branchline/core/transport';
import { createSandboxDatabases, type SandboxDatabases } from './databases.js';
import { checkSourceName, SandboxDatabaseError } from './names.js';
import type { PostgresResourceSpec, SandboxDatabaseOutputs, SandboxDatabasesOptions } from './types.js';

export interface PostgresResourceHook
  extends DatabaseResourceHook<'postgres', SandboxDatabaseOutputs, SandboxDatabases> {}

/**
 * Reads a resource spec. Accepts `{ from }` in `spec` and, for hand-written documents, at the
 * top level of the resource (`{ type: 'postgres', from: 'orders' }`).
 */
export function parsePostgresSpec(spec: unknown): PostgresResourceSpec {
  return parseDatabaseSpec(spec, {
    type: 'postgres',
    driver: 'pg',
    refresh: true,
    checkSource: checkSourceName,
    fail: (message) => new SandboxDatabaseError('invalid-name', message),
  });
}

/**
 * The registry resource hook for `{ type: 'postgres', spec: { from: 'orders' } }`: provisions a
 * sandbox database cloned from the baseline's snapshot, reports progress, returns the connection
 * details as private outputs, drops it when the sandbox goes, and sweeps orphans. `databases` is
 * the manager behind it (snapshots, listings, sweeps with a report).
 *
 * ```ts
 * createRegistryServer({ resourceHooks: [postgresResourceHook({ connection: process.env.ADMIN_DATABASE_URL })] })
 * ```
 */
export function postgresResourceHook(options: SandboxDatabasesOptions = {}): PostgresResourceHook {
  return databaseResourceHook('postgres', createSandboxDatabases(options), parsePostgresSpec);
}
