/**
 * The transport SDK (`@branchline/core/transport`): what the Branchline transport packages are
 * built from, for authors of new adapters. Carriers, the routing decisions, key readers, route
 * tables and sources, counters, logging and the resource-hook contract. Applications need only
 * `@branchline/core`.
 */
export {
  type ActivityEntry,
  type ActivityKind,
  noteConsumed,
  noteForwarded,
  noteRouted,
  recordActivity,
} from './activity.js';
export {
  type BackoffOptions,
  backoffDelay,
  DEFAULT_BACKOFF,
  type DeprecatedBackoffOptions,
  type ResolvedBackoff,
  resolveBackoff,
} from './backoff.js';
export {
  type BaggageDrops,
  type BaggageMember,
  type BaggageParse,
  encodeBaggageValue,
  findBaggageMember,
  MAX_BAGGAGE_BYTES,
  MAX_BAGGAGE_MEMBERS,
  type MemberLookup,
  type MergeResult,
  mergeBaggageMember,
  parseBaggage,
  serializeBaggage,
} from './baggage.js';
export {
  bufferTextMapGetter,
  type CarrierGetter,
  type CarrierSetter,
  headerValueToString,
  joinHeaderValue,
  nodeHeadersGetter,
  recordSetter,
} from './carriers.js';
export { readRoutesDocument } from './config.js';
export { HoldAbandonedError, type HoldReason, HoldTimeoutError } from './consume/errors.js';
export {
  activationTime,
  type OwnersChange,
  type OwnersListener,
  overrideIntervals,
  ownershipOf,
  type SandboxOwnership,
} from './consume/ownership.js';
export {
  createMessageSelector,
  type FinalSelection,
  type HoldOptions,
  type HoldSelection,
  type MessageSelector,
  type MessageSelectorOptions,
  type Selection,
  type SelectorStats,
} from './consume/selector.js';
export {
  activeContext,
  getBaggageKey,
  hasOtelContextManager,
  hasOtelPropagator,
  runInContext,
  setBaggageKey,
} from './context.js';
export {
  type DatabaseResourceHook,
  type DatabaseResourceSpec,
  type DatabaseSpecRules,
  databaseResourceHook,
  parseDatabaseSpec,
  type SandboxDatabaseManager,
} from './databases/hook.js';
export {
  checkBaselineDatabaseName,
  checkDatabasePrefix,
  checkDatabaseSandboxName,
  type DatabaseNameRules,
  DEFAULT_SANDBOX_DATABASE_PREFIX,
  describeValue,
  nameDigest,
  parseSandboxDatabaseName,
  sandboxDatabaseName,
} from './databases/names.js';
export { type FetchSandboxDatabaseOptions, fetchDatabaseOutputs } from './databases/outputs.js';
export {
  checkRoutedDatabaseOptions,
  type PoolCounts,
  type RoutedDatabaseOptions,
  type RoutedPoolStats,
  SandboxDatabasePools,
  type SandboxDatabasePoolsOptions,
} from './databases/pools.js';
export {
  databaseOfUrl,
  openRoutedDatabasePools,
  type RoutedDatabasePools,
  type RoutedPoolDriver,
  reportPooledConnectionError,
  urlWithDatabase,
} from './databases/routed-pool.js';
export {
  SandboxDatabaseSelection,
  type SandboxDatabaseSelectionOptions,
} from './databases/selection.js';
export {
  guardProgressReport,
  type SandboxDatabaseConnection,
  type SandboxDatabaseDropRequest,
  type SandboxDatabaseProvisionRequest,
} from './databases/types.js';
export {
  decideIncoming,
  decideMessage,
  HOP_MARKER,
  type IncomingDecision,
  type IncomingInput,
  type MessageDecision,
  type MessageInput,
  pickEndpoint,
  resolveOutgoing,
} from './decide.js';
export {
  createKeyReader,
  injectRoutingKey,
  type KeyReader,
  type KeyReaderOptions,
  SIGNADOT_KEY,
  tracestateMember,
} from './extract.js';
export { logger, renamedOption, safeHook, warnDeprecatedOption, warnRateLimited } from './log.js';
export { type BranchlineCounters, counters, resetCounters } from './metrics.js';
export { checkDurationMs, optionWithAlias } from './options.js';
export {
  createRegistrySource,
  RegistryRouteSource,
  type RegistrySourceOptions,
  type RegistrySourceStatus,
} from './registry-source.js';
export type {
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  ResourceState,
  ResourceStatus,
  SandboxDeletedListener,
} from './resources.js';
export type { RouteListener, RouteSource, RouteSourceStatus } from './route-source.js';
export { type RouteConflict, RouteTable, type Rule, validateRouteTableSpec } from './routes.js';
export { createRouteSource } from './runtime.js';
export { StaticRouteSource } from './static-source.js';
