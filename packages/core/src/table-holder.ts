import { logger } from './log.js';
import type { RouteListener } from './route-source.js';
import type { RouteTable } from './routes.js';

/**
 * What every route source shares: the current table, subscribers, and callers waiting for the
 * first table. Subclasses call `publish` with each new immutable table.
 */
export abstract class TableHolder {
  private current: RouteTable | undefined;
  private readonly listeners = new Set<RouteListener>();
  private waiters: ((t: RouteTable) => void)[] = [];

  get table(): RouteTable | undefined {
    return this.current;
  }

  /**
   * Resolves with the table once there is one, or with undefined after `timeoutMs`. With
   * `keepAlive` the timer holds the process open until then (a service awaiting its first table).
   */
  protected waitForTable(timeoutMs: number, keepAlive: boolean): Promise<RouteTable | undefined> {
    if (this.current) return Promise.resolve(this.current);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(undefined);
      }, timeoutMs);
      if (!keepAlive) timer.unref?.();
      const done = (t: RouteTable) => {
        clearTimeout(timer);
        resolve(t);
      };
      this.waiters.push(done);
    });
  }

  /** Swaps in `table` and tells waiters and subscribers; a throwing subscriber is logged. */
  protected publish(table: RouteTable): void {
    this.current = table;
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
  }

  subscribe(listener: RouteListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  protected clearListeners(): void {
    this.listeners.clear();
  }
}
