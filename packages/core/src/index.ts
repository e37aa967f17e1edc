export {
  type ActivityEntry,
  type ActivityKind,
  type ActivityReporterOptions,
  type ActivityReporterStats,
  activityReporterStats,
  configureActivityReporter,
  flushActivity,
  noteConsumed,
  noteForwarded,
  noteRouted,
  recordActivity,
} from './activity.js';
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
  grpcMetadataGetter,
  grpcMetadataSetter,
  headerValueToString,
  joinHeaderValue,
  type MetadataLike,
  nodeHeadersGetter,
  recordSetter,
} from './carriers.js';
export { type BranchlineConfig, ConfigError, loadConfig, readRoutesDocument } from './config.js';
export * from './consume/index.js';
export {
  activeContext,
  BranchlineBaggagePropagator,
  contextWithRoutingKey,
  type EnsureResult,
  ensureOpenTelemetry,
  getBaggageKey,
  getRoutingKey,
  hasOtelContextManager,
  hasOtelPropagator,
  runInContext,
  setBaggageKey,
  withRoutingKey,
} from './context.js';
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
  DEFAULT_BAGGAGE_KEY,
  injectRoutingKey,
  type KeyAliases,
  type KeyReader,
  type KeyReaderOptions,
  SIGNADOT_KEY,
  tracestateMember,
} from './extract.js';
export { explainInvalidKey, isValidRoutingKey, MAX_KEY_LENGTH } from './key.js';
export { type BranchlineLogger, logger, safeHook, setLogger, warnRateLimited } from './log.js';
export { type BranchlineCounters, counters, metricsText, resetCounters } from './metrics.js';
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
export {
  createRouteSource,
  type RouteListener,
  type RouteSource,
  type RouteSourceStatus,
  StaticRouteSource,
} from './route-source.js';
export {
  type EndpointSpec,
  type Interval,
  type RouteConflict,
  type RouteGroupSpec,
  RouteTable,
  RouteTableError,
  type RouteTableSpec,
  type Rule,
  type SandboxSpec,
  validateRouteTableSpec,
} from './routes.js';
export {
  type BranchlineRuntime,
  createRuntime,
  defaultRuntime,
  type RuntimeOptions,
  setDefaultRuntime,
} from './runtime.js';
export {
  announceWorkload,
  type WorkloadAnnouncement,
  type WorkloadAnnouncementOptions,
  type WorkloadAnnouncementStatus,
} from './workload.js';
