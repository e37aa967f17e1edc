import { spawn } from 'node:child_process';
import { logger } from '@branchline/core/transport';
import pg, { type Client, type ClientConfig } from 'pg';
import {
  checkPrefix,
  checkRoleName,
  checkSandboxName,
  checkSourceName,
  checkTableName,
  DEFAULT_CATALOGUE,
  DEFAULT_PREFIX,
  DEFAULT_SNAPSHOT_PREFIX,
  likePrefix,
  nextSnapshotName,
  parseSandboxDatabaseName,
  quoteIdent,
  quoteLiteral,
  SandboxDatabaseError,
  sandboxDatabaseName,
  snapshotDatabaseName,
} from './names.js';
import type {
  CloneStrategy,
  ResourceProgress,
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
  SnapshotMethod,
  SnapshotResult,
  SweepResult,
} from './types.js';

/** Snapshots of this size and more are cloned with STRATEGY FILE_COPY under `cloneStrategy: 'auto'`. */
export const FILE_COPY_THRESHOLD_BYTES = 64 * 1024 * 1024;
/** Clones smaller than this finish too fast for intermediate progress to matter. */
const CLONE_PROGRESS_MIN_BYTES = 16 * 1024 * 1024;
const LOCK_NAMESPACE = 'branchline_pg';
const COMMENT_TAG = 'branchline:';

type Report = (progress: ResourceProgress) => void;

export interface ProvisionRequest {
  sandbox: string;
  source: string;
  /** The resource's name in the sandbox document, kept in the catalogue for people. */
  resource?: string;
  /** Take a fresh snapshot of the source first. */
  refresh?: boolean;
  report?: Report;
  signal?: AbortSignal;
}

export interface DropRequest {
  sandbox: string;
  source: string;
  /** The database named in the resource outputs, when known (it must carry our prefix). */
  database?: string;
  signal?: AbortSignal;
}

export interface SnapshotRequest {
  method?: SnapshotMethod;
  /** Only take a snapshot when there is none (provisioning uses this). */
  ifMissing?: boolean;
  onProgress?: Report;
  signal?: AbortSignal;
}

interface CatalogueRow {
  database: string;
  sandbox: string;
  state: 'creating' | 'ready' | 'deleting';
  age_ms: number;
}

function guardReport(report: Report | undefined): Report {
  if (!report) return () => {};
  return (p) => {
    try {
      report(p);
    } catch (err) {
      logger().error('branchline pg: the progress callback threw; ignoring it', { err: String(err) });
    }
  };
}

function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as { code?: string }).code : undefined;
}

/**
 * Creates, snapshots, drops and sweeps sandbox databases on one PostgreSQL server. Every
 * sandbox database is recorded in a catalogue table *before* it is created and forgotten only
 * *after* it is dropped, so an interrupted create or delete always leaves a trace the sweeper
 * can finish. Each operation opens its own short-lived admin connection.
 */
export class SandboxDatabases {
  readonly prefix: string;
  readonly snapshotPrefix: string;
  readonly catalogue: string;
  readonly adminDatabase: string;
  private readonly cloneStrategy: CloneStrategy;
  private readonly snapshotMethod: SnapshotMethod;
  private readonly allowSources: ReadonlySet<string> | undefined;
  private readonly owner: string | undefined;
  private readonly sweepGraceMs: number;
  private readonly pgDumpPath: string;
  private readonly pgRestorePath: string;
  private readonly admin: ClientConfig;
  private readonly client: { host: string; port: number; user: string; password?: string };
  private catalogueReady: Promise<void> | undefined;
  private serverVersion: number | undefined;

  constructor(options: SandboxDatabasesOptions = {}) {
    this.prefix = checkPrefix(options.prefix ?? DEFAULT_PREFIX, 'prefix');
    this.snapshotPrefix = checkPrefix(options.snapshotPrefix ?? DEFAULT_SNAPSHOT_PREFIX, 'snapshotPrefix');
    if (this.prefix.startsWith(this.snapshotPrefix) || this.snapshotPrefix.startsWith(this.prefix)) {
      throw new TypeError(
        `branchline pg: options prefix=${JSON.stringify(this.prefix)} and snapshotPrefix=${JSON.stringify(this.snapshotPrefix)} must not be prefixes of each other`,
      );
    }
    this.catalogue = checkTableName(options.catalogue ?? DEFAULT_CATALOGUE, 'catalogue');
    this.adminDatabase = checkSourceName(options.adminDatabase ?? 'postgres', 'option adminDatabase');
    const strategy = options.cloneStrategy ?? 'auto';
    if (!['auto', 'file_copy', 'wal_log'].includes(strategy))
      throw new TypeError(
        `branchline pg: option cloneStrategy=${JSON.stringify(strategy)} must be "auto", "file_copy" or "wal_log"`,
      );
    this.cloneStrategy = strategy;
    const method = options.snapshotMethod ?? 'auto';
    if (!['auto', 'template', 'dump'].includes(method))
      throw new TypeError(
        `branchline pg: option snapshotMethod=${JSON.stringify(method)} must be "auto", "template" or "dump"`,
      );
    this.snapshotMethod = method;
    this.allowSources = options.allowSources
      ? new Set(options.allowSources.map((s, i) => checkSourceName(s, `option allowSources[${i}]`)))
      : undefined;
    this.owner = options.owner === undefined ? undefined : checkRoleName(options.owner, 'owner');
    this.sweepGraceMs = options.sweepGraceMs ?? 10 * 60_000;
    if (!Number.isFinite(this.sweepGraceMs) || this.sweepGraceMs < 0)
      throw new TypeError(
        `branchline pg: option sweepGraceMs=${options.sweepGraceMs} must be a non-negative number of ms`,
      );
    this.pgDumpPath = options.pgDumpPath ?? 'pg_dump';
    this.pgRestorePath = options.pgRestorePath ?? 'pg_restore';

    // Resolve the connection once (connection string, PG* variables, pg defaults) so that admin
    // clients, pg_dump and the outputs all agree on where the server is.
    const given: ClientConfig =
      typeof options.connection === 'string'
        ? { connectionString: options.connection }
        : { ...options.connection };
    const probe = new pg.Client(given) as Client & { ssl?: ClientConfig['ssl'] };
    const { connectionString: _ignored, ...rest } = given;
    this.admin = {
      ...rest,
      host: probe.host,
      port: probe.port,
      user: probe.user,
      password: probe.password,
      ssl: probe.ssl,
      database: this.adminDatabase,
    };
    const cc = options.clientConnection ?? {};
    const user = cc.user ?? this.owner ?? probe.user ?? 'postgres';
    this.client = {
      host: cc.host ?? probe.host,
      port: cc.port ?? probe.port,
      user,
      // The admin's password is handed out only with the admin's own user name.
      password:
        cc.password ??
        (user === probe.user && typeof probe.password === 'string' ? probe.password : undefined),
    };
  }

  /** The database `sandbox` gets for `source` (deterministic; the routed pool computes it too). */
  databaseName(source: string, sandbox: string): string {
    return sandboxDatabaseName(checkSourceName(source), checkSandboxName(sandbox), this.prefix);
  }

  /** The snapshot database of `source`. */
  snapshotName(source: string): string {
    return snapshotDatabaseName(checkSourceName(source), this.snapshotPrefix);
  }

  // ---------------------------------------------------------------- provisioning

  /**
   * Creates the sandbox database of (`sandbox`, `source`) from the source's snapshot (taken
   * first when there is none) and returns its connection details. Idempotent: a database that
   * is already ready is returned as is. On failure nothing is left behind.
   */
  async provision(req: ProvisionRequest): Promise<SandboxDatabaseOutputs> {
    const sandbox = checkSandboxName(req.sandbox);
    const source = this.checkAllowed(checkSourceName(req.source));
    const database = sandboxDatabaseName(source, sandbox, this.prefix);
    const snapshot = snapshotDatabaseName(source, this.snapshotPrefix);
    const report = guardReport(req.report);
    const signal = req.signal;

    return this.withAdmin(async (c) => {
      await this.assertSourceExists(c, source);
      await this.ensureCatalogue(c);
      const prior = await c.query<{ state: string }>(
        `SELECT state FROM ${quoteIdent(this.catalogue)} WHERE database = $1`,
        [database],
      );
      if (prior.rows[0]?.state === 'ready' && (await this.exists(c, database))) {
        const bytes = await this.size(c, database);
        report({ phase: 'ready', done: bytes, total: bytes, unit: 'bytes', message: `${database} is ready` });
        return this.outputs(database, source, snapshot);
      }
      // Recorded before it exists: whatever happens next, the sweeper can find it.
      await c.query(
        `INSERT INTO ${quoteIdent(this.catalogue)} (database, sandbox, resource, source, state)
         VALUES ($1, $2, $3, $4, 'creating')
         ON CONFLICT (database) DO UPDATE SET sandbox = $2, resource = $3, source = $4,
           state = 'creating', created_at = now(), updated_at = now()`,
        [database, sandbox, req.resource ?? null, source],
      );
      try {
        // A leftover of an interrupted attempt is replaced, never reused half-made.
        await this.dropDatabase(c, database);
        if (req.refresh) await this.snapshot(source, { onProgress: report, signal });
        else if (!(await this.exists(c, snapshot)))
          await this.snapshot(source, { ifMissing: true, onProgress: report, signal });
        signal?.throwIfAborted();
        let bytes = 0;
        await this.withLock(c, `use:${snapshot}`, 'shared', async () => {
          if (!(await this.exists(c, snapshot))) {
            throw new SandboxDatabaseError(
              'clone-failed',
              `branchline pg: the snapshot ${snapshot} of "${source}" disappeared while cloning; retry`,
            );
          }
          bytes = await this.size(c, snapshot);
          report({
            phase: 'cloning',
            done: 0,
            total: bytes,
            unit: 'bytes',
            message: `cloning ${snapshot} into ${database}`,
          });
          const strategy = await this.strategyClause(c, bytes);
          const owner = this.owner ? ` OWNER ${quoteIdent(this.owner)}` : '';
          const message = `cloning ${snapshot} into ${database}`;
          const stop = this.watchCloneBytes(bytes, (done) =>
            report({ phase: 'cloning', done, total: bytes, unit: 'bytes', message }),
          );
          try {
            await c.query(
              `CREATE DATABASE ${quoteIdent(database)} TEMPLATE ${quoteIdent(snapshot)}${strategy}${owner}`,
            );
          } finally {
            await stop();
          }
        });
        const note = JSON.stringify({ sandbox, source, resource: req.resource });
        await c.query(`COMMENT ON DATABASE ${quoteIdent(database)} IS ${quoteLiteral(COMMENT_TAG + note)}`);
        await c.query(
          `UPDATE ${quoteIdent(this.catalogue)} SET state = 'ready', updated_at = now() WHERE database = $1`,
          [database],
        );
        report({ phase: 'ready', done: bytes, total: bytes, unit: 'bytes', message: `${database} is ready` });
        return this.outputs(database, source, snapshot);
      } catch (err) {
        await this.forget(database).catch((cleanupErr) =>
          logger().error('branchline pg: could not remove a half-made sandbox database; the sweeper will', {
            database,
            err: String(cleanupErr),
          }),
        );
        if (err instanceof SandboxDatabaseError || signal?.aborted) throw err;
        throw new SandboxDatabaseError(
          'clone-failed',
          `branchline pg: could not create ${database} for sandbox ${sandbox} from "${source}": ${(err as Error).message}`,
        );
      }
    }, signal);
  }

  /**
   * Drops the sandbox database (terminating its connections) and forgets it. Idempotent, so the
   * registry can retry it after a crash. Marked `deleting` first, so an interrupted drop is
   * finished by the sweeper.
   */
  async drop(req: DropRequest): Promise<void> {
    const sandbox = checkSandboxName(req.sandbox);
    const source = checkSourceName(req.source);
    const database =
      typeof req.database === 'string' && req.database.startsWith(this.prefix)
        ? req.database
        : sandboxDatabaseName(source, sandbox, this.prefix);
    await this.withAdmin(async (c) => {
      await this.ensureCatalogue(c);
      await c.query(
        `INSERT INTO ${quoteIdent(this.catalogue)} (database, sandbox, source, state) VALUES ($1, $2, $3, 'deleting')
         ON CONFLICT (database) DO UPDATE SET state = 'deleting', updated_at = now()`,
        [database, sandbox, source],
      );
      await this.dropDatabase(c, database);
      await c.query(`DELETE FROM ${quoteIdent(this.catalogue)} WHERE database = $1`, [database]);
    }, req.signal);
  }

  /**
   * Removes every sandbox database (with this prefix) whose sandbox is not in `liveSandboxes`:
   * interrupted deletions, databases whose catalogue entry was lost, entries whose database is
   * already gone. Entries of unknown sandboxes younger than `sweepGraceMs` are left alone, as is
   * everything a live sandbox owns. Also removes half-built snapshots nobody is building.
   */
  async sweep(liveSandboxes: Iterable<string>): Promise<SweepResult> {
    const live = new Set(liveSandboxes);
    const result: SweepResult = { dropped: [], forgotten: [], kept: [] };
    await this.withAdmin(async (c) => {
      await this.ensureCatalogue(c);
      // Databases first, entries second: an entry is written before its database is created,
      // so every database listed here has its entry visible in the second read.
      const dbs = await c.query<{ datname: string; description: string | null }>(
        `SELECT d.datname, s.description FROM pg_database d
         LEFT JOIN pg_shdescription s ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass
         WHERE d.datname LIKE $1`,
        [likePrefix(this.prefix)],
      );
      const rows = await c.query<CatalogueRow>(
        `SELECT database, sandbox, state, (extract(epoch FROM now() - created_at) * 1000)::float8 AS age_ms
         FROM ${quoteIdent(this.catalogue)} WHERE database LIKE $1`,
        [likePrefix(this.prefix)],
      );
      const existing = new Set(dbs.rows.map((d) => d.datname));
      const known = new Set<string>();
      for (const row of rows.rows) {
        known.add(row.database);
        if (live.has(row.sandbox) || (row.state !== 'deleting' && row.age_ms < this.sweepGraceMs)) {
          result.kept.push(row.database);
          continue;
        }
        await c.query(
          `UPDATE ${quoteIdent(this.catalogue)} SET state = 'deleting', updated_at = now() WHERE database = $1`,
          [row.database],
        );
        if (existing.has(row.database)) {
          await this.dropDatabase(c, row.database);
          result.dropped.push(row.database);
        }
        await c.query(`DELETE FROM ${quoteIdent(this.catalogue)} WHERE database = $1`, [row.database]);
        result.forgotten.push(row.database);
      }
      for (const d of dbs.rows) {
        if (known.has(d.datname)) continue;
        const owner = commentOwner(d.description) ?? parseSandboxDatabaseName(d.datname, this.prefix);
        if (owner !== undefined && live.has(owner)) {
          result.kept.push(d.datname);
          continue;
        }
        await this.dropDatabase(c, d.datname);
        result.dropped.push(d.datname);
      }
      const half = await c.query<{ datname: string }>(
        `SELECT datname FROM pg_database WHERE datname LIKE $1 AND right(datname, 6) = '__next'`,
        [likePrefix(this.snapshotPrefix)],
      );
      for (const { datname } of half.rows) {
        const got = await c.query<{ ok: boolean }>(
          'SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS ok',
          [LOCK_NAMESPACE, `build:${datname}`],
        );
        if (!got.rows[0]?.ok) continue;
        try {
          await this.dropDatabase(c, datname);
          result.dropped.push(datname);
        } finally {
          await c.query('SELECT pg_advisory_unlock(hashtext($1), hashtext($2))', [
            LOCK_NAMESPACE,
            `build:${datname}`,
          ]);
        }
      }
    });
    if (result.dropped.length || result.forgotten.length)
      logger().info('branchline pg: sweeper removed orphaned sandbox databases', { ...result });
    return result;
  }

  /** Every sandbox database in the catalogue (for listings and tests). */
  async list(): Promise<{ database: string; sandbox: string; source: string; state: string }[]> {
    return this.withAdmin(async (c) => {
      await this.ensureCatalogue(c);
      const r = await c.query<{ database: string; sandbox: string; source: string; state: string }>(
        `SELECT database, sandbox, source, state FROM ${quoteIdent(this.catalogue)} WHERE database LIKE $1 ORDER BY database`,
        [likePrefix(this.prefix)],
      );
      return r.rows;
    });
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Takes (or refreshes) the snapshot of `source` that sandbox databases are cloned from. The
   * new snapshot is built beside the old one and swapped in under a lock, so clones never see
   * a half-built snapshot and the baseline is never locked: with the baseline in use the copy
   * streams through `pg_dump | pg_restore` from one consistent MVCC snapshot.
   */
  async snapshot(source: string, req: SnapshotRequest = {}): Promise<SnapshotResult> {
    checkSourceName(source);
    this.checkAllowed(source);
    const snap = snapshotDatabaseName(source, this.snapshotPrefix);
    const next = nextSnapshotName(source, this.snapshotPrefix);
    const report = guardReport(req.onProgress);
    const started = performance.now();
    const wanted = req.method ?? this.snapshotMethod;
    return this.withAdmin(async (c) => {
      await this.assertSourceExists(c, source);
      return this.withLock(c, `build:${next}`, 'exclusive', async () => {
        if (req.ifMissing && (await this.exists(c, snap))) {
          return {
            database: snap,
            method: 'existing',
            bytes: await this.size(c, snap),
            ms: performance.now() - started,
          };
        }
        await this.dropDatabase(c, next);
        let method: 'template' | 'dump' =
          wanted === 'auto' ? ((await this.connectionsTo(c, source)) > 0 ? 'dump' : 'template') : wanted;
        try {
          if (method === 'template') {
            report({ phase: 'snapshot', message: `copying ${source} into ${snap}` });
            try {
              const strategy = await this.strategyClause(c, await this.size(c, source));
              await c.query(`CREATE DATABASE ${quoteIdent(next)} TEMPLATE ${quoteIdent(source)}${strategy}`);
            } catch (err) {
              // 55006: someone connected to the baseline meanwhile; a dump does not mind.
              if (pgCode(err) !== '55006' || wanted !== 'auto') throw err;
              method = 'dump';
            }
          }
          if (method === 'dump') {
            const info = await c.query<{ enc: string; coll: string; ctype: string }>(
              `SELECT pg_encoding_to_char(encoding) AS enc, datcollate AS coll, datctype AS ctype
               FROM pg_database WHERE datname = $1`,
              [source],
            );
            const i = info.rows[0];
            const locale = i
              ? ` ENCODING ${quoteLiteral(i.enc)} LC_COLLATE ${quoteLiteral(i.coll)} LC_CTYPE ${quoteLiteral(i.ctype)}`
              : '';
            await c.query(`CREATE DATABASE ${quoteIdent(next)} TEMPLATE template0${locale}`);
            await this.dumpInto(source, next, report, req.signal);
          }
          // Nobody may connect to a snapshot: a connection would make it unusable as a template.
          await c.query(`ALTER DATABASE ${quoteIdent(next)} WITH ALLOW_CONNECTIONS false`);
          const note = JSON.stringify({ snapshotOf: source, at: new Date().toISOString(), method });
          await c.query(`COMMENT ON DATABASE ${quoteIdent(next)} IS ${quoteLiteral(COMMENT_TAG + note)}`);
          await this.withLock(c, `use:${snap}`, 'exclusive', async () => {
            await this.dropDatabase(c, snap);
            await c.query(`ALTER DATABASE ${quoteIdent(next)} RENAME TO ${quoteIdent(snap)}`);
          });
        } catch (err) {
          await this.dropDatabase(c, next).catch(() => {});
          if (err instanceof SandboxDatabaseError || req.signal?.aborted) throw err;
          throw new SandboxDatabaseError(
            'snapshot-failed',
            `branchline pg: could not snapshot "${source}" into ${snap}: ${(err as Error).message}`,
          );
        }
        const bytes = await this.size(c, snap);
        report({ phase: 'snapshot', done: bytes, total: bytes, unit: 'bytes', message: `${snap} is ready` });
        return { database: snap, method, bytes, ms: performance.now() - started };
      });
    }, req.signal);
  }

  /** Drops the snapshot of `source` (sandbox databases cloned from it are unaffected). */
  async dropSnapshot(source: string): Promise<void> {
    const snap = this.snapshotName(source);
    const next = nextSnapshotName(source, this.snapshotPrefix);
    await this.withAdmin(async (c) => {
      await this.withLock(c, `build:${next}`, 'exclusive', async () => {
        await this.dropDatabase(c, next);
        await this.withLock(c, `use:${snap}`, 'exclusive', () => this.dropDatabase(c, snap));
      });
    });
  }

  // ---------------------------------------------------------------- internals

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

  private async assertSourceExists(c: Client, source: string): Promise<void> {
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

  private async exists(c: Client, name: string): Promise<boolean> {
    const r = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    return r.rowCount === 1;
  }

  private async size(c: Client, name: string): Promise<number> {
    const r = await c.query<{ bytes: string }>('SELECT pg_database_size($1::name)::text AS bytes', [name]);
    return Number(r.rows[0]?.bytes ?? 0);
  }

  private async connectionsTo(c: Client, name: string): Promise<number> {
    const r = await c.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
      [name],
    );
    return r.rows[0]?.n ?? 0;
  }

  private async version(c: Client): Promise<number> {
    if (this.serverVersion === undefined) {
      const r = await c.query<{ server_version_num: string }>('SHOW server_version_num');
      this.serverVersion = Number(r.rows[0]?.server_version_num ?? 0);
    }
    return this.serverVersion;
  }

  private async strategyClause(c: Client, bytes: number): Promise<string> {
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
  private watchCloneBytes(total: number, onBytes: (done: number) => void): () => Promise<void> {
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
  private async dropDatabase(c: Client, name: string): Promise<void> {
    if ((await this.version(c)) >= 130000) {
      await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
      return;
    }
    await c.query(`ALTER DATABASE ${quoteIdent(name)} WITH ALLOW_CONNECTIONS false`).catch(() => {});
    await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
  }

  /** Drops a database and its catalogue entry on a fresh connection (the caller's may be broken). */
  private async forget(database: string): Promise<void> {
    await this.withAdmin(async (c) => {
      await this.dropDatabase(c, database);
      await c.query(`DELETE FROM ${quoteIdent(this.catalogue)} WHERE database = $1`, [database]);
    });
  }

  private async ensureCatalogue(c: Client): Promise<void> {
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

  private async withLock<T>(
    c: Client,
    name: string,
    mode: 'shared' | 'exclusive',
    fn: () => Promise<T>,
  ): Promise<T> {
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
  private async withAdmin<T>(fn: (c: Client) => Promise<T>, signal?: AbortSignal): Promise<T> {
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

  private async cancelBackend(pid: number | undefined): Promise<void> {
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

  /** Environment for pg_dump/pg_restore: the admin connection's host, port, user and password. */
  private clientEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (this.admin.host) env.PGHOST = this.admin.host;
    if (this.admin.port) env.PGPORT = String(this.admin.port);
    if (this.admin.user) env.PGUSER = this.admin.user;
    if (typeof this.admin.password === 'string') env.PGPASSWORD = this.admin.password;
    return env;
  }

  /**
   * Streams `pg_dump -Fc source | pg_restore -d target`, reporting tables as they are loaded.
   * Uncompressed: the stream never leaves the machine, and compressing costs more CPU than it saves.
   */
  private async dumpInto(
    source: string,
    target: string,
    report: Report,
    signal?: AbortSignal,
  ): Promise<void> {
    const total = await this.tableCount(source);
    report({ phase: 'snapshot', done: 0, total, unit: 'tables', message: `dumping ${source}` });
    const env = this.clientEnv();
    const dump = spawn(
      this.pgDumpPath,
      ['--format=custom', '--compress=0', '--no-password', `--dbname=${source}`],
      {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const restore = spawn(
      this.pgRestorePath,
      ['--no-password', '--exit-on-error', '--verbose', `--dbname=${target}`],
      { env, stdio: ['pipe', 'ignore', 'pipe'] },
    );
    dump.stdout.pipe(restore.stdin);
    restore.stdin.on('error', () => {}); // pg_restore exited early; its exit code says why
    const dumpErr: string[] = [];
    const restoreErr: string[] = [];
    const keep = (list: string[], line: string) => {
      list.push(line);
      if (list.length > 20) list.shift();
    };
    let pending = '';
    let done = 0;
    dump.stderr.setEncoding('utf8').on('data', (d: string) => {
      for (const l of d.split('\n')) if (l.trim()) keep(dumpErr, l);
    });
    restore.stderr.setEncoding('utf8').on('data', (d: string) => {
      pending += d;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        const m = /processing data for table "(.+)"/.exec(line);
        if (m) {
          done = Math.min(done + 1, total);
          report({ phase: 'snapshot', done, total, unit: 'tables', message: `copying ${m[1]}` });
        } else if (!/^pg_restore: (creating|processing|executing|connecting|implied|from TOC)/.test(line)) {
          keep(restoreErr, line);
        }
      }
    });
    const onAbort = () => {
      dump.kill('SIGKILL');
      restore.kill('SIGKILL');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const exited = (p: ReturnType<typeof spawn>, name: string) =>
        new Promise<number>((resolve, reject) => {
          p.once('error', (err: NodeJS.ErrnoException) =>
            reject(
              new SandboxDatabaseError(
                'snapshot-failed',
                err.code === 'ENOENT'
                  ? `branchline pg: ${name} was not found; install the PostgreSQL client tools matching the server (or set option ${name === this.pgDumpPath ? 'pgDumpPath' : 'pgRestorePath'}), or use snapshotMethod "template" with the baseline idle`
                  : `branchline pg: could not run ${name}: ${err.message}`,
              ),
            ),
          );
          p.once('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
        });
      const [dumpCode, restoreCode] = await Promise.all([
        exited(dump, this.pgDumpPath),
        exited(restore, this.pgRestorePath),
      ]);
      signal?.throwIfAborted();
      if (dumpCode !== 0 || restoreCode !== 0) {
        throw new SandboxDatabaseError(
          'snapshot-failed',
          `branchline pg: copying "${source}" with pg_dump | pg_restore failed (pg_dump exit ${dumpCode}, pg_restore exit ${restoreCode}): ${[...dumpErr, ...restoreErr].join(' | ') || 'no output'}`,
        );
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  private async tableCount(source: string): Promise<number> {
    const c = new pg.Client({ ...this.admin, database: source });
    c.on('error', () => {});
    await c.connect();
    try {
      const r = await c.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`,
      );
      return r.rows[0]?.n ?? 0;
    } finally {
      await c.end().catch(() => {});
    }
  }

  private outputs(database: string, source: string, snapshot: string): SandboxDatabaseOutputs {
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

function commentOwner(description: string | null): string | undefined {
  if (!description?.startsWith(COMMENT_TAG)) return undefined;
  try {
    const v = JSON.parse(description.slice(COMMENT_TAG.length)) as { sandbox?: unknown };
    return typeof v.sandbox === 'string' ? v.sandbox : undefined;
  } catch {
    return undefined;
  }
}

/** A `SandboxDatabases` for these options. */
export function createSandboxDatabases(options?: SandboxDatabasesOptions): SandboxDatabases {
  return new SandboxDatabases(options);
}

/**
 * Takes or refreshes the snapshot of `source` (`branchline db snapshot orders`). Sandboxes
 * created afterwards get the new data; existing sandbox databases are untouched.
 */
export function snapshotDatabase(
  source: string,
  options: SandboxDatabasesOptions & SnapshotRequest = {},
): Promise<SnapshotResult> {
  const { method, ifMissing, onProgress, signal, ...rest } = options;
  return new SandboxDatabases(rest).snapshot(source, { method, ifMissing, onProgress, signal });
}
