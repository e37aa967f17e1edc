export {
  createSandboxDatabases,
  type DropRequest,
  FILE_COPY_THRESHOLD_BYTES,
  type ProvisionRequest,
  SandboxDatabases,
  type SnapshotRequest,
  snapshotDatabase,
} from './databases.js';
export { type PostgresResourceHook, parsePostgresSpec, postgresResourceHook } from './hook.js';
export {
  DEFAULT_CATALOGUE,
  DEFAULT_PREFIX,
  DEFAULT_SNAPSHOT_PREFIX,
  parseSandboxDatabaseName,
  SandboxDatabaseError,
  sandboxDatabaseName,
  snapshotDatabaseName,
} from './names.js';
export { type FetchSandboxDatabaseOptions, fetchSandboxDatabase } from './outputs.js';
export {
  formatBytes,
  formatConnection,
  progressPrinter,
  type RenderProgressOptions,
  renderProgress,
} from './progress.js';
export { createRoutedPool, type PoolCounts, RoutedPool, type RoutedPoolOptions } from './routed-pool.js';
export type {
  ClientConnectionOptions,
  CloneStrategy,
  PostgresResourceSpec,
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
  SnapshotMethod,
  SnapshotResult,
  SweepResult,
} from './types.js';
