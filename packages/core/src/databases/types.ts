import { logger } from '../log.js';
import type { ResourceProgress } from '../resources.js';

/**
 * The private outputs every database adapter returns for a provisioned sandbox database; only
 * that sandbox's workloads get them. Adapters add their own fields (e.g. pg's `snapshot`).
 */
export interface SandboxDatabaseConnection {
  [key: string]: unknown;
  host: string;
  port: number;
  database: string;
  user: string;
  password?: string;
  /** A connection URL in the adapter's scheme (`postgres://`, `mysql://`). */
  url: string;
  /** The baseline database it was seeded from. */
  source: string;
}

/** A request to provision the database of `sandbox` seeded from `source`. */
export interface SandboxDatabaseProvisionRequest {
  sandbox: string;
  source: string;
  /** The resource's name in the sandbox document, kept in the catalogue for people. */
  resource?: string;
  report?: (progress: ResourceProgress) => void;
  signal?: AbortSignal;
}

/** A request to drop the database of `sandbox` seeded from `source`. */
export interface SandboxDatabaseDropRequest {
  sandbox: string;
  source: string;
  /** The database named in the resource outputs, when known (it must carry our prefix). */
  database?: string;
  signal?: AbortSignal;
}

/**
 * `report`, made safe: a progress callback that throws is logged (as `branchline <driver>: …`)
 * and ignored, so a listener's bug never fails a provisioning.
 */
export function guardProgressReport(
  driver: string,
  report: ((progress: ResourceProgress) => void) | undefined,
): (progress: ResourceProgress) => void {
  if (!report) return () => {};
  return (p) => {
    try {
      report(p);
    } catch (err) {
      logger().error(`branchline ${driver}: the progress callback threw; ignoring it`, { err: String(err) });
    }
  };
}
