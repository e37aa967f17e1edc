import { logger } from '../log.js';
import { defaultRuntime } from '../runtime.js';
import { checkRoutedDatabaseOptions, type RoutedDatabaseOptions, SandboxDatabasePools } from './pools.js';

/** What a database adapter's routed pool tells `openRoutedDatabasePools` about its driver. */
export interface RoutedPoolDriver<P, C> {
  /** Adapter name in messages (`branchline <driver>: …`). */
  driver: string;
  /** The resource type whose databases the pool uses (`postgres`, `mysql`). */
  type: string;
  /** The adapter's prefix check (its name rules); returns the prefix. */
  checkPrefix(prefix: string, option: string): string;
  /** The prefix when the option is unset. */
  defaultPrefix: string;
  /** The adapter's sandbox database name (the one its resource hook provisions). */
  databaseName(source: string, sandbox: string, prefix: string): string;
  /** The pool size the driver options set, if they do. */
  poolSize(config: C): number | undefined;
  /** The database the driver options connect to, if they name one. */
  database(config: C): string | undefined;
  /** The options that name the baseline database, for the error when none does. */
  databaseOptions: string;
  /** The driver options of a sandbox database's pool of at most `max` connections. */
  sandboxConfig(config: C, database: string, max: number): C;
  /** Opens the driver's pool of `database` (the baseline's too). */
  open(config: C, database: string): P;
  close(pool: P): Promise<unknown>;
}

/** What `openRoutedDatabasePools` returns to the adapter's pool class. */
export interface RoutedDatabasePools<P, C> {
  /** The baseline database name (what resources name in `from`). */
  source: string;
  /** The driver's own options, the routing options taken out. */
  config: C;
  pools: SandboxDatabasePools<P>;
}

/**
 * The driver-neutral part of a routed pool's constructor: splits the routing options from the
 * driver's, checks them, finds the baseline database, opens its pool and follows the runtime's
 * route table with a `SandboxDatabasePools` whose sandbox pools the driver opens on first use.
 */
export function openRoutedDatabasePools<P, C extends object>(
  options: C & RoutedDatabaseOptions,
  driver: RoutedPoolDriver<P, C>,
): RoutedDatabasePools<P, C> {
  const { runtime, service, sandbox, source, prefix, sandboxMax, resolveDatabase, routesTimeoutMs, ...rest } =
    options;
  const config = rest as unknown as C;
  const namePrefix = driver.checkPrefix(prefix ?? driver.defaultPrefix, 'prefix');
  const max = checkRoutedDatabaseOptions(
    driver.driver,
    { sandboxMax, resolveDatabase },
    driver.poolSize(config) ?? 10,
  );
  const rt = runtime ?? defaultRuntime();
  const db = source ?? driver.database(config);
  if (!db)
    throw new TypeError(
      `branchline ${driver.driver}: the routed pool needs the baseline database name (option ${driver.databaseOptions})`,
    );
  const pools = new SandboxDatabasePools(driver.open(config, db), {
    driver: driver.driver,
    type: driver.type,
    source: db,
    prefix: namePrefix,
    service: service ?? rt.config.service,
    sandbox: sandbox ?? rt.config.sandbox,
    resolveDatabase,
    databaseName: driver.databaseName,
    routes: rt.routes,
    routesTimeoutMs,
    open: (database) => driver.open(driver.sandboxConfig(config, database, max), database),
    close: (p) => driver.close(p),
  });
  return { source: db, config, pools };
}

/** A connection URL that names `database` instead of the one it names (driver options' URL wins). */
export function urlWithDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/** The database a connection URL names, if any; `example` shows a valid one in the error. */
export function databaseOfUrl(
  url: string | undefined,
  option: string,
  driver: string,
  example: string,
): string | undefined {
  if (!url) return undefined;
  let path: string;
  try {
    path = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  } catch {
    throw new TypeError(`branchline ${driver}: option ${option} is not a URL such as ${example}`);
  }
  return path || undefined;
}

/**
 * Reports a pooled connection's failure: to the routed pool's `error` listeners when it has
 * some, else as a warning. A connection dies when its sandbox database is dropped; that is
 * expected and must never crash the process (an unhandled `error` event would).
 */
export function reportPooledConnectionError(
  pool: { listenerCount(event: string): number; emit(event: string, ...args: unknown[]): boolean },
  driver: string,
  database: string,
  err: unknown,
  ...extra: unknown[]
): void {
  if (pool.listenerCount('error') > 0) pool.emit('error', err, ...extra);
  else logger().warn(`branchline ${driver}: a pooled connection failed`, { database, err: String(err) });
}
