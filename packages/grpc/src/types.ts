import type { BranchlineRuntime } from '@branchline/core';
import type { ChannelCredentials, ChannelOptions } from '@grpc/grpc-js';

/** Options shared by everything in this package that makes routing decisions. */
export interface RoutingOptions {
  /**
   * Where identity, routes and the key reader come from. Default: `defaultRuntime()`, built from
   * the `BRANCHLINE_*` environment on first use.
   */
  runtime?: BranchlineRuntime;
}

export interface ClientInterceptorOptions {
  /** Baggage member name; default: the runtime's (`BRANCHLINE_BAGGAGE_KEY`, else `branchline`). */
  baggageKey?: string;
}

export interface ServerRoutingOptions extends RoutingOptions {
  /** This process's service name; default `runtime.config.service` (`BRANCHLINE_SERVICE`). */
  service?: string;
  /** This process's sandbox; default `runtime.config.sandbox` (`BRANCHLINE_SANDBOX`); unset = baseline. */
  sandbox?: string;
  /**
   * Forward a call whose key routes this service to a sandbox (baseline instances only).
   * Needs a server from `createRoutedServer`, which keeps request bytes raw. Default true.
   */
  forward?: boolean;
  /** Credentials for the channels to sandboxes; default insecure (plain HTTP/2). */
  credentials?: ChannelCredentials;
  /** Options for the channels to sandboxes. */
  channelOptions?: ChannelOptions;
  /** Called for each forwarded call (errors it throws are logged and ignored). */
  onForward?: (info: ForwardInfo) => void;
}

/** What a forwarding hook is told. */
export interface ForwardInfo {
  method: string;
  key: string;
  sandbox: string;
  endpoint: string;
}

export interface RoutedChannelOptions extends RoutingOptions {
  /** The service this channel calls (the name rules use), e.g. `payments`. */
  service: string;
  /** The baseline target, e.g. `payments:50051` or `dns:///payments:50051`. */
  target: string;
  /** Credentials for every endpoint; default insecure. */
  credentials?: ChannelCredentials;
  /** Channel options for every endpoint. */
  channelOptions?: ChannelOptions;
}
