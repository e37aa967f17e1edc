export { HOP_MARKER } from '@branchline/core/transport';
export {
  type ForwardTarget,
  forwardRequestHeaders,
  forwardToSandbox,
  rawHeadersGetter,
  resolveForwardOptions,
  SandboxForwarder,
  sandboxErrorBody,
} from './forward.js';
export { firstLabel, HostMap, type OriginInfo } from './hosts.js';
export { bindEmitter, type IncomingRoute, IncomingRouter } from './incoming.js';
export { createRoutingInterceptor, installFetchRouting } from './interceptor.js';
export { installNodeHttpRouting, RoutingHttpAgent, RoutingHttpsAgent } from './node-agent.js';
export { headersWithKey, OutgoingRouter, withoutBaggageMember } from './outgoing.js';
export { type SandboxTarget, SandboxUnreachableError } from './sandbox-error.js';
export {
  type BranchlineRequestInfo,
  type ForwardOptions,
  HOP_HEADER,
  type HostMapOptions,
  type IncomingRoutingOptions,
  type OutgoingRoutingOptions,
} from './types.js';
