export { HOP_MARKER } from '@branchline/core/transport';
export { createClientInterceptor } from './client-interceptor.js';
export { grpcMetadataGetter, grpcMetadataSetter, HOP_METADATA, isForwarded } from './metadata.js';
export {
  type ClientConstructor,
  createRoutedClient,
  RoutedChannel,
  type RoutedClientOptions,
} from './routed-channel.js';
export { createRoutedServer } from './server.js';
export { createServerInterceptor } from './server-interceptor.js';
export type {
  ClientInterceptorOptions,
  ForwardInfo,
  RoutedChannelOptions,
  RoutingOptions,
  ServerRoutingOptions,
} from './types.js';
