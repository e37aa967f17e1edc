import type { SandboxDatabaseConnection } from '@branchline/core/transport';
import type { ClientConfig } from 'pg';

// The registry's resource-hook contract, from core (transport packages never import the registry).
export type { ResourceContext, ResourceHook, ResourceProgress } from '@branchline/core/transport';

/** A declared sandbox database: `{ type: 'postgres', spec: { from: 'orders' } }`. */
export interface PostgresResourceSpec {
  /** The baseline database whose data seeds the sandbox database. */
  from: string;
  /**
   * Services whose routed pools use this database for the sandbox's key. Absent: every service
   * that opens a routed pool on `from`.
   */
  services?: string[];
  /** Take a fresh snapshot of `from` before cloning (slower; default: reuse the snapshot). */
  refresh?: boolean;
}

/** How sandbox workloads reach their database (defaults: the admin connection's host, port, user). */
export interface ClientConnectionOptions {
  host?: string;
  port?: number;
  user?: string;
  password?: string;
}

export type CloneStrategy = 'auto' | 'file_copy' | 'wal_log';
export type SnapshotMethod = 'auto' | 'template' | 'dump';

export interface SandboxDatabasesOptions {
  /**
   * Admin connection (a role with CREATEDB, or a superuser) as a pg client config or connection
   * string. Its `database` is ignored: admin work runs in `adminDatabase`. Default: pg's
   * defaults and the PG* environment variables.
   */
  connection?: ClientConfig | string;
  /** Database the admin connection uses and the catalogue table lives in. Default `postgres`. */
  adminDatabase?: string;
  /** Name prefix of sandbox databases; the sweeper only ever touches names with it. Default `bl_sb_`. */
  prefix?: string;
  /** Name prefix of snapshot databases. Default `branchline_snap_`. */
  snapshotPrefix?: string;
  /** Catalogue table (in `adminDatabase`) recording every sandbox database. Default `branchline_pg_databases`. */
  catalogue?: string;
  /**
   * `CREATE DATABASE … STRATEGY`: `file_copy` copies files (two checkpoints, little WAL),
   * `wal_log` copies block by block through the WAL. `auto` picks `file_copy` for snapshots of
   * 64 MB and more on PostgreSQL 15+. Default `auto`.
   */
  cloneStrategy?: CloneStrategy;
  /**
   * How a snapshot is taken: `template` clones the baseline (needs it idle for a moment),
   * `dump` streams `pg_dump | pg_restore` (works while the baseline is in use), `auto` uses
   * `template` when nobody is connected to the baseline and `dump` otherwise. Default `auto`.
   */
  snapshotMethod?: SnapshotMethod;
  /** Only these baseline databases may be branched. Default: any database except managed ones. */
  allowSources?: string[];
  /** Connection details handed to sandbox workloads in the resource outputs. */
  clientConnection?: ClientConnectionOptions;
  /** Role that owns created sandbox databases (`CREATE DATABASE … OWNER`). Default: the admin role. */
  owner?: string;
  /**
   * The sweeper leaves catalogue entries of unknown sandboxes younger than this alone, so a
   * sandbox created after the registry listed the live ones is not swept. Default 10 minutes.
   */
  sweepGraceMs?: number;
  /** Paths of the PostgreSQL client binaries used by `dump` snapshots. Default from PATH. */
  pgDumpPath?: string;
  pgRestorePath?: string;
}

/** The private outputs of a provisioned sandbox database: only that sandbox's workloads get them. */
export interface SandboxDatabaseOutputs extends SandboxDatabaseConnection {
  /** `postgres://user[:password]@host:port/database` */
  url: string;
  /** The snapshot database it was cloned from. */
  snapshot: string;
}

export interface SnapshotResult {
  /** Name of the snapshot database. */
  database: string;
  /** How it was made; `existing` when `ifMissing` found one. */
  method: 'template' | 'dump' | 'existing';
  bytes: number;
  ms: number;
}

export interface SweepResult {
  /** Databases dropped (orphans and interrupted deletions). */
  dropped: string[];
  /** Catalogue entries removed. */
  forgotten: string[];
  /** Databases and entries left alone because their sandbox is live or they are too young. */
  kept: string[];
}
