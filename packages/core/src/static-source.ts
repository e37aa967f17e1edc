import type { RouteSource, RouteSourceStatus } from './route-source.js';
import { RouteTable, type RouteTableSpec } from './routes.js';
import { TableHolder } from './table-holder.js';

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
