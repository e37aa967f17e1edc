import { defaultRuntime, getRoutingKey } from '@branchline/core';
import { noteRouted, type RouteSource, resolveOutgoing } from '@branchline/core/transport';
import {
  type Channel,
  type ChannelCredentials,
  type ChannelInterface,
  type ChannelOptions,
  type ClientOptions,
  type connectivityState,
  type Deadline,
  type experimental,
  Channel as GrpcChannel,
  credentials as grpcCredentials,
  type InterceptingListener,
  type Metadata,
  type StatusObject,
} from '@grpc/grpc-js';
import { ChannelPool } from './channel-pool.js';
import { createClientInterceptor } from './client-interceptor.js';
import type { RoutedChannelOptions } from './types.js';

type CallStream = experimental.CallStream;
type ConnectivityState = connectivityState;
type ServerSurfaceCall = Parameters<ChannelInterface['createCall']>[3];

/** Wraps a call on a pooled sandbox channel so the pool knows when the channel is idle. */
class PooledCall implements CallStream, InterceptingListener {
  private listener: InterceptingListener | undefined;
  private done = false;

  constructor(
    private readonly call: CallStream,
    private readonly release: () => void,
  ) {}

  start(metadata: Metadata, listener: InterceptingListener): void {
    this.listener = listener;
    this.call.start(metadata, this);
  }
  onReceiveMetadata(metadata: Metadata): void {
    this.listener!.onReceiveMetadata(metadata);
  }
  onReceiveMessage(message: unknown): void {
    this.listener!.onReceiveMessage(message);
  }
  onReceiveStatus(status: StatusObject): void {
    if (!this.done) {
      this.done = true;
      this.release();
    }
    this.listener!.onReceiveStatus(status);
  }
  cancelWithStatus(...args: Parameters<CallStream['cancelWithStatus']>): void {
    this.call.cancelWithStatus(...args);
  }
  getPeer(): string {
    return this.call.getPeer();
  }
  sendMessageWithContext(...args: Parameters<CallStream['sendMessageWithContext']>): void {
    this.call.sendMessageWithContext(...args);
  }
  startRead(): void {
    this.call.startRead();
  }
  halfClose(): void {
    this.call.halfClose();
  }
  getCallNumber(): number {
    return this.call.getCallNumber();
  }
  setCredentials(...args: Parameters<CallStream['setCredentials']>): void {
    this.call.setCredentials(...args);
  }
  getAuthContext() {
    return this.call.getAuthContext();
  }
}

/**
 * A grpc-js channel that picks, per call, where the call goes: the sandbox endpoint when the
 * active routing key has a rule for `service`, the baseline target otherwise. Pass it to a
 * client as `channelOverride`. Sandbox channels are pooled per endpoint and closed once no rule
 * names their endpoint and their last call has ended.
 */
export class RoutedChannel implements ChannelInterface {
  readonly service: string;
  private readonly baseline: GrpcChannel;
  private readonly routes: RouteSource;
  private readonly pool: ChannelPool;

  constructor(options: RoutedChannelOptions) {
    if (!options || typeof options.service !== 'string' || options.service === '') {
      throw new TypeError(
        `branchline grpc: option service must name the service this channel calls, e.g. "payments" (got ${JSON.stringify(options?.service)})`,
      );
    }
    if (typeof options.target !== 'string' || options.target === '') {
      throw new TypeError(
        `branchline grpc: option target must be the baseline address, e.g. "payments:50051" (got ${JSON.stringify(options.target)})`,
      );
    }
    const creds: ChannelCredentials = options.credentials ?? grpcCredentials.createInsecure();
    const channelOptions: ChannelOptions = options.channelOptions ?? {};
    this.service = options.service;
    this.routes = (options.runtime ?? defaultRuntime()).routes;
    this.baseline = new GrpcChannel(options.target, creds, channelOptions);
    this.pool = new ChannelPool(options.service, this.routes, creds, channelOptions);
  }

  createCall(
    method: string,
    deadline: Deadline,
    host: string | null | undefined,
    parentCall: ServerSurfaceCall | null,
    propagateFlags: number | null | undefined,
  ): CallStream {
    const table = this.routes.table;
    const key = table === undefined ? undefined : getRoutingKey();
    const route = key === undefined ? undefined : resolveOutgoing(table!, this.service, key, 'grpc');
    if (route === undefined)
      return this.baseline.createCall(method, deadline, host, parentCall, propagateFlags);
    noteRouted(route.rule.sandbox, this.service);
    const { endpoint } = route;
    const channel = this.pool.acquire(endpoint);
    const call = channel.createCall(method, deadline, host, parentCall, propagateFlags);
    return new PooledCall(call, () => this.pool.release(endpoint, channel));
  }

  /** Sandbox endpoints that currently have an open channel. */
  sandboxEndpoints(): string[] {
    return this.pool.endpoints();
  }

  close(): void {
    this.pool.close();
    this.baseline.close();
  }
  getTarget(): string {
    return this.baseline.getTarget();
  }
  getConnectivityState(tryToConnect: boolean): ConnectivityState {
    return this.baseline.getConnectivityState(tryToConnect);
  }
  watchConnectivityState(
    currentState: ConnectivityState,
    deadline: Date | number,
    callback: (error?: Error) => void,
  ): void {
    this.baseline.watchConnectivityState(currentState, deadline, callback);
  }
  getChannelzRef() {
    return this.baseline.getChannelzRef();
  }
}

/** A client class from `loadPackageDefinition` or `makeGenericClientConstructor`. */
export type ClientConstructor<C> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: ClientOptions,
) => C;

export interface RoutedClientOptions extends RoutedChannelOptions {
  /** More client interceptors, run after Branchline's. */
  interceptors?: ClientOptions['interceptors'];
}

/**
 * A client of `service` whose calls go to the sandbox the active routing key selects, or to
 * `target` (the baseline), and carry the key in `baggage` metadata either way.
 */
export function createRoutedClient<C>(Client: ClientConstructor<C>, options: RoutedClientOptions): C {
  if (typeof Client !== 'function') {
    throw new TypeError(
      'branchline grpc: createRoutedClient needs a client class (from loadPackageDefinition)',
    );
  }
  const channel = new RoutedChannel(options);
  const creds = options.credentials ?? grpcCredentials.createInsecure();
  return new Client(options.target, creds, {
    channelOverride: channel as unknown as Channel,
    interceptors: [createClientInterceptor(), ...(options.interceptors ?? [])],
  });
}
