import type { EndpointSpec, Interval } from '@branchline/core';
import type { ResourceState } from '@branchline/core/transport';

/** Where a sandbox stands: its resources' provisioning, or its deletion. */
export type SandboxStatus = 'provisioning' | 'ready' | 'failed' | 'deleting' | 'deleted';

/**
 * A sandbox as the registry stores and serves it: a superset of core's `SandboxSpec`, so a
 * watcher can hand it to `RouteTable` as is. Times are registry time (ms since the epoch).
 */
export interface SandboxDoc {
  /** Unique per incarnation: a name reused after deletion gets a new id (tombstones keep theirs). */
  id: string;
  name: string;
  key: string;
  /** Effective routing: declared overrides merged with endpoints announced by heartbeats. */
  overrides: Record<string, EndpointSpec>;
  /** The overrides given by PUT. */
  declared: Record<string, EndpointSpec>;
  /** Endpoints announced by `POST /v1/sandboxes/:name/heartbeat`, per service. */
  announced: Record<string, { http: string[]; grpc: string[] }>;
  labels: Record<string, string>;
  createdAt: number;
  expiresAt: number | null;
  deletedAt: number | null;
  deleteReason?: string;
  /** Per service, when the override routed (registry time, `to` exclusive). */
  history: Record<string, Interval[]>;
  resources: Record<string, ResourceState>;
  status: SandboxStatus;
  updatedAt: number;
}

export interface GroupDoc {
  id: string;
  name: string;
  key: string;
  match: { labels: Record<string, string>; mode: 'all' | 'any' };
  createdAt: number;
  expiresAt: number | null;
  deletedAt: number | null;
  deleteReason?: string;
  /** Delete the group as soon as no live sandbox matches it any more (after it matched one). */
  expireWhenUnmatched: boolean;
  updatedAt: number;
}

export type ObjectKind = 'sandbox' | 'group';

/**
 * One committed change. `remove` turns an object into a tombstone (the object carries
 * `deletedAt`); `forget` drops a tombstone whose retention ran out.
 */
export interface Change {
  revision: number;
  time: number;
  type: 'add' | 'replace' | 'remove' | 'forget';
  kind: ObjectKind;
  id: string;
  name: string;
  object?: SandboxDoc | GroupDoc;
}

export type PendingChange = Omit<Change, 'revision' | 'time'>;
