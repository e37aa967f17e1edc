import {
  guardProgressReport,
  type SandboxDatabaseDropRequest,
  type SandboxDatabaseProvisionRequest,
} from '@branchline/core/transport';
import type { ResourceProgress, SnapshotMethod } from './types.js';

// What SandboxDatabases' operations are asked to do.

export type Report = (progress: ResourceProgress) => void;

export interface ProvisionRequest extends SandboxDatabaseProvisionRequest {
  /** Take a fresh snapshot of the source first. */
  refresh?: boolean;
}

export interface DropRequest extends SandboxDatabaseDropRequest {}

export interface SnapshotRequest {
  method?: SnapshotMethod;
  /** Only take a snapshot when there is none (provisioning uses this). */
  ifMissing?: boolean;
  onProgress?: Report;
  signal?: AbortSignal;
}

/** `report`, made safe: a throwing progress callback is logged and ignored. */
export function guardReport(report: Report | undefined): Report {
  return guardProgressReport('pg', report);
}
