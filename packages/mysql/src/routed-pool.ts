import { EventEmitter } from 'node:events';
import { defaultRuntime, getRoutingKey } from '@branchline/core';
import {
  checkRoutedDatabaseOptions,
  logger,
  type RoutedDatabaseOptions,
  SandboxDatabasePools,
} from '@branchline/core/transport';
import mysql, { type Pool, type PoolConnection, type PoolOptions } from 'mysql2/promise';
import { checkPrefix, DEFAULT_PREFIX, sandboxDatabaseName } from './names.js';

/** The driver's pool options plus the routing options shared by every routed database pool. */
export interface RoutedPoolOptions extends PoolOptions, RoutedDatabaseOptions {}

export interface PoolCounts {
  total: number;
  idle: number;
  waiting: number;
}

/** Connection counts of a mysql2 pool (read from its internals; 0 where a version hides them). */
function counts(p: Pool): PoolCounts {
  const inner = p.pool as unknown as Record<string, { length?: number } | undefined>;
  return {
    total: inner._allConnections?.length ?? 0,
    idle: inner._freeConnections?.length ?? 0,
    waiting: inner._connectionQueue?.length ?? 0,
  };
}

/**
 * A `mysql2/promise` pool that sends each query to the database of the active routing key's
 * sandbox when that sandbox has one for this service, and to the baseline database otherwise.
 * One bounded pool per database, opened on first use and closed when its sandbox (or its
 * database) leaves the route table. `getConnection()` hands out a connection of the right pool,
 * so a transaction stays on one connection; `query()` and `execute()` are routed per call.
 */
export class RoutedPool extends EventEmitter {
  /** The pool of the baseline database. */
  readonly baseline: Pool;
  /** The baseline database name (what resources name in `from`). */
  readonly source: string;
  private readonly poolConfig: PoolOptions;
  private readonly sandboxMax: number;
  /** The sandbox pools and which one the active key selects (shared with every database adapter). */
  private readonly routing: SandboxDatabasePools<Pool>;

  /** `pool.query(sql, values)` on the pool the active key selects (same signature as mysql2's). */
  readonly query: Pool['query'];
  /** `pool.execute(sql, values)` on the pool the active key selects (same signature as mysql2's). */
  readonly execute: Pool['execute'];

  constructor(options: RoutedPoolOptions = {}) {
    super();
    const {
      runtime,
      service,
      sandbox,
      source,
      prefix,
      sandboxMax,
      resolveDatabase,
      routesTimeoutMs,
      ...poolConfig
    } = options;
    this.poolConfig = poolConfig;
    const namePrefix = checkPrefix(prefix ?? DEFAULT_PREFIX, 'prefix');
    this.sandboxMax = checkRoutedDatabaseOptions(
      'mysql',
      { sandboxMax, resolveDatabase },
      poolConfig.connectionLimit ?? 10,
    );
    const rt = runtime ?? defaultRuntime();
    const db = source ?? poolConfig.database ?? databaseOfUri(poolConfig.uri);
    if (!db)
      throw new TypeError(
        'branchline mysql: the routed pool needs the baseline database name (option database, uri or source)',
      );
    this.source = db;
    this.baseline = this.open(undefined, poolConfig);
    this.routing = new SandboxDatabasePools(this.baseline, {
      driver: 'mysql',
      type: 'mysql',
      source: db,
      prefix: namePrefix,
      service: service ?? rt.config.service,
      sandbox: sandbox ?? rt.config.sandbox,
      resolveDatabase,
      databaseName: sandboxDatabaseName,
      routes: rt.routes,
      routesTimeoutMs,
      open: (database) => this.open(database, this.configFor(database)),
      close: (p) => p.end(),
    });

    const hold = <A extends unknown[], R>(run: (...args: A) => Promise<R>) =>
      ((...args: A): Promise<R> =>
        this.routing.holding !== undefined
          ? this.routing.holding.then(() => run(...args))
          : run(...args)) as never;
    this.query = hold((...args: unknown[]) =>
      (this.pick().query as (...a: unknown[]) => Promise<unknown>)(...args),
    );
    this.execute = hold((...args: unknown[]) =>
      (this.pick().execute as (...a: unknown[]) => Promise<unknown>)(...args),
    );
  }

  /** The database a query would use now for `key` (default: the active context's key). */
  databaseFor(key: string | undefined = getRoutingKey()): string {
    return this.routing.databaseFor(key);
  }

  /** The pool a query would use now (same rule as `databaseFor`). */
  poolFor(key: string | undefined = getRoutingKey()): Pool {
    return this.routing.poolFor(key);
  }

  private pick(): Pool {
    return this.routing.pick();
  }

  /** A connection of the pool the active key selects; the whole transaction runs on it. */
  async getConnection(): Promise<PoolConnection> {
    if (this.routing.holding !== undefined) await this.routing.holding;
    return this.pick().getConnection();
  }

  /** Connection counts of the baseline pool and of every open sandbox pool, by database. */
  stats(): { baseline: PoolCounts; sandboxes: Record<string, PoolCounts> } {
    const sandboxes: Record<string, PoolCounts> = {};
    for (const [db, p] of this.routing.sandboxPools()) sandboxes[db] = counts(p);
    return { baseline: counts(this.baseline), sandboxes };
  }

  /** Stops following the route table and closes every pool. */
  end(): Promise<void> {
    return this.routing.end();
  }

  private configFor(db: string): PoolOptions {
    const cfg: PoolOptions = { ...this.poolConfig, database: db, connectionLimit: this.sandboxMax };
    if (cfg.uri) {
      // A URI's database wins over `database`; point it at the sandbox database.
      const url = new URL(cfg.uri);
      url.pathname = `/${encodeURIComponent(db)}`;
      cfg.uri = url.toString();
    }
    return cfg;
  }

  private open(db: string | undefined, config: PoolOptions): Pool {
    const p = mysql.createPool(config);
    // A pooled connection dies when its sandbox database is dropped (its sessions are ended):
    // that is expected and must never crash the process.
    p.pool.on('connection', (conn) => {
      conn.on('error', (err: unknown) => {
        if (this.listenerCount('error') > 0) this.emit('error', err);
        else
          logger().warn('branchline mysql: a pooled connection failed', {
            database: db ?? this.source,
            err: String(err),
          });
      });
    });
    return p;
  }
}

function databaseOfUri(uri: string | undefined): string | undefined {
  if (!uri) return undefined;
  try {
    const path = decodeURIComponent(new URL(uri).pathname.replace(/^\//, ''));
    return path || undefined;
  } catch {
    throw new TypeError(`branchline mysql: option uri is not a URL such as mysql://user@host:3306/orders`);
  }
}

/**
 * A routed `mysql2/promise` pool: drop-in for `mysql.createPool(options)` where queries follow
 * the routing key.
 *
 * ```ts
 * const pool = createRoutedPool({ uri: 'mysql://orders@db:3306/orders' });
 * const [rows] = await pool.query('SELECT * FROM orders WHERE id = ?', [7]); // pr-42 → its database
 * ```
 */
export function createRoutedPool(options?: RoutedPoolOptions): RoutedPool {
  return new RoutedPool(options);
}
