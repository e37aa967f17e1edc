import { counters, noteForwarded } from '@branchline/core/transport';
import {
  type Channel,
  type experimental,
  type InterceptingListener,
  type Metadata,
  type ServerInterceptingCallInterface,
  type StatusObject,
  status,
} from '@grpc/grpc-js';
import type { ChannelPool } from './channel-pool.js';
import { forwardedRequestMetadata, relayableMetadata } from './metadata.js';
import { RawMessage } from './raw.js';

export interface ForwardTarget {
  service: string;
  sandbox: string;
  endpoint: string;
}

/**
 * Messages a relay lets be in flight, per direction, before it stops reading from the sender
 * (the object-mode high-water mark of a Node stream, as grpc-js's own streams use). Reading
 * ahead matters for latency: waiting for each write to complete before reading the next event
 * would delay a unary call's half-close, and its OK status, by a socket write each.
 */
const WINDOW = 16;

/**
 * Relays one call, whatever its type, to a sandbox as raw bytes: request metadata (plus the hop
 * marker), messages in both directions with flow control (at most WINDOW in flight each way),
 * response headers, trailers and status. The caller's deadline goes with the call; a cancel on
 * either side cancels the other.
 */
export class ForwardedCall implements InterceptingListener {
  private readonly out: experimental.CallStream;
  private readonly channel: Channel;
  private receivedHeaders = false;
  private finished = false;
  /** Messages written toward the sandbox / the caller whose write has not completed yet. */
  private toSandbox = 0;
  private toCaller = 0;
  private callerPaused = false;
  private sandboxPaused = false;
  private readonly wroteToSandbox = () => {
    this.toSandbox--;
    if (this.callerPaused) {
      this.callerPaused = false;
      this.server.startRead();
    }
  };
  private readonly wroteToCaller = () => {
    this.toCaller--;
    if (this.sandboxPaused && !this.finished) {
      this.sandboxPaused = false;
      this.out.startRead();
    }
  };

  constructor(
    private readonly server: ServerInterceptingCallInterface,
    private readonly pool: ChannelPool,
    private readonly target: ForwardTarget,
    path: string,
    metadata: Metadata,
  ) {
    noteForwarded(target.sandbox, target.service);
    this.channel = pool.acquire(target.endpoint);
    this.out = this.channel.createCall(path, server.getDeadline(), undefined, null, undefined);
    this.out.start(forwardedRequestMetadata(metadata, target.service), this);
    this.out.startRead();
    server.startRead();
  }

  // Caller → sandbox.

  callerMessage(bytes: Buffer): void {
    if (this.finished) return;
    this.toSandbox++;
    this.out.sendMessageWithContext({ callback: this.wroteToSandbox }, bytes);
    if (this.toSandbox < WINDOW) this.server.startRead();
    else this.callerPaused = true;
  }

  callerHalfClose(): void {
    if (!this.finished) this.out.halfClose();
  }

  callerCancelled(): void {
    if (this.finished) return;
    this.out.cancelWithStatus(status.CANCELLED, 'branchline: the caller cancelled the forwarded call');
  }

  // Sandbox → caller.

  onReceiveMetadata(metadata: Metadata): void {
    this.receivedHeaders = true;
    this.server.sendMetadata(relayableMetadata(metadata));
  }

  onReceiveMessage(bytes: Buffer): void {
    this.toCaller++;
    this.server.sendMessage(new RawMessage(bytes), this.wroteToCaller);
    if (this.toCaller < WINDOW) this.out.startRead();
    else this.sandboxPaused = true;
  }

  onReceiveStatus(s: StatusObject): void {
    if (this.finished) return;
    this.finished = true;
    this.pool.release(this.target.endpoint, this.channel);
    let details = s.details;
    if (s.code === status.UNAVAILABLE && !this.receivedHeaders) {
      counters.forwardFailed++;
      const { sandbox, service, endpoint } = this.target;
      details =
        `branchline: could not reach sandbox "${sandbox}" for service "${service}" at ${endpoint}: ${s.details}. ` +
        'Check that the sandbox is running and that its registered gRPC endpoint is right.';
    }
    this.server.sendStatus({ code: s.code, details, metadata: relayableMetadata(s.metadata) });
  }
}
