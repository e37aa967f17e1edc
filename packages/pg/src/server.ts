import { logger } from '@branchline/core/transport';
import pg, { type Client, type ClientConfig } from 'pg';
import { likePrefix, quoteIdent, SandboxDatabaseError } from './names.js';
import type { CloneStrategy, SandboxDatabaseOutputs, SnapshotMethod } from './types.js';

// The PostgreSQL server SandboxDatabases works on: admin connections, advisory locks, the
// catalogue table, and the statements every operation shares.

/** Snapshots of this size and more are cloned with STRATEGY FILE_COPY under `cloneStrategy: 'auto'`. */
export const FILE_COPY_THRESHOLD_BYTES = 64 * 1024 * 1024;
/** Clones smaller than this finish too fast for intermediate progress to matter. */
const CLONE_PROGRESS_MIN_BYTES = 16 * 1024 * 1024;
export const LOCK_NAMESPACE = 'branchline_pg';
/** Database comments Branchline writes start with this (the JSON after it names the owner). */
export const COMMENT_TAG = 'branchline:';

export function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as { code?: string }).code : undefined;
}

/** SandboxDatabases' settings, checked and resolved. */
export interface ServerSettings {
  prefix: string;
  snapshotPrefix: string;
  catalogue: string;
  cloneStrategy: CloneStrategy;
  snapshotMethod: SnapshotMethod;
  allowSources: ReadonlySet<string> | undefined;
  owner: string | undefined;
  sweepGraceMs: number;
  pgDumpPath: string;
  pgRestorePath: string;
  /** Where admin connections go (the admin database). */
  admin: ClientConfig;
  /** What the outputs tell clients. */
  client: { host: string; port: number; user: string; password?: string };
}

/** One PostgreSQL server, as SandboxDatabases uses it; each operation opens its own admin connection. */
export class DatabaseServer implements ServerSettings {
  readonly prefix: string;
  readonly snapshotPrefix: string;
  readonly catalogue: string;
  readonly cloneStrategy: CloneStrategy;
  readonly snapshotMethod: SnapshotMethod;
  readonly allowSources: ReadonlySet<string> | undefined;
  readonly owner: string | undefined;
  readonly sweepGraceMs: number;
  readonly pgDumpPath: string;
  readonly pgRestorePath: string;
  readonly admin: ClientConfig;
  readonly client: { host: string; port: number; user: string; password?: string };
  private catalogueReady: Promise<void> | undefined;
  private serverVersion: number | undefined;

  constructor(s: ServerSettings) {
    this.prefix = s.prefix;
    this.snapshotPrefix = s.snapshotPrefix;
    this.catalogue = s.catalogue;
    this.cloneStrategy = s.cloneStrategy;
    this.snapshotMethod = s.snapshotMethod;
    this.allowSources = s.allowSources;
    this.owner = s.owner;
    this.sweepGraceMs = s.sweepGraceMs;
    this.pgDumpPath = s.pgDumpPath;
    this.pgRestorePath = s.pgRestorePath;
    this.admin = s.admin;
    this.client = s.client;
  }

  /** Throws when `source` may not be branched (a managed database, or not in `allowSources`). */
  checkAllowed(source: string): string {
    if (source.startsWith(this.prefix) || source.startsWith(this.snapshotPrefix)) {
      throw new SandboxDatabaseError(
        'not-allowed',
        `branchline pg: "${source}" is a database Branchline manages (prefix ${this.prefix} or ${this.snapshotPrefix}); branch from a baseline database instead`,
      );
    }
    if (this.allowSources && !this.allowSources.has(source)) {
      throw new SandboxDatabaseError(
        'not-allowed',
        `branchline pg: "${source}" may not be branched; allowed sources are ${[...this.allowSources].join(', ')} (option allowSources)`,
      );
    }
    return source;
  }

  async assertSourceExists(c: Client, source: string): Promise<void> {
    if (await this.exists(c, source)) return;
    const others = await c.query<{ datname: string }>(
      `SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn
       AND datname NOT LIKE $1 AND datname NOT LIKE $2 ORDER BY datname LIMIT 20`,
      [likePrefix(this.prefix), likePrefix(this.snapshotPrefix)],
    );
    throw new SandboxDatabaseError(
      'missing-source',
      `branchline pg: the baseline database "${source}" does not exist on ${this.admin.host}:${this.admin.port} (databases there: ${others.rows.map((r) => r.datname).join(', ') || 'none'}); create it or fix "from" in the sandbox's resource`,
    );
  }

  async exists(c: Client, name: string): Promise<boolean> {
    const r = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    return r.rowCount === 1;
  }

  async size(c: Client, name: string): Promise<number> {
    const r = await c.query<{ bytes: string }>('SELECT pg_database_size($1::name)::text AS bytes', [name]);
    return Number(r.rows[0]?.bytes ?? 0);
  }

  async connectionsTo(c: Client, name: string): Promise<number> {
    const r = await c.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [name],
    );
    return r.rows[0]?.n ?? 0;
  }

  async version(c: Client): Promise<number> {
    if (this.serverVersion === undefined) {
      const r = await c.query<{ server_version_num: string }>('SHOW server_version_num');
      this.serverVersion = Number(r.rows[0]?.server_version_num ?? 0);
    }
    return this.serverVersion;
  }

  async strategyClause(c: Client, bytes: number): Promise<string> {
    if ((await this.version(c)) < 150000) return '';
    const s =
      this.cloneStrategy === 'auto'
        ? bytes >= FILE_COPY_THRESHOLD_BYTES
          ? 'file_copy'
          : 'wal_log'
        : this.cloneStrategy;
    return s === 'file_copy' ? ' STRATEGY FILE_COPY' : ' STRATEGY WAL_LOG';
  }

  /**
   * Best effort: while a large clone runs, reports the bytes written so far by sizing the one
   * database directory that has no committed pg_database row yet. Needs the rights to call
   * pg_ls_dir/pg_stat_file (superuser or granted); without them, or with several clones at
   * once, it reports nothing and the bar jumps from 0 to done.
   */
  watchCloneBytes(total: number, onBytes: (done: number) => void): () => Promise<void> {
    if (total < CLONE_PROGRESS_MIN_BYTES) return async () => {};
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    const client = new pg.Client(this.admin);
    client.on('error', () => {});
    const connected = client.connect().then(
      () => true,
      () => false,
    );
    const tick = async () => {
      if (stopped || !(await connected)) return;
      try {
        const r = await client.query<{ bytes: number }>(
          `SELECT (SELECT coalesce(sum((pg_stat_file('base/' || d || '/' || f, true)).size), 0)
                   FROM pg_ls_dir('base/' || d, true, false) f)::float8 AS bytes
           FROM pg_ls_dir('base') d
           WHERE d ~ '^[0-9]+$' AND d::oid NOT IN (SELECT oid FROM pg_database)`,
        );
        if (r.rows.length === 1 && !stopped) onBytes(Math.min(r.rows[0]?.bytes ?? 0, total));
      } catch {
        return; // not allowed to look: no intermediate progress
      }
      if (!stopped) timer = setTimeout(() => void tick(), 250);
    };
    timer = setTimeout(() => void tick(), 250);
    return async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (await connected) await client.end().catch(() => {});
    };
  }

  /** Drops `name` if it exists, terminating its connections (also an invalid, half-dropped one). */
  async dropDatabase(c: Client, name: string): Promise<void> {
    if ((await this.version(c)) >= 130000) {
      await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
      return;
    }
    await c.query(`ALTER DATABASE ${quoteIdent(name)} WITH ALLOW_CONNECTIONS false`).catch(() => {});
    await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
  }

  /** Drops a database and its catalogue entry on a fresh connection (the caller's may be broken). */
  async forget(database: string): Promise<void> {
    await this.withAdmin(async (c) => {
      await this.dropDatabase(c, database);
      await c.query(`DELETE FROM ${quoteIdent(this.catalogue)} WHERE database = $1`, [database]);
    });
  }

  async ensureCatalogue(c: Client): Promise<void> {
    this.catalogueReady ??= (async () => {
      await c.query('BEGIN');
      try {
        await c.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [
          LOCK_NAMESPACE,
          'catalogue',
        ]);
        await c.query(
          `CREATE TABLE IF NOT EXISTS ${quoteIdent(this.catalogue)} (
             database text PRIMARY KEY,
             sandbox text NOT NULL,
             resource text,
             source text NOT NULL,
             state text NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),
             created_at timestamptz NOT NULL DEFAULT now(),
             updated_at timestamptz NOT NULL DEFAULT now()
           )`,
        );
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      }
    })().catch((err) => {
      this.catalogueReady = undefined;
      throw err;
    });
    return this.catalogueReady;
  }

  async withLock<T>(c: Client, name: string, mode: 'shared' | 'exclusive', fn: () => Promise<T>): Promise<T> {
    const fnName = mode === 'shared' ? 'pg_advisory_lock_shared' : 'pg_advisory_lock';
    const unlock = mode === 'shared' ? 'pg_advisory_unlock_shared' : 'pg_advisory_unlock';
    await c.query(`SELECT ${fnName}(hashtext($1), hashtext($2))`, [LOCK_NAMESPACE, name]);
    try {
      return await fn();
    } finally {
      await c.query(`SELECT ${unlock}(hashtext($1), hashtext($2))`, [LOCK_NAMESPACE, name]).catch(() => {});
    }
  }

  /** Runs `fn` on a fresh admin connection; an abort cancels the statement in flight. */
  async withAdmin<T>(fn: (c: Client) => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    const c = new pg.Client(this.admin);
    // A terminated admin session must not crash the process; the awaited query reports it.
    c.on('error', (err) => logger().warn('branchline pg: admin connection error', { err: String(err) }));
    await c.connect();
    let onAbort: (() => void) | undefined;
    try {
      if (signal) {
        const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
        onAbort = () => {
          void this.cancelBackend(pid);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        signal.throwIfAborted();
      }
      return await fn(c);
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
      await c.end().catch(() => {});
    }
  }

  async cancelBackend(pid: number | undefined): Promise<void> {
    if (pid === undefined) return;
    const c = new pg.Client(this.admin);
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query('SELECT pg_cancel_backend($1)', [pid]);
    } catch (err) {
      logger().warn('branchline pg: could not cancel an aborted operation', { pid, err: String(err) });
    } finally {
      await c.end().catch(() => {});
    }
  }

  outputs(database: string, source: string, snapshot: string): SandboxDatabaseOutputs {
    const { host, port, user, password } = this.client;
    const auth = encodeURIComponent(user) + (password ? `:${encodeURIComponent(password)}` : '');
    const url = host.startsWith('/')
      ? `postgres://${auth}@localhost:${port}/${encodeURIComponent(database)}?host=${encodeURIComponent(host)}`
      : `postgres://${auth}@${host.includes(':') ? `[${host}]` : host}:${port}/${encodeURIComponent(database)}`;
    const out: SandboxDatabaseOutputs = { host, port, database, user, url, source, snapshot };
    if (password) out.password = password;
    return out;
  }
}
