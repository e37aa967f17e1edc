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
  sandboxDatabaseName,
  snapshotDatabaseName,
} from './names.js';
import { dropDatabaseOf, listDatabases, provisionDatabase, sweepDatabases } from './provisioning.js';
import type { DropRequest, ProvisionRequest, SnapshotRequest } from './requests.js';
import { DatabaseServer } from './server.js';
import { dropSnapshot, takeSnapshot } from './snapshots.js';
import type {
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
  SnapshotResult,
  SweepResult,
} from './types.js';

export type { DropRequest, ProvisionRequest, SnapshotRequest } from './requests.js';
export { FILE_COPY_THRESHOLD_BYTES } from './server.js';

/**
 * Creates, snapshots, drops and sweeps sandbox databases on one PostgreSQL server. Every
 * sandbox database is recorded in a catalogue table *before* it is created and forgotten only
 * *after* it is dropped, so an interrupted create or delete always leaves a trace the sweeper
 * can finish. Each operation opens its own short-lived admin connection.
 *
 * The work is done in provisioning.ts (create, drop, sweep, list), snapshots.ts, dump.ts
 * (pg_dump | pg_restore) and server.ts (connections, locks, the catalogue).
 */
export class SandboxDatabases {
  readonly prefix: string;
  readonly snapshotPrefix: string;
  readonly catalogue: string;
  readonly adminDatabase: string;
  private readonly server: DatabaseServer;

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
    const cloneStrategy = strategy;
    const method = options.snapshotMethod ?? 'auto';
    if (!['auto', 'template', 'dump'].includes(method))
      throw new TypeError(
        `branchline pg: option snapshotMethod=${JSON.stringify(method)} must be "auto", "template" or "dump"`,
      );
    const snapshotMethod = method;
    const allowSources = options.allowSources
      ? new Set(options.allowSources.map((s, i) => checkSourceName(s, `option allowSources[${i}]`)))
      : undefined;
    const owner = options.owner === undefined ? undefined : checkRoleName(options.owner, 'owner');
    const sweepGraceMs = options.sweepGraceMs ?? 10 * 60_000;
    if (!Number.isFinite(sweepGraceMs) || sweepGraceMs < 0)
      throw new TypeError(
        `branchline pg: option sweepGraceMs=${options.sweepGraceMs} must be a non-negative number of ms`,
      );
    const pgDumpPath = options.pgDumpPath ?? 'pg_dump';
    const pgRestorePath = options.pgRestorePath ?? 'pg_restore';

    // Resolve the connection once (connection string, PG* variables, pg defaults) so that admin
    // clients, pg_dump and the outputs all agree on where the server is.
    const given: ClientConfig =
      typeof options.connection === 'string'
        ? { connectionString: options.connection }
        : { ...options.connection };
    const probe = new pg.Client(given) as Client & { ssl?: ClientConfig['ssl'] };
    const { connectionString: _ignored, ...rest } = given;
    const admin: ClientConfig = {
      ...rest,
      host: probe.host,
      port: probe.port,
      user: probe.user,
      password: probe.password,
      ssl: probe.ssl,
      database: this.adminDatabase,
    };
    const cc = options.clientConnection ?? {};
    const user = cc.user ?? owner ?? probe.user ?? 'postgres';
    const client = {
      host: cc.host ?? probe.host,
      port: cc.port ?? probe.port,
      user,
      // The admin's password is handed out only with the admin's own user name.
      password:
        cc.password ??
        (user === probe.user && typeof probe.password === 'string' ? probe.password : undefined),
    };
    this.server = new DatabaseServer({
      prefix: this.prefix,
      snapshotPrefix: this.snapshotPrefix,
      catalogue: this.catalogue,
      cloneStrategy,
      snapshotMethod,
      allowSources,
      owner,
      sweepGraceMs,
      pgDumpPath,
      pgRestorePath,
      admin,
      client,
    });
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
  provision(req: ProvisionRequest): Promise<SandboxDatabaseOutputs> {
    return provisionDatabase(this.server, req);
  }

  /**
   * Drops the sandbox database (terminating its connections) and forgets it. Idempotent, so the
   * registry can retry it after a crash. Marked `deleting` first, so an interrupted drop is
   * finished by the sweeper.
   */
  drop(req: DropRequest): Promise<void> {
    return dropDatabaseOf(this.server, req);
  }

  /**
   * Removes every sandbox database (with this prefix) whose sandbox is not in `liveSandboxes`:
   * interrupted deletions, databases whose catalogue entry was lost, entries whose database is
   * already gone. Entries of unknown sandboxes younger than `sweepGraceMs` are left alone, as is
   * everything a live sandbox owns. Also removes half-built snapshots nobody is building.
   */
  sweep(liveSandboxes: Iterable<string>): Promise<SweepResult> {
    return sweepDatabases(this.server, liveSandboxes);
  }

  /** Every sandbox database in the catalogue (for listings and tests). */
  list(): Promise<{ database: string; sandbox: string; source: string; state: string }[]> {
    return listDatabases(this.server);
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Takes (or refreshes) the snapshot of `source` that sandbox databases are cloned from. The
   * new snapshot is built beside the old one and swapped in under a lock, so clones never see
   * a half-built snapshot and the baseline is never locked: with the baseline in use the copy
   * streams through `pg_dump | pg_restore` from one consistent MVCC snapshot.
   */
  snapshot(source: string, req: SnapshotRequest = {}): Promise<SnapshotResult> {
    return takeSnapshot(this.server, source, req);
  }

  /** Drops the snapshot of `source` (sandbox databases cloned from it are unaffected). */
  dropSnapshot(source: string): Promise<void> {
    return dropSnapshot(this.server, source);
  }

  /** Throws when `source` may not be branched (a managed database, or not in `allowSources`). */
  checkAllowed(source: string): string {
    return this.server.checkAllowed(source);
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
