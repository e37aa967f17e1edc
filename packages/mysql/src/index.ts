export {
  createSandboxDatabases,
  type DropRequest,
  type ProvisionRequest,
  retarget,
  SandboxDatabases,
  stripDefiner,
} from './databases.js';
export { type MysqlResourceHook, mysqlResourceHook, parseMysqlSpec } from './hook.js';
export {
  DEFAULT_ADMIN_DATABASE,
  DEFAULT_CATALOGUE,
  DEFAULT_PREFIX,
  MAX_IDENTIFIER_LENGTH,
  parseSandboxDatabaseName,
  quoteIdent,
  SandboxDatabaseError,
  sandboxDatabaseName,
} from './names.js';
export { type FetchSandboxDatabaseOptions, fetchSandboxDatabase } from './outputs.js';
export { createRoutedPool, type PoolCounts, RoutedPool, type RoutedPoolOptions } from './routed-pool.js';
export type {
  ClientConnectionOptions,
  CloneReport,
  MysqlResourceSpec,
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
  SweepResult,
} from './types.js';
