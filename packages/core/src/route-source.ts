import { type BranchlineConfig, readRoutesDocument } from './config.js';
import { logger } from './log.js';
import { RegistryRouteSource } from './registry-source.js';
import { RouteTable, type RouteTableSpec } from './routes.js';

export interface RouteSourceStatus {
  /** At least one complete table has been received. */
  synced: boolean;
  /** Wall-clock time (ms) of the last successful sync or heartbeat. */
  lastSyncAt?: number;
  /** The source is currently not connected to its origin (it keeps the last known table). */
  stale: boolean;
  /** Last error, for logs and health endpoints. */
  error?: string;
}

export type RouteListener = (table: RouteTable) => void;

/** Where a process gets its route table from: a static document or the registry. */
export interface RouteSource {
  /** The current table; undefined until the first sync (queue consumers hold until then). */
  readonly table: RouteTable | undefined;
  readonly status: RouteSourceStatus;
  /** Resolves with the table once synced, or with undefined after `timeoutMs`. */
  ready(timeoutMs?: number): Promise<RouteTable | undefined>;
  /** Called with each new table (including heartbeats that only advance `completeUntil`). */
  subscribe(listener: RouteListener): () => void;
  close(): Promise<void>;
}

/**
 * A route source whose table is set in code (and by `BRANCHLINE_ROUTES`). `update` swaps in a
 * new table atomically and notifies subscribers; tests use it to simulate registry changes.
 */
export class StaticRouteSource implements RouteSource {
  private current: RouteTable | undefined;
  private readonly listeners = new Set<RouteListener>();
  private waiters: ((t: RouteTable) => void)[] = [];
  readonly status: RouteSourceStatus = { synced: false, stale: false };

  constructor(spec?: RouteTableSpec | RouteTable) {
    if (spec !== undefined) this.update(spec);
  }

  get table(): RouteTable | undefined {
    return this.current;
  }

  update(spec: RouteTableSpec | RouteTable | unknown): RouteTable {
    const table = spec instanceof RouteTable ? spec : RouteTable.from(spec);
    this.current = table;
    this.status.synced = true;
    this.status.lastSyncAt = Date.now();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w(table);
    for (const l of this.listeners) {
      try {
        l(table);
      } catch (err) {
        logger().error('branchline: a route listener threw; ignoring it', { err: String(err) });
      }
    }
    return table;
  }

  ready(timeoutMs = 5000): Promise<RouteTable | undefined> {
    if (this.current) return Promise.resolve(this.current);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(undefined);
      }, timeoutMs);
      timer.unref?.();
      const done = (t: RouteTable) => {
        clearTimeout(timer);
        resolve(t);
      };
      this.waiters.push(done);
    });
  }

  subscribe(listener: RouteListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}

/**
 * The route source the configuration asks for: the registry when `BRANCHLINE_REGISTRY` is set,
 * the static table from `BRANCHLINE_ROUTES` when that is set, otherwise an empty table (every
 * request is served by baseline).
 */
export function createRouteSource(config: BranchlineConfig): RouteSource {
  if (config.registry !== undefined)
    return new RegistryRouteSource({ url: config.registry, token: config.token });
  if (config.routes !== undefined)
    return new StaticRouteSource(RouteTable.from(readRoutesDocument(config.routes)));
  return new StaticRouteSource(RouteTable.empty);
}
