import type { RouteTable } from './routes.js';

// The contract every route source implements. Only types: the sources themselves
// (static-source.ts, registry-source.ts) import this file, never the other way round.

export interface RouteSourceStatus {
  /** At least one complete table has been received. */
  synced: boolean;
  /** Wall-clock time (ms) of the last successful sync or heartbeat. */
  lastSyncAt?: number;
  /** The source is currently not connected to its origin (it keeps the last known table). */
  stale: boolean;
  /** Last error, for logs and health endpoints. */
  error?: string;
}

export type RouteListener = (table: RouteTable) => void;

/** Where a process gets its route table from: a static document or the registry. */
export interface RouteSource {
  /** The current table; undefined until the first sync (queue consumers hold until then). */
  readonly table: RouteTable | undefined;
  readonly status: RouteSourceStatus;
  /** Resolves with the table once synced, or with undefined after `timeoutMs`. */
  ready(timeoutMs?: number): Promise<RouteTable | undefined>;
  /** Called with each new table (including heartbeats that only advance `completeUntil`). */
  subscribe(listener: RouteListener): () => void;
  close(): Promise<void>;
}
