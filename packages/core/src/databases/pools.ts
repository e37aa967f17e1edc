import { getRoutingKey } from '../context.js';
import { logger } from '../log.js';
import type { RouteSource } from '../route-source.js';
import type { RouteTable, SandboxSpec } from '../routes.js';
import type { BranchlineRuntime } from '../runtime.js';
import { SandboxDatabaseSelection, type SandboxDatabaseSelectionOptions } from './selection.js';

/** The routing options every routed database pool takes next to its driver's pool options. */
export interface RoutedDatabaseOptions {
  /** Where routes come from and who this process is. Default: the process-wide runtime. */
  runtime?: BranchlineRuntime;
  /** This service's name, matched against a resource's `services`. Default `BRANCHLINE_SERVICE`. */
  service?: string;
  /**
   * The sandbox this process belongs to. A sandbox workload always uses its own sandbox's
   * database (its code expects that schema), whatever the key. Default `BRANCHLINE_SANDBOX`.
   */
  sandbox?: string;
  /** The baseline database name that resources name in `from`. Default: this pool's database. */
  source?: string;
  /** Name prefix of sandbox databases; must match the resource hook's. Default `bl_sb_`. */
  prefix?: string;
  /** Most connections each sandbox database's pool may open. Default min(the pool's size, 5). */
  sandboxMax?: number;
  /**
   * Picks the database of a sandbox instead of the built-in rule (a ready resource of the
   * adapter's type whose `from` is `source`). Return undefined for "no database of its own".
   */
  resolveDatabase?: (sandbox: SandboxSpec) => string | undefined;
  /**
   * In a sandbox workload, how long queries wait for the first route table (which says whether
   * the sandbox has a database) before going to the baseline. Baseline processes never wait.
   * Default 5000 ms.
   */
  routesTimeoutMs?: number;
}

/** Connection counts of one pool. */
export interface PoolCounts {
  total: number;
  idle: number;
  waiting: number;
}

/** Connection counts of a routed pool: its baseline pool and every open sandbox pool, by database. */
export interface RoutedPoolStats {
  baseline: PoolCounts;
  sandboxes: Record<string, PoolCounts>;
}

/**
 * Checks `sandboxMax` and `resolveDatabase` of a routed pool's options; returns the sandbox
 * pools' size (`sandboxMax`, default min(`poolSize`, 5)).
 */
export function checkRoutedDatabaseOptions(
  driver: string,
  options: Pick<RoutedDatabaseOptions, 'sandboxMax' | 'resolveDatabase'>,
  poolSize: number,
): number {
  const { sandboxMax, resolveDatabase } = options;
  if (sandboxMax !== undefined && (!Number.isInteger(sandboxMax) || sandboxMax < 1))
    throw new TypeError(`branchline ${driver}: option sandboxMax=${sandboxMax} must be a positive integer`);
  if (resolveDatabase !== undefined && typeof resolveDatabase !== 'function')
    throw new TypeError(
      `branchline ${driver}: option resolveDatabase must be a function (sandbox) => database name`,
    );
  return sandboxMax ?? Math.min(poolSize, 5);
}

export interface SandboxDatabasePoolsOptions<P> extends SandboxDatabaseSelectionOptions {
  /** The route table to follow (a runtime's `routes`). */
  routes: RouteSource;
  /**
   * In a sandbox workload, how long queries wait for the first route table (which says whether
   * the sandbox has a database) before going to the baseline. Default 5000 ms.
   */
  routesTimeoutMs?: number;
  /** Opens the driver's pool of a sandbox database (on first use). */
  open(database: string): P;
  /** Closes a pool (its sandbox or database left the route table, or the pools end). */
  close(pool: P): Promise<unknown>;
}

/**
 * The pools behind a routed database pool, for any driver: the baseline pool and one pool per
 * sandbox database, opened on first use and closed when the route table no longer selects it,
 * following `routes` with a `SandboxDatabaseSelection`. A sandbox workload's queries wait for
 * the first route table (`holding`), bounded, so they never write to the baseline by accident.
 */
export class SandboxDatabasePools<P> {
  readonly selection: SandboxDatabaseSelection;
  /** Set while a sandbox workload waits for its first route table; await it before picking. */
  holding: Promise<void> | undefined;
  private readonly options: SandboxDatabasePoolsOptions<P>;
  private readonly pools = new Map<string, P>();
  private readonly unsubscribe: () => void;
  private ended = false;

  constructor(
    readonly baseline: P,
    options: SandboxDatabasePoolsOptions<P>,
  ) {
    this.options = options;
    this.selection = new SandboxDatabaseSelection(options);
    const { routes, sandbox, driver } = options;
    if (routes.table) this.apply(routes.table);
    this.unsubscribe = routes.subscribe((t) => this.apply(t));
    if (!routes.table && sandbox !== undefined) {
      // A sandbox workload must not write its schema changes to the baseline just because the
      // route table has not arrived yet: its queries wait for it (bounded).
      const wait = options.routesTimeoutMs ?? 5000;
      this.holding = routes.ready(wait).then((t) => {
        this.holding = undefined;
        if (!t)
          logger().warn(
            `branchline ${driver}: no route table yet; sandbox queries go to the baseline database`,
            {
              sandbox,
              waitedMs: wait,
            },
          );
      });
    }
  }

  /** The database a query would use now for `key` (default: the active context's key). */
  databaseFor(key: string | undefined = getRoutingKey()): string {
    return this.selection.databaseFor(key);
  }

  /** The pool a query would use now for `key` (same rule as `databaseFor`). */
  poolFor(key: string | undefined = getRoutingKey()): P {
    const db = this.databaseFor(key);
    return db === this.options.source && this.selection.own === undefined ? this.baseline : this.pool(db);
  }

  /** The pool the active routing key selects. */
  pick(): P {
    const db = this.selection.select();
    return db === undefined ? this.baseline : this.pool(db);
  }

  /** The open sandbox pools, by database. */
  sandboxPools(): ReadonlyMap<string, P> {
    return this.pools;
  }

  /**
   * Runs `run` now, or once the first route table has arrived while a sandbox workload waits
   * for it (`holding`), so what it picks follows the table.
   */
  afterHolding<R>(run: () => R): R | Promise<R> {
    return this.holding === undefined ? run() : this.holding.then(run);
  }

  /** Connection counts of the baseline pool and of every open sandbox pool, by database. */
  stats(counts: (pool: P) => PoolCounts): RoutedPoolStats {
    const sandboxes: Record<string, PoolCounts> = {};
    for (const [db, p] of this.pools) sandboxes[db] = counts(p);
    return { baseline: counts(this.baseline), sandboxes };
  }

  /** Stops following the route table and closes every pool. */
  async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.unsubscribe();
    const all = [this.baseline, ...this.pools.values()];
    this.pools.clear();
    await Promise.all(all.map((p) => this.options.close(p).catch(() => {})));
  }

  private pool(db: string): P {
    let p = this.pools.get(db);
    if (p === undefined) {
      p = this.options.open(db);
      this.pools.set(db, p);
    }
    return p;
  }

  private apply(table: RouteTable): void {
    if (this.ended) return;
    const { driver } = this.options;
    try {
      const wanted = this.selection.apply(table);
      for (const [db, p] of this.pools) {
        if (wanted.has(db)) continue;
        this.pools.delete(db);
        this.options.close(p).catch((err: unknown) =>
          logger().warn(`branchline ${driver}: closing a sandbox pool failed`, {
            database: db,
            err: String(err),
          }),
        );
      }
    } catch (err) {
      logger().error(`branchline ${driver}: could not apply the route table; keeping the previous routes`, {
        err: String(err),
      });
    }
  }
}
