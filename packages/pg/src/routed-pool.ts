import { EventEmitter } from 'node:events';
import { defaultRuntime, getRoutingKey } from '@branchline/core';
import {
  checkRoutedDatabaseOptions,
  logger,
  type RoutedDatabaseOptions,
  SandboxDatabasePools,
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

export interface PoolCounts {
  total: number;
  idle: number;
  waiting: number;
}

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
  private readonly poolConfig: PoolConfig;
  private readonly sandboxMax: number;
  /** The sandbox pools and which one the active key selects (shared with every database adapter). */
  private readonly routing: SandboxDatabasePools<Pool>;

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
    this.sandboxMax = checkRoutedDatabaseOptions('pg', { sandboxMax, resolveDatabase }, poolConfig.max ?? 10);
    const rt = runtime ?? defaultRuntime();
    const probe = new pg.Client(poolConfig);
    const db = source ?? probe.database;
    if (!db)
      throw new TypeError(
        'branchline pg: the routed pool needs the baseline database name (option database, connectionString or source)',
      );
    this.source = db;
    this.baseline = this.open(undefined, poolConfig);
    this.routing = new SandboxDatabasePools(this.baseline, {
      driver: 'pg',
      type: 'postgres',
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
    if (this.routing.holding !== undefined)
      return this.routing.holding.then(() => this.query(a as string, b as never, c as never));
    return (this.pick() as unknown as { query(a: unknown, b: unknown, c: unknown): unknown }).query(a, b, c);
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
    if (this.routing.holding !== undefined)
      return this.routing.holding.then(() => this.connect(callback as never));
    const pool = this.pick();
    return callback ? pool.connect(callback as Parameters<Pool['connect']>[0] & object) : pool.connect();
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
  stats(): { baseline: PoolCounts; sandboxes: Record<string, PoolCounts> } {
    const sandboxes: Record<string, PoolCounts> = {};
    for (const [db, p] of this.routing.sandboxPools()) sandboxes[db] = counts(p);
    return { baseline: counts(this.baseline), sandboxes };
  }

  /** Stops following the route table and closes every pool. */
  end(): Promise<void> {
    return this.routing.end();
  }

  private configFor(db: string): PoolConfig {
    const cfg: PoolConfig = { ...this.poolConfig, database: db, max: this.sandboxMax };
    if (cfg.connectionString) {
      // A connection string's database wins over `database`; point it at the sandbox database.
      const url = new URL(cfg.connectionString);
      url.pathname = `/${encodeURIComponent(db)}`;
      cfg.connectionString = url.toString();
    }
    return cfg;
  }

  private open(db: string | undefined, config: PoolConfig): Pool {
    const p = new pg.Pool(config);
    // An idle client dies when its sandbox database is dropped (DROP … WITH FORCE): that is
    // expected and must never crash the process.
    p.on('error', (err, client) => {
      if (this.listenerCount('error') > 0) this.emit('error', err, client);
      else
        logger().warn('branchline pg: an idle pooled connection failed', {
          database: db ?? this.source,
          err: String(err),
        });
    });
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
