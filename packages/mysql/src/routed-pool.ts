import { EventEmitter } from 'node:events';
import { getRoutingKey } from '@branchline/core';
import {
  databaseOfUrl,
  openRoutedDatabasePools,
  type PoolCounts,
  type RoutedDatabaseOptions,
  type RoutedPoolStats,
  reportPooledConnectionError,
  type SandboxDatabasePools,
  urlWithDatabase,
} from '@branchline/core/transport';
import mysql, { type Pool, type PoolConnection, type PoolOptions } from 'mysql2/promise';
import { checkPrefix, DEFAULT_PREFIX, sandboxDatabaseName } from './names.js';

/** The driver's pool options plus the routing options shared by every routed database pool. */
export interface RoutedPoolOptions extends PoolOptions, RoutedDatabaseOptions {}

export type { PoolCounts };

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
  /** The sandbox pools and which one the active key selects (shared with every database adapter). */
  private readonly routing: SandboxDatabasePools<Pool>;

  /** `pool.query(sql, values)` on the pool the active key selects (same signature as mysql2's). */
  readonly query: Pool['query'];
  /** `pool.execute(sql, values)` on the pool the active key selects (same signature as mysql2's). */
  readonly execute: Pool['execute'];

  constructor(options: RoutedPoolOptions = {}) {
    super();
    const { source, pools } = openRoutedDatabasePools<Pool, PoolOptions>(options, {
      driver: 'mysql',
      type: 'mysql',
      checkPrefix,
      defaultPrefix: DEFAULT_PREFIX,
      databaseName: sandboxDatabaseName,
      poolSize: (config) => config.connectionLimit,
      database: (config) =>
        config.database ?? databaseOfUrl(config.uri, 'uri', 'mysql', 'mysql://user@host:3306/orders'),
      databaseOptions: 'database, uri or source',
      sandboxConfig: (config, database, max) => ({
        ...config,
        database,
        connectionLimit: max,
        // A URI's database wins over `database`; point it at the sandbox database.
        ...(config.uri && { uri: urlWithDatabase(config.uri, database) }),
      }),
      open: (config, database) => this.open(config, database),
      close: (p) => p.end(),
    });
    this.source = source;
    this.routing = pools;
    this.baseline = pools.baseline;
    this.query = ((...args: unknown[]) =>
      pools.afterHolding(() =>
        (this.pick().query as (...a: unknown[]) => Promise<unknown>)(...args),
      )) as never;
    this.execute = ((...args: unknown[]) =>
      pools.afterHolding(() =>
        (this.pick().execute as (...a: unknown[]) => Promise<unknown>)(...args),
      )) as never;
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
    return this.routing.afterHolding(() => this.pick().getConnection());
  }

  /** Connection counts of the baseline pool and of every open sandbox pool, by database. */
  stats(): RoutedPoolStats {
    return this.routing.stats(counts);
  }

  /** Stops following the route table and closes every pool. */
  end(): Promise<void> {
    return this.routing.end();
  }

  private open(config: PoolOptions, database: string): Pool {
    const p = mysql.createPool(config);
    // A pooled connection dies when its sandbox database is dropped (its sessions are ended).
    p.pool.on('connection', (conn) => {
      conn.on('error', (err: unknown) => reportPooledConnectionError(this, 'mysql', database, err));
    });
    return p;
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
