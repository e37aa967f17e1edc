import { EventEmitter } from 'node:events';
import { getRoutingKey } from '@branchline/core';
import {
  openRoutedDatabasePools,
  type PoolCounts,
  type RoutedDatabaseOptions,
  type RoutedPoolStats,
  reportPooledConnectionError,
  type SandboxDatabasePools,
  urlWithDatabase,
} from '@branchline/core/transport';
import pg, {
  type Pool,
  type PoolClient,
  type PoolConfig,
  type QueryConfig,
  type QueryResult,
  type QueryResultRow,
} from 'pg';
import { checkPrefix, DEFAULT_PREFIX, sandboxDatabaseName } from './names.js';

/** The driver's pool options plus the routing options shared by every routed database pool. */
export interface RoutedPoolOptions extends PoolConfig, RoutedDatabaseOptions {}

export type { PoolCounts };

type QueryCallback<R extends QueryResultRow> = (err: Error, result: QueryResult<R>) => void;

function counts(p: Pool): PoolCounts {
  return { total: p.totalCount, idle: p.idleCount, waiting: p.waitingCount };
}

/**
 * A `pg` pool that sends each query to the database of the active routing key's sandbox when
 * that sandbox has one for this service, and to the baseline database otherwise. One bounded
 * pool per database, opened on first use and closed when its sandbox (or its database) leaves
 * the route table. `connect()` hands out a client of the right pool, so a transaction stays on
 * one connection; `query()` outside a transaction is routed per call.
 */
export class RoutedPool extends EventEmitter {
  /** The pool of the baseline database. */
  readonly baseline: Pool;
  /** The baseline database name (what resources name in `from`). */
  readonly source: string;
  /** The sandbox pools and which one the active key selects (shared with every database adapter). */
  private readonly routing: SandboxDatabasePools<Pool>;

  constructor(options: RoutedPoolOptions = {}) {
    super();
    const { source, pools } = openRoutedDatabasePools<Pool, PoolConfig>(options, {
      driver: 'pg',
      type: 'postgres',
      checkPrefix,
      defaultPrefix: DEFAULT_PREFIX,
      databaseName: sandboxDatabaseName,
      poolSize: (config) => config.max,
      // pg's own reading of the options (connectionString, PGDATABASE, the user name).
      database: (config) => new pg.Client(config).database,
      databaseOptions: 'database, connectionString or source',
      sandboxConfig: (config, database, max) => ({
        ...config,
        database,
        max,
        // A connection string's database wins over `database`; point it at the sandbox database.
        ...(config.connectionString && {
          connectionString: urlWithDatabase(config.connectionString, database),
        }),
      }),
      open: (config, database) => this.open(config, database),
      close: (p) => p.end(),
    });
    this.source = source;
    this.routing = pools;
    this.baseline = pools.baseline;
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

  query<R extends QueryResultRow = QueryResultRow, I = unknown[]>(
    textOrConfig: string | QueryConfig<I>,
    values?: I,
  ): Promise<QueryResult<R>>;
  query<R extends QueryResultRow = QueryResultRow, I = unknown[]>(
    textOrConfig: string | QueryConfig<I>,
    callback: QueryCallback<R>,
  ): void;
  query<R extends QueryResultRow = QueryResultRow, I = unknown[]>(
    text: string,
    values: I,
    callback: QueryCallback<R>,
  ): void;
  query(a: unknown, b?: unknown, c?: unknown): unknown {
    return this.routing.afterHolding(() =>
      (this.pick() as unknown as { query(a: unknown, b: unknown, c: unknown): unknown }).query(a, b, c),
    );
  }

  /** A client of the pool the active key selects; the whole transaction runs on it. */
  connect(): Promise<PoolClient>;
  connect(
    callback: (
      err: Error | undefined,
      client: PoolClient | undefined,
      done: (release?: unknown) => void,
    ) => void,
  ): void;
  connect(
    callback?: (
      err: Error | undefined,
      client: PoolClient | undefined,
      done: (release?: unknown) => void,
    ) => void,
  ): unknown {
    return this.routing.afterHolding(() => {
      const pool = this.pick();
      return callback ? pool.connect(callback as Parameters<Pool['connect']>[0] & object) : pool.connect();
    });
  }

  get totalCount(): number {
    return this.baseline.totalCount;
  }
  get idleCount(): number {
    return this.baseline.idleCount;
  }
  get waitingCount(): number {
    return this.baseline.waitingCount;
  }

  /** Connection counts of the baseline pool and of every open sandbox pool, by database. */
  stats(): RoutedPoolStats {
    return this.routing.stats(counts);
  }

  /** Stops following the route table and closes every pool. */
  end(): Promise<void> {
    return this.routing.end();
  }

  private open(config: PoolConfig, database: string): Pool {
    const p = new pg.Pool(config);
    // An idle client dies when its sandbox database is dropped (DROP … WITH FORCE).
    p.on('error', (err, client) => reportPooledConnectionError(this, 'pg', database, err, client));
    return p;
  }
}

/**
 * A routed `pg` pool: drop-in for `new pg.Pool(config)` where queries follow the routing key.
 *
 * ```ts
 * const pool = createRoutedPool({ connectionString: process.env.DATABASE_URL });
 * await pool.query('SELECT * FROM orders WHERE id = $1', [id]); // sandbox DB for pr-42's requests
 * ```
 */
export function createRoutedPool(options?: RoutedPoolOptions): RoutedPool {
  return new RoutedPool(options);
}
