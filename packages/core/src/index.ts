/**
 * The application API: what a service author calls. Transport packages also use the SDK at
 * `@branchline/core/transport` (carriers, routing decisions, route sources, counters, logging).
 */

export {
  type ActivityReporterOptions,
  type ActivityReporterStats,
  activityReporterStats,
  configureActivityReporter,
  flushActivity,
} from './activity.js';
export type { BackoffOptions } from './backoff.js';
export { type BranchlineConfig, ConfigError, loadConfig, resolveBaggageKey } from './config.js';
export {
  BranchlineBaggagePropagator,
  contextWithRoutingKey,
  type EnsureResult,
  ensureOpenTelemetry,
  getRoutingKey,
  withRoutingKey,
} from './context.js';
export {
  BAGGAGE_KEY_ENV,
  DEFAULT_BAGGAGE_KEY,
  type KeyAliases,
  routingBaggage,
} from './extract.js';
export { type BranchlineLogger, setLogger } from './log.js';
export { metricsText } from './metrics.js';
export {
  type EndpointSpec,
  type Interval,
  type RouteGroupSpec,
  RouteTableError,
  type RouteTableSpec,
  type SandboxSpec,
} from './routes.js';
export {
  explainInvalidKey,
  HTTP_TOKEN_PATTERN,
  HTTP_TOKEN_RULE,
  isHttpToken,
  isValidLabelName,
  isValidLabelValue,
  isValidRoutingKey,
  isValidSandboxName,
  isValidServiceName,
  LABEL_NAME_PATTERN,
  LABEL_NAME_RULE,
  MAX_KEY_LENGTH,
  MAX_LABEL_VALUE_LENGTH,
  MAX_SERVICE_NAME_LENGTH,
  ROUTING_KEY_PATTERN,
  ROUTING_KEY_RULE,
  SANDBOX_NAME_PATTERN,
  SANDBOX_NAME_RULE,
  SERVICE_NAME_PATTERN,
  SERVICE_NAME_RULE,
} from './rules.js';
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
