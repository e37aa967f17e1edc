import {
  guardProgressReport,
  logger,
  type SandboxDatabaseDropRequest,
  type SandboxDatabaseProvisionRequest,
} from '@branchline/core/transport';
import type { ConnectionOptions } from 'mysql2';
import mysql, { type Connection, type ResultSetHeader, type RowDataPacket } from 'mysql2/promise';
import {
  checkPrefix,
  checkSandboxName,
  checkSourceName,
  checkTableName,
  DEFAULT_ADMIN_DATABASE,
  DEFAULT_CATALOGUE,
  DEFAULT_PREFIX,
  likePrefix,
  parseSandboxDatabaseName,
  quoteIdent,
  SandboxDatabaseError,
  SYSTEM_DATABASES,
  sandboxDatabaseName,
} from './names.js';
import type {
  CloneReport,
  ResourceProgress,
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
  SweepResult,
} from './types.js';

type Report = (progress: ResourceProgress) => void;

export interface ProvisionRequest extends SandboxDatabaseProvisionRequest {}

export interface DropRequest extends SandboxDatabaseDropRequest {}

interface CatalogueRow extends RowDataPacket {
  database: string;
  sandbox: string;
  state: 'creating' | 'ready' | 'deleting';
  age_ms: number;
}

/** mysql2 errors carry the server's error number and symbol. */
function errno(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null ? (err as { errno?: number }).errno : undefined;
}

function guardReport(report: Report | undefined): Report {
  return guardProgressReport('mysql', report);
}

const DEFINER_RE =
  /\sDEFINER\s*=\s*(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|[^\s@]+)@(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|\S+)/i;

/**
 * Removes the `DEFINER=user@host` clause of a view or trigger definition, so the copy is owned
 * by the admin user (who may not be allowed to create objects on behalf of someone else).
 */
export function stripDefiner(sql: string): string {
  return sql.replace(DEFINER_RE, '');
}

/** Points explicit `source`.object references of a view or trigger body at the copy. */
export function retarget(sql: string, source: string, target: string): string {
  return sql.split(`${quoteIdent(source)}.`).join(`${quoteIdent(target)}.`);
}

function resolveConnection(given: ConnectionOptions | string | undefined): ConnectionOptions {
  const defaults: ConnectionOptions = { host: '127.0.0.1', port: 3306, user: 'root' };
  if (given === undefined) return defaults;
  if (typeof given !== 'string') {
    const { database: _ignored, uri, ...rest } = given;
    return uri ? { ...defaults, ...resolveConnection(uri), ...rest } : { ...defaults, ...rest };
  }
  let url: URL;
  try {
    url = new URL(given);
  } catch {
    throw new TypeError(
      'branchline mysql: option connection must be mysql2 connection options or a URL such as mysql://root@127.0.0.1:3306',
    );
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:')
    throw new TypeError(
      `branchline mysql: option connection is a ${url.protocol} URL; use mysql://user[:password]@host:port`,
    );
  const out: ConnectionOptions = {
    host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: url.port ? Number(url.port) : 3306,
    user: url.username ? decodeURIComponent(url.username) : 'root',
  };
  if (url.password) out.password = decodeURIComponent(url.password);
  return out;
}

/**
 * Creates, drops and sweeps sandbox databases on one MySQL or MariaDB server. A sandbox
 * database is a copy of a baseline database: every table's `SHOW CREATE TABLE` (indexes,
 * foreign keys, `AUTO_INCREMENT` counter, engine, charset) and its rows (`INSERT … SELECT`),
 * then views and triggers. Every sandbox database is recorded in a catalogue table *before* it
 * is created and forgotten only *after* it is dropped, so an interrupted create or delete
 * always leaves a trace the sweeper can finish. Each operation opens its own admin connection.
 */
export class SandboxDatabases {
  readonly prefix: string;
  readonly catalogue: string;
  readonly adminDatabase: string;
  private readonly allowSources: ReadonlySet<string> | undefined;
  private readonly sweepGraceMs: number;
  private readonly admin: ConnectionOptions;
  private readonly client: { host: string; port: number; user: string; password?: string };
  private catalogueReady: Promise<void> | undefined;

  constructor(options: SandboxDatabasesOptions = {}) {
    this.prefix = checkPrefix(options.prefix ?? DEFAULT_PREFIX, 'prefix');
    this.catalogue = checkTableName(options.catalogue ?? DEFAULT_CATALOGUE, 'catalogue');
    this.adminDatabase = checkSourceName(
      options.adminDatabase ?? DEFAULT_ADMIN_DATABASE,
      'option adminDatabase',
    );
    if (this.adminDatabase.startsWith(this.prefix))
      throw new TypeError(
        `branchline mysql: option adminDatabase=${JSON.stringify(this.adminDatabase)} must not start with the sandbox prefix ${JSON.stringify(this.prefix)}`,
      );
    this.allowSources = options.allowSources
      ? new Set(options.allowSources.map((s, i) => checkSourceName(s, `option allowSources[${i}]`)))
      : undefined;
    this.sweepGraceMs = options.sweepGraceMs ?? 10 * 60_000;
    if (!Number.isFinite(this.sweepGraceMs) || this.sweepGraceMs < 0)
      throw new TypeError(
        `branchline mysql: option sweepGraceMs=${options.sweepGraceMs} must be a non-negative number of ms`,
      );
    this.admin = resolveConnection(options.connection);
    const cc = options.clientConnection ?? {};
    const user = cc.user ?? this.admin.user ?? 'root';
    this.client = {
      host: cc.host ?? this.admin.host ?? '127.0.0.1',
      port: cc.port ?? this.admin.port ?? 3306,
      user,
      // The admin's password is handed out only with the admin's own user name.
      password:
        cc.password ??
        (user === this.admin.user && typeof this.admin.password === 'string'
          ? this.admin.password
          : undefined),
    };
  }

  /** The database `sandbox` gets for `source` (deterministic; the routed pool computes it too). */
  databaseName(source: string, sandbox: string): string {
    return sandboxDatabaseName(checkSourceName(source), checkSandboxName(sandbox), this.prefix);
  }

  // ---------------------------------------------------------------- provisioning

  /**
   * Creates the sandbox database of (`sandbox`, `source`) as a copy of `source` and returns its
   * connection details. Idempotent: a database that is already ready is returned as is. On
   * failure nothing is left behind.
   */
  async provision(req: ProvisionRequest): Promise<SandboxDatabaseOutputs> {
    const sandbox = checkSandboxName(req.sandbox);
    const source = this.checkAllowed(checkSourceName(req.source));
    const database = sandboxDatabaseName(source, sandbox, this.prefix);
    const report = guardReport(req.report);
    const signal = req.signal;
    const table = this.catalogueTable();

    return this.withAdmin(async (c) => {
      await this.assertSourceExists(c, source);
      await this.ensureCatalogue(c);
      const [prior] = await c.query<RowDataPacket[]>(`SELECT state FROM ${table} WHERE \`database\` = ?`, [
        database,
      ]);
      if (prior[0]?.state === 'ready' && (await this.exists(c, database))) {
        report({ phase: 'ready', message: `${database} is ready` });
        return this.outputs(database, source);
      }
      // Recorded before it exists: whatever happens next, the sweeper can find it.
      await c.query(
        `INSERT INTO ${table} (\`database\`, sandbox, resource, source, state) VALUES (?, ?, ?, ?, 'creating')
         ON DUPLICATE KEY UPDATE sandbox = VALUES(sandbox), resource = VALUES(resource), source = VALUES(source),
           state = 'creating', created_at = CURRENT_TIMESTAMP(3), updated_at = CURRENT_TIMESTAMP(3)`,
        [database, sandbox, req.resource ?? null, source],
      );
      try {
        // A leftover of an interrupted attempt is replaced, never reused half-made.
        await this.dropDatabase(c, database);
        const copied = await this.cloneInto(c, source, database, report, signal);
        // An abort that landed between two statements interrupted nothing: honour it here.
        signal?.throwIfAborted();
        await c.query(
          `UPDATE ${table} SET state = 'ready', updated_at = CURRENT_TIMESTAMP(3) WHERE \`database\` = ?`,
          [database],
        );
        report({
          phase: 'ready',
          done: copied.tables,
          total: copied.tables,
          unit: 'tables',
          message: `${database} is ready (${copied.rows} rows)`,
        });
        return this.outputs(database, source);
      } catch (err) {
        // Leave the half-made database, so that dropping it does not end this session too.
        await c.query(`USE ${quoteIdent(this.adminDatabase)}`).catch(() => {});
        await this.forget(database).catch((cleanupErr) =>
          logger().error(
            'branchline mysql: could not remove a half-made sandbox database; the sweeper will',
            { database, err: String(cleanupErr) },
          ),
        );
        // Cancelled: the caller's reason, not the "query interrupted" the cancellation caused.
        if (signal?.aborted) throw signal.reason ?? err;
        if (err instanceof SandboxDatabaseError) throw err;
        throw new SandboxDatabaseError(
          'clone-failed',
          `branchline mysql: could not create ${database} for sandbox ${sandbox} from "${source}": ${(err as Error).message}`,
        );
      }
    }, signal);
  }

  /**
   * Drops the sandbox database (ending the sessions using it) and forgets it. Idempotent, so
   * the registry can retry it after a crash. Marked `deleting` first, so an interrupted drop is
   * finished by the sweeper.
   */
  async drop(req: DropRequest): Promise<void> {
    const sandbox = checkSandboxName(req.sandbox);
    const source = checkSourceName(req.source);
    const database =
      typeof req.database === 'string' && req.database.startsWith(this.prefix)
        ? req.database
        : sandboxDatabaseName(source, sandbox, this.prefix);
    const table = this.catalogueTable();
    await this.withAdmin(async (c) => {
      await this.ensureCatalogue(c);
      await c.query(
        `INSERT INTO ${table} (\`database\`, sandbox, source, state) VALUES (?, ?, ?, 'deleting')
         ON DUPLICATE KEY UPDATE state = 'deleting', updated_at = CURRENT_TIMESTAMP(3)`,
        [database, sandbox, source],
      );
      await this.dropDatabase(c, database);
      await c.query(`DELETE FROM ${table} WHERE \`database\` = ?`, [database]);
    }, req.signal);
  }

  /**
   * Removes every sandbox database (with this prefix) whose sandbox is not in `liveSandboxes`:
   * interrupted deletions, databases whose catalogue entry was lost, entries whose database is
   * already gone. Entries of unknown sandboxes younger than `sweepGraceMs` are left alone, as is
   * everything a live sandbox owns.
   */
  async sweep(liveSandboxes: Iterable<string>): Promise<SweepResult> {
    const live = new Set(liveSandboxes);
    const result: SweepResult = { dropped: [], forgotten: [], kept: [] };
    const table = this.catalogueTable();
    await this.withAdmin(async (c) => {
      await this.ensureCatalogue(c);
      // Databases first, entries second: an entry is written before its database is created,
      // so every database listed here has its entry visible in the second read.
      const [dbs] = await c.query<RowDataPacket[]>(
        'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?',
        [likePrefix(this.prefix)],
      );
      const [rows] = await c.query<CatalogueRow[]>(
        `SELECT \`database\`, sandbox, state,
           TIMESTAMPDIFF(MICROSECOND, created_at, CURRENT_TIMESTAMP(3)) / 1000 AS age_ms
         FROM ${table} WHERE \`database\` LIKE ?`,
        [likePrefix(this.prefix)],
      );
      const existing = new Set(dbs.map((d) => d.name as string));
      const known = new Set<string>();
      for (const row of rows) {
        known.add(row.database);
        if (live.has(row.sandbox) || (row.state !== 'deleting' && Number(row.age_ms) < this.sweepGraceMs)) {
          result.kept.push(row.database);
          continue;
        }
        await c.query(
          `UPDATE ${table} SET state = 'deleting', updated_at = CURRENT_TIMESTAMP(3) WHERE \`database\` = ?`,
          [row.database],
        );
        if (existing.has(row.database)) {
          await this.dropDatabase(c, row.database);
          result.dropped.push(row.database);
        }
        await c.query(`DELETE FROM ${table} WHERE \`database\` = ?`, [row.database]);
        result.forgotten.push(row.database);
      }
      for (const name of existing) {
        if (known.has(name)) continue;
        const owner = parseSandboxDatabaseName(name, this.prefix);
        if (owner !== undefined && live.has(owner)) {
          result.kept.push(name);
          continue;
        }
        await this.dropDatabase(c, name);
        result.dropped.push(name);
      }
    });
    if (result.dropped.length || result.forgotten.length)
      logger().info('branchline mysql: sweeper removed orphaned sandbox databases', { ...result });
    return result;
  }

  /** Every sandbox database in the catalogue (for listings and tests). */
  async list(): Promise<{ database: string; sandbox: string; source: string; state: string }[]> {
    return this.withAdmin(async (c) => {
      await this.ensureCatalogue(c);
      const [rows] = await c.query<RowDataPacket[]>(
        `SELECT \`database\`, sandbox, source, state FROM ${this.catalogueTable()} WHERE \`database\` LIKE ? ORDER BY \`database\``,
        [likePrefix(this.prefix)],
      );
      return rows.map((r) => ({
        database: r.database,
        sandbox: r.sandbox,
        source: r.source,
        state: r.state,
      }));
    });
  }

  /** Throws when `source` may not be branched (a managed or system database, or not in `allowSources`). */
  checkAllowed(source: string): string {
    if (source.startsWith(this.prefix) || source === this.adminDatabase) {
      throw new SandboxDatabaseError(
        'not-allowed',
        `branchline mysql: "${source}" is a database Branchline manages (prefix ${this.prefix}, or the catalogue's database); branch from a baseline database instead`,
      );
    }
    if (SYSTEM_DATABASES.has(source.toLowerCase())) {
      throw new SandboxDatabaseError(
        'not-allowed',
        `branchline mysql: "${source}" is a system database; branch from an application database instead`,
      );
    }
    if (this.allowSources && !this.allowSources.has(source)) {
      throw new SandboxDatabaseError(
        'not-allowed',
        `branchline mysql: "${source}" may not be branched; allowed sources are ${[...this.allowSources].join(', ')} (option allowSources)`,
      );
    }
    return source;
  }

  // ---------------------------------------------------------------- the copy

  /**
   * Copies `source` into the new database `target` on connection `c`: tables (structure, then
   * rows) in name order with foreign key checks off, MariaDB sequences with their next value,
   * then views (retried until their dependencies exist) and triggers (last, so the copy does
   * not fire them). Each table is read with one consistent, non-locking read (READ COMMITTED):
   * the baseline keeps serving while it is copied, and tables written during the copy may be
   * copied at slightly different moments.
   */
  private async cloneInto(
    c: Connection,
    source: string,
    target: string,
    report: Report,
    signal: AbortSignal | undefined,
  ): Promise<CloneReport> {
    const started = performance.now();
    const [schemaRows] = await c.query<RowDataPacket[]>(
      `SELECT DEFAULT_CHARACTER_SET_NAME AS cs, DEFAULT_COLLATION_NAME AS co
       FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`,
      [source],
    );
    const cs = String(schemaRows[0]?.cs ?? '');
    const co = String(schemaRows[0]?.co ?? '');
    const charset = /^\w+$/.test(cs) && /^\w+$/.test(co) ? ` CHARACTER SET ${cs} COLLATE ${co}` : '';
    const [objects] = await c.query<RowDataPacket[]>(
      `SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES
       WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME`,
      [source],
    );
    const tables = objects.filter((o) => o.type === 'BASE TABLE' || o.type === 'SYSTEM VERSIONED');
    const sequences = objects.filter((o) => o.type === 'SEQUENCE');
    const views = objects.filter((o) => o.type === 'VIEW');
    const total = tables.length;
    const src = quoteIdent(source);
    const dst = quoteIdent(target);
    report({ phase: 'cloning', done: 0, total, unit: 'tables', message: `copying ${source} into ${target}` });

    await c.query(`CREATE DATABASE ${dst}${charset}`);
    await c.query(`USE ${dst}`);
    // Copy rows as they are: explicit zeros stay in AUTO_INCREMENT columns, no foreign key
    // or unique checks (the source already satisfied them), and non-locking reads of the source.
    await c.query("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'");
    await c.query('SET SESSION foreign_key_checks = 0, unique_checks = 0');
    await c.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED');

    let rows = 0;
    let done = 0;
    for (const t of tables) {
      signal?.throwIfAborted();
      const name = String(t.name);
      const [created] = await c.query<RowDataPacket[]>(`SHOW CREATE TABLE ${src}.${quoteIdent(name)}`);
      const ddl = String(created[0]?.['Create Table'] ?? '');
      await c.query(ddl);
      // Generated columns are computed again by the copy; every other column is copied.
      const [cols] = await c.query<RowDataPacket[]>(
        `SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND EXTRA NOT LIKE '%GENERATED%'
         ORDER BY ORDINAL_POSITION`,
        [source, name],
      );
      const list = cols.map((col) => quoteIdent(String(col.name))).join(', ');
      const [res] = await c.query<ResultSetHeader>(
        `INSERT INTO ${dst}.${quoteIdent(name)} (${list}) SELECT ${list} FROM ${src}.${quoteIdent(name)}`,
      );
      rows += res.affectedRows;
      signal?.throwIfAborted();
      done++;
      report({
        phase: 'cloning',
        done,
        total,
        unit: 'tables',
        message: `copied ${name} (${res.affectedRows} rows)`,
      });
    }

    for (const s of sequences) {
      signal?.throwIfAborted();
      const name = quoteIdent(String(s.name));
      const [created] = await c.query<RowDataPacket[]>(`SHOW CREATE SEQUENCE ${src}.${name}`);
      await c.query(String(created[0]?.['Create Table'] ?? ''));
      const [state] = await c.query<RowDataPacket[]>(`SELECT next_not_cached_value AS v FROM ${src}.${name}`);
      if (state[0]?.v !== undefined) await c.query(`SELECT SETVAL(${dst}.${name}, ?, 0)`, [state[0].v]);
    }

    // Views may select from views: create those whose dependencies exist until none are left.
    let pending = views.map((v) => String(v.name));
    while (pending.length > 0) {
      signal?.throwIfAborted();
      const failed: string[] = [];
      let lastError: unknown;
      for (const name of pending) {
        const [created] = await c.query<RowDataPacket[]>(`SHOW CREATE VIEW ${src}.${quoteIdent(name)}`);
        const ddl = retarget(stripDefiner(String(created[0]?.['Create View'] ?? '')), source, target);
        try {
          await c.query(ddl);
        } catch (err) {
          // 1146: a table or view it selects from does not exist (yet).
          if (errno(err) !== 1146 && errno(err) !== 1356) throw err;
          failed.push(name);
          lastError = err;
        }
      }
      if (failed.length === pending.length)
        throw new SandboxDatabaseError(
          'clone-failed',
          `branchline mysql: could not copy the views ${failed.join(', ')} of "${source}": ${(lastError as Error).message}`,
        );
      pending = failed;
    }

    const [triggers] = await c.query<RowDataPacket[]>(
      `SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?
       ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER`,
      [source],
    );
    for (const t of triggers) {
      signal?.throwIfAborted();
      const [created] = await c.query<RowDataPacket[]>(
        `SHOW CREATE TRIGGER ${src}.${quoteIdent(String(t.name))}`,
      );
      const row = created[0];
      // A trigger body is parsed under the sql_mode it was created with.
      await c.query('SET SESSION sql_mode = ?', [String(row?.sql_mode ?? '')]);
      await c.query(retarget(stripDefiner(String(row?.['SQL Original Statement'] ?? '')), source, target));
    }

    const [routines] = await c.query<RowDataPacket[]>(
      `SELECT (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?)
            + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?) AS n`,
      [source, source],
    );
    const skipped = Number(routines[0]?.n ?? 0);
    if (skipped > 0)
      logger().warn(
        'branchline mysql: stored procedures, functions and events are not copied into sandbox databases; create them in the sandbox database yourself (e.g. with your migrations)',
        { source, target, skipped },
      );
    return {
      tables: tables.length,
      rows,
      views: views.length,
      triggers: triggers.length,
      ms: performance.now() - started,
    };
  }

  // ---------------------------------------------------------------- internals

  private catalogueTable(): string {
    return `${quoteIdent(this.adminDatabase)}.${quoteIdent(this.catalogue)}`;
  }

  private async assertSourceExists(c: Connection, source: string): Promise<void> {
    if (await this.exists(c, source)) return;
    const [others] = await c.query<RowDataPacket[]>(
      `SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA
       WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', ?)
       AND SCHEMA_NAME NOT LIKE ? ORDER BY SCHEMA_NAME LIMIT 20`,
      [this.adminDatabase, likePrefix(this.prefix)],
    );
    throw new SandboxDatabaseError(
      'missing-source',
      `branchline mysql: the baseline database "${source}" does not exist on ${this.admin.host}:${this.admin.port} (databases there: ${others.map((r) => r.name).join(', ') || 'none'}); create it or fix "from" in the sandbox's resource`,
    );
  }

  private async exists(c: Connection, name: string): Promise<boolean> {
    const [r] = await c.query<RowDataPacket[]>(
      'SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?',
      [name],
    );
    return r.length === 1;
  }

  /** Drops `name` if it exists, first ending the sessions that use it (they would hold locks). */
  private async dropDatabase(c: Connection, name: string): Promise<void> {
    const [sessions] = await c.query<RowDataPacket[]>(
      'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()',
      [name],
    );
    for (const s of sessions) {
      const id = Number(s.id);
      if (!Number.isSafeInteger(id)) continue;
      await c.query(`KILL CONNECTION ${id}`).catch((err: unknown) => {
        // 1094: it ended meanwhile. Anything else (no privilege) is worth a warning: the drop may wait.
        if (errno(err) !== 1094)
          logger().warn('branchline mysql: could not end a session of a database being dropped', {
            database: name,
            id,
            err: String(err),
          });
      });
    }
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
  }

  /** Drops a database and its catalogue entry on a fresh connection (the caller's may be broken). */
  private async forget(database: string): Promise<void> {
    await this.withAdmin(async (c) => {
      await this.dropDatabase(c, database);
      await c.query(`DELETE FROM ${this.catalogueTable()} WHERE \`database\` = ?`, [database]);
    });
  }

  private async ensureCatalogue(c: Connection): Promise<void> {
    this.catalogueReady ??= (async () => {
      await c.query(`CREATE DATABASE IF NOT EXISTS ${quoteIdent(this.adminDatabase)}`);
      await c.query(
        `CREATE TABLE IF NOT EXISTS ${this.catalogueTable()} (
           \`database\` VARCHAR(64) NOT NULL PRIMARY KEY,
           sandbox VARCHAR(63) NOT NULL,
           resource VARCHAR(255) NULL,
           source VARCHAR(64) NOT NULL,
           state ENUM('creating', 'ready', 'deleting') NOT NULL,
           created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
           updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
         ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin`,
      );
    })().catch((err) => {
      this.catalogueReady = undefined;
      throw err;
    });
    return this.catalogueReady;
  }

  /** Runs `fn` on a fresh admin connection; an abort kills the statement in flight. */
  private async withAdmin<T>(fn: (c: Connection) => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    const c = await mysql.createConnection({ ...this.admin });
    // A killed admin session must not crash the process; the awaited query reports it.
    c.on('error', (err: unknown) =>
      logger().warn('branchline mysql: admin connection error', { err: String(err) }),
    );
    const onAbort = () => {
      void this.killQuery(c.threadId);
    };
    try {
      signal?.addEventListener('abort', onAbort, { once: true });
      signal?.throwIfAborted();
      return await fn(c);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      await c.end().catch(() => c.destroy());
    }
  }

  private async killQuery(id: number | null): Promise<void> {
    if (id === null || !Number.isSafeInteger(id)) return;
    try {
      const c = await mysql.createConnection({ ...this.admin });
      c.on('error', () => {});
      try {
        await c.query(`KILL QUERY ${id}`);
      } finally {
        await c.end().catch(() => c.destroy());
      }
    } catch (err) {
      logger().warn('branchline mysql: could not stop an aborted operation', { id, err: String(err) });
    }
  }

  private outputs(database: string, source: string): SandboxDatabaseOutputs {
    const { host, port, user, password } = this.client;
    const auth = encodeURIComponent(user) + (password ? `:${encodeURIComponent(password)}` : '');
    const url = `mysql://${auth}@${host.includes(':') ? `[${host}]` : host}:${port}/${encodeURIComponent(database)}`;
    const out: SandboxDatabaseOutputs = { host, port, database, user, url, source };
    if (password) out.password = password;
    return out;
  }
}

/** A `SandboxDatabases` for these options. */
export function createSandboxDatabases(options?: SandboxDatabasesOptions): SandboxDatabases {
  return new SandboxDatabases(options);
}
