import { logger } from '@branchline/core/transport';
import type { ResourceProgress, SnapshotMethod } from './types.js';

// What SandboxDatabases' operations are asked to do.

export type Report = (progress: ResourceProgress) => void;

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

/** `report`, made safe: a throwing progress callback is logged and ignored. */
export function guardReport(report: Report | undefined): Report {
  if (!report) return () => {};
  return (p) => {
    try {
      report(p);
    } catch (err) {
      logger().error('branchline pg: the progress callback threw; ignoring it', { err: String(err) });
    }
  };
}
