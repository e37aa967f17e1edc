import { logger, type RouteSource, type RouteTable } from '@branchline/core/transport';
import { type ChannelCredentials, type ChannelOptions, Channel as GrpcChannel } from '@grpc/grpc-js';

interface PoolEntry {
  channel: GrpcChannel;
  inflight: number;
  /** No rule names this endpoint any more; close the channel once its calls are done. */
  retired: boolean;
}

/**
 * One channel per sandbox endpoint of one service. A channel whose endpoint no longer appears
 * in the route table is closed as soon as its last call ends (calls in flight are not cut).
 */
export class ChannelPool {
  private readonly entries = new Map<string, PoolEntry>();
  private readonly unsubscribe: () => void;
  private closed = false;

  constructor(
    private readonly service: string,
    routes: RouteSource,
    private readonly credentials: ChannelCredentials,
    private readonly options: ChannelOptions,
  ) {
    this.unsubscribe = routes.subscribe((table) => this.retireUnused(table));
  }

  /** The channel for `endpoint`, counted as in use until `release` is called. */
  acquire(endpoint: string): GrpcChannel {
    let e = this.entries.get(endpoint);
    if (!e || e.retired) {
      // A retired endpoint that comes back gets a fresh channel; the old one closes when idle.
      e = { channel: new GrpcChannel(endpoint, this.credentials, this.options), inflight: 0, retired: false };
      this.entries.set(endpoint, e);
      if (this.closed) e.retired = true;
    }
    e.inflight++;
    return e.channel;
  }

  release(endpoint: string, channel: GrpcChannel): void {
    const e = this.entries.get(endpoint);
    if (e && e.channel === channel) {
      e.inflight--;
      if (e.retired && e.inflight <= 0) this.drop(endpoint, e);
      return;
    }
    // The endpoint was replaced while this call ran: close the old channel.
    channel.close();
  }

  /** Endpoints that currently have an open channel (for tests and debugging). */
  endpoints(): string[] {
    return [...this.entries.keys()];
  }

  private retireUnused(table: RouteTable): void {
    if (this.entries.size === 0) return;
    const live = new Set<string>();
    for (const rule of table.rules())
      if (rule.service === this.service) for (const ep of rule.grpc) live.add(ep);
    for (const [endpoint, e] of this.entries) {
      if (live.has(endpoint)) continue;
      e.retired = true;
      if (e.inflight <= 0) this.drop(endpoint, e);
    }
  }

  private drop(endpoint: string, e: PoolEntry): void {
    if (this.entries.get(endpoint) === e) this.entries.delete(endpoint);
    logger().debug('branchline: closing the gRPC channel to a sandbox endpoint no rule uses', {
      service: this.service,
      endpoint,
    });
    e.channel.close();
  }

  /** Stops following the route table and closes every channel once its calls are done. */
  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const [endpoint, e] of this.entries) {
      e.retired = true;
      if (e.inflight <= 0) this.drop(endpoint, e);
    }
  }
}
