import type { SandboxDatabaseConnection } from '@branchline/core/transport';
import type { ConnectionOptions } from 'mysql2';

// The registry's resource-hook contract, from core (transport packages never import the registry).
export type { ResourceContext, ResourceHook, ResourceProgress } from '@branchline/core/transport';

/** A declared sandbox database: `{ type: 'mysql', spec: { from: 'orders' } }`. */
export interface MysqlResourceSpec {
  /** The baseline database whose schema and data seed the sandbox database. */
  from: string;
  /**
   * Services whose routed pools use this database for the sandbox's key. Absent: every service
   * that opens a routed pool on `from`.
   */
  services?: string[];
}

/** How sandbox workloads reach their database (defaults: the admin connection's host, port, user). */
export interface ClientConnectionOptions {
  host?: string;
  port?: number;
  user?: string;
  password?: string;
}

export interface SandboxDatabasesOptions {
  /**
   * Admin connection (a user with CREATE, DROP, SELECT, INSERT, CREATE VIEW, TRIGGER on the
   * databases involved, and PROCESS + CONNECTION_ADMIN/SUPER to end sessions of a dropped
   * database) as mysql2 connection options or a `mysql://` URL. Its `database` is ignored.
   * Default `mysql://root@127.0.0.1:3306`.
   */
  connection?: ConnectionOptions | string;
  /** Database the catalogue table lives in; created when missing. Default `branchline`. */
  adminDatabase?: string;
  /** Name prefix of sandbox databases; the sweeper only ever touches names with it. Default `bl_sb_`. */
  prefix?: string;
  /** Catalogue table (in `adminDatabase`) recording every sandbox database. Default `branchline_mysql_databases`. */
  catalogue?: string;
  /** Only these baseline databases may be branched. Default: any database except managed and system ones. */
  allowSources?: string[];
  /** Connection details handed to sandbox workloads in the resource outputs. */
  clientConnection?: ClientConnectionOptions;
  /**
   * The sweeper leaves catalogue entries of unknown sandboxes younger than this alone, so a
   * sandbox created after the registry listed the live ones is not swept. Default 10 minutes.
   */
  sweepGraceMs?: number;
}

/** The private outputs of a provisioned sandbox database: only that sandbox's workloads get them. */
export interface SandboxDatabaseOutputs extends SandboxDatabaseConnection {
  /** `mysql://user[:password]@host:port/database` */
  url: string;
}

/** What a clone copied. */
export interface CloneReport {
  tables: number;
  rows: number;
  views: number;
  triggers: number;
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
