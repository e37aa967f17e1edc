import { type BranchlineRuntime, contextWithRoutingKey, defaultRuntime } from '@branchline/core';
import {
  activeContext,
  counters,
  decideIncoming,
  type IncomingDecision,
  type KeyReader,
  RouteTable,
  runInContext,
  safeHook,
  warnRateLimited,
} from '@branchline/core/transport';
import {
  credentials as grpcCredentials,
  type Metadata,
  type ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerMethodDefinition,
  status,
} from '@grpc/grpc-js';
import type { Context } from '@opentelemetry/api';
import { ChannelPool } from './channel-pool.js';
import { ForwardedCall } from './forward.js';
import { grpcMetadataGetter, isForwarded } from './metadata.js';
import { type Deserializer, originalDeserializer } from './raw.js';
import type { Handoff } from './stream-relay.js';
import type { ServerRoutingOptions } from './types.js';

type InterceptingServerListener = Parameters<ServerInterceptingCallInterface['start']>[0];

/**
 * The context the interceptor gave a keyed call, kept on the call's metadata (the object the
 * handler receives as `call.metadata`), so a routed server can re-apply it right around the
 * handler after OpenTelemetry's gRPC instrumentation has set its own context.
 */
export const CALL_CONTEXT: unique symbol = Symbol('branchline.grpc.callContext');
export type RoutedMetadata = Metadata & { [CALL_CONTEXT]?: Context };

/**
 * Channels that relay calls: no retries (the caller owns its retry policy, and buffering every
 * message for a retry that never comes costs time), and no message-size limit of their own
 * (the baseline's server limits and the caller's still apply).
 */
const RELAY_CHANNEL_OPTIONS = {
  'grpc.enable_retries': 0,
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
};

/** Everything a call needs, resolved once per interceptor. */
export class ServerRouting {
  readonly runtime: BranchlineRuntime;
  readonly keys: KeyReader;
  readonly service: string | undefined;
  readonly sandbox: string | undefined;
  readonly forward: boolean;
  /** Channels to sandboxes are plain-text HTTP/2 (no `credentials` given). */
  readonly plainText: boolean;
  /**
   * Set by the stream hook (server.ts) only while grpc-js's stream handler runs, which builds
   * this stream's interceptor synchronously; the interceptor takes it in its constructor.
   */
  handoff: Handoff | undefined;
  private pool: ChannelPool | undefined;

  constructor(private readonly options: ServerRoutingOptions) {
    if (options.forward !== undefined && typeof options.forward !== 'boolean') {
      throw new TypeError(
        `branchline grpc: option forward must be a boolean (got ${String(options.forward)})`,
      );
    }
    if (options.onForward !== undefined && typeof options.onForward !== 'function') {
      throw new TypeError('branchline grpc: option onForward must be a function');
    }
    this.runtime = options.runtime ?? defaultRuntime();
    this.keys = this.runtime.keys;
    this.service = options.service ?? this.runtime.config.service;
    this.sandbox = options.sandbox ?? this.runtime.config.sandbox;
    this.forward = options.forward ?? true;
    this.plainText = options.credentials === undefined;
  }

  channels(service: string): ChannelPool {
    this.pool ??= new ChannelPool(
      service,
      this.runtime.routes,
      this.options.credentials ?? grpcCredentials.createInsecure(),
      { ...RELAY_CHANNEL_OPTIONS, ...this.options.channelOptions },
    );
    return this.pool;
  }

  notifyForward(method: string, key: string, sandbox: string, endpoint: string): void {
    if (this.options.onForward)
      safeHook('onForward', this.options.onForward, { method, key, sandbox, endpoint });
  }

  close(): void {
    this.pool?.close();
  }
}

/**
 * Sits between grpc-js's call and the handler. It reads the key from the request metadata and
 * either relays the whole call to a sandbox (the handler never runs) or delivers every event to
 * the handler inside a context that carries the key. grpc-js runs handlers synchronously from
 * these events, so unary, client-streaming, server-streaming and bidi handlers all start, and
 * keep, the caller's context.
 */
class RoutingServerCall implements ServerInterceptingCallInterface, InterceptingServerListener {
  private listener: InterceptingServerListener | undefined;
  private ctx: Context | undefined;
  /**
   * The context for the events before half-close. Unset when grpc-js's own listener is next and
   * the method takes a single request (unary, server streaming): grpc-js then only stores the
   * metadata and the request until half-close, where the handler starts, so entering the
   * context for them would run no application code.
   */
  private early: Context | undefined;
  private forwarded: ForwardedCall | undefined;
  /** What the stream hook already read and decided for this call, if it ran. */
  private readonly handoff: Handoff | undefined;

  constructor(
    private readonly next: ServerInterceptingCallInterface,
    private readonly method: ServerMethodDefinition<unknown, unknown>,
    private readonly routing: ServerRouting,
    /** Set when the server keeps request bytes raw (createRoutedServer): decode before the handler. */
    private readonly decode: Deserializer | undefined,
    /** grpc-js's handler listener is the next one (no other interceptor after this one). */
    private readonly handlerNext: boolean,
  ) {
    this.handoff = routing.handoff;
    routing.handoff = undefined;
  }

  // Toward the network.

  start(listener: InterceptingServerListener): void {
    this.listener = listener;
    this.next.start(this);
  }
  sendMetadata(metadata: Metadata): void {
    this.next.sendMetadata(metadata);
  }
  sendMessage(message: unknown, callback: () => void): void {
    this.next.sendMessage(message, callback);
  }
  sendStatus(s: Parameters<ServerInterceptingCallInterface['sendStatus']>[0]): void {
    this.next.sendStatus(s);
  }
  startRead(): void {
    this.next.startRead();
  }
  getPeer(): string {
    return this.next.getPeer();
  }
  getDeadline() {
    return this.next.getDeadline();
  }
  getHost(): string {
    return this.next.getHost();
  }
  getAuthContext() {
    return this.next.getAuthContext();
  }
  getConnectionInfo() {
    return this.next.getConnectionInfo();
  }
  getMetricsRecorder() {
    return this.next.getMetricsRecorder();
  }

  // Toward the handler.

  onReceiveMetadata(metadata: Metadata): void {
    const r = this.routing;
    const h = this.handoff;
    const key = h !== undefined ? h.key : r.keys.read(metadata, grpcMetadataGetter);
    if (key === undefined) {
      this.listener!.onReceiveMetadata(metadata);
      return;
    }
    if (r.service !== undefined && r.forward && this.routeToSandbox(metadata, key, r.service, h?.decision))
      return;
    const ctx = contextWithRoutingKey(activeContext(), key);
    (metadata as RoutedMetadata)[CALL_CONTEXT] = ctx;
    this.ctx = ctx;
    if (this.handlerNext && !this.method.requestStream) {
      this.listener!.onReceiveMetadata(metadata);
      return;
    }
    this.early = ctx;
    runInContext(ctx, () => this.listener!.onReceiveMetadata(metadata));
  }

  onReceiveMessage(message: unknown): void {
    if (this.forwarded) {
      this.forwarded.callerMessage(message as Buffer);
      return;
    }
    let decoded = message;
    if (this.decode) {
      try {
        decoded = this.decode(message as Buffer);
      } catch (err) {
        this.next.sendStatus({
          code: status.INTERNAL,
          details: `Error deserializing request for ${this.method.path}: ${(err as Error).message}`,
        });
        return;
      }
    }
    const ctx = this.early;
    if (ctx === undefined) this.listener!.onReceiveMessage(decoded);
    else runInContext(ctx, () => this.listener!.onReceiveMessage(decoded));
  }

  onReceiveHalfClose(): void {
    if (this.forwarded) {
      this.forwarded.callerHalfClose();
      return;
    }
    const ctx = this.ctx;
    if (ctx === undefined) this.listener!.onReceiveHalfClose();
    else runInContext(ctx, () => this.listener!.onReceiveHalfClose());
  }

  onCancel(): void {
    if (this.forwarded) {
      this.forwarded.callerCancelled();
      return;
    }
    const ctx = this.ctx;
    if (ctx === undefined) this.listener!.onCancel();
    else runInContext(ctx, () => this.listener!.onCancel());
  }

  /** Destination routing for this call; true when it is being relayed to a sandbox. */
  private routeToSandbox(
    metadata: Metadata,
    key: string,
    service: string,
    decided: IncomingDecision | undefined,
  ): boolean {
    const r = this.routing;
    const decision =
      decided ??
      decideIncoming({
        table: r.runtime.routes.table ?? RouteTable.empty,
        service,
        sandbox: r.sandbox,
        key,
        forwarded: r.sandbox === undefined && isForwarded(metadata),
        transport: 'grpc',
      });
    if (decision.action === 'serve') {
      if (decision.reason === 'loop') {
        counters.loopPrevented++;
        warnRateLimited(
          'grpc-loop',
          'branchline: a forwarded gRPC call arrived at a baseline instance whose rule would forward it again; serving it here',
          {
            method: this.method.path,
            key,
            sandbox: decision.rule.sandbox,
            hint: 'check the sandbox endpoint in the route table',
          },
        );
      }
      return false;
    }
    if (!this.decode) {
      warnRateLimited(
        'grpc-forward-typed',
        'branchline: a gRPC call should go to a sandbox, but this server decodes requests before Branchline sees them; serving it here',
        {
          method: this.method.path,
          key,
          sandbox: decision.rule.sandbox,
          hint: 'create the server with createRoutedServer() so calls can be forwarded as raw bytes',
        },
      );
      return false;
    }
    const { sandbox } = decision.rule;
    r.notifyForward(this.method.path, key, sandbox, decision.endpoint);
    this.forwarded = new ForwardedCall(
      this.next,
      r.channels(service),
      { service, sandbox, endpoint: decision.endpoint },
      this.method.path,
      metadata,
    );
    return true;
  }
}

/** Builds the interceptor for one resolved routing setup. */
export function routingInterceptor(routing: ServerRouting, handlerNext = false): ServerInterceptor {
  return (method, call) =>
    new RoutingServerCall(
      call,
      method,
      routing,
      originalDeserializer(method.requestDeserialize),
      handlerNext,
    ) as unknown as ServerInterceptingCall;
}

/**
 * A server interceptor that makes the caller's routing key the active context for handlers of
 * all four call types. On a server from `createRoutedServer` it also forwards calls whose key
 * routes this service to a sandbox; on any other server it only sets the context.
 *
 * Pass it first in `new Server({ interceptors: [...] })` so it sees calls before anything else.
 */
export function createServerInterceptor(options: ServerRoutingOptions = {}): ServerInterceptor {
  return routingInterceptor(new ServerRouting(options));
}
