import { type BranchlineConfig, readRoutesDocument } from './config.js';
import { RegistryRouteSource } from './registry-source.js';
import { RouteTable, type RouteTableSpec } from './routes.js';
import { TableHolder } from './table-holder.js';

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
export class StaticRouteSource extends TableHolder implements RouteSource {
  readonly status: RouteSourceStatus = { synced: false, stale: false };

  constructor(spec?: RouteTableSpec | RouteTable) {
    super();
    if (spec !== undefined) this.update(spec);
  }

  update(spec: RouteTableSpec | RouteTable | unknown): RouteTable {
    const table = spec instanceof RouteTable ? spec : RouteTable.from(spec);
    this.status.synced = true;
    this.status.lastSyncAt = Date.now();
    this.publish(table);
    return table;
  }

  ready(timeoutMs = 5000): Promise<RouteTable | undefined> {
    return this.waitForTable(timeoutMs, false);
  }

  async close(): Promise<void> {
    this.clearListeners();
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
