import type { Change, GroupDoc, PendingChange, SandboxDoc } from './types.js';

/** What the store hands a write: the registry time of the write and changes this replica missed. */
export interface WriteContext {
  /** Registry time of this write: never earlier than any earlier write or announced completeUntil. */
  time: number;
  /** Changes committed (by another replica) after `knownRevision`; apply them before deciding. */
  missed: Change[];
}

export interface Secret {
  /** sha256 of the sandbox-scoped token returned once at creation. */
  tokenHash?: string;
  /** Resource outputs (connection details), per resource name. */
  outputs?: Record<string, Record<string, unknown>>;
}

export interface Lease {
  sandboxId: string;
  service: string;
  transport: 'http' | 'grpc';
  endpoint: string;
  expiresAt: number;
}

export interface LoadedState {
  revision: number;
  sandboxes: SandboxDoc[];
  groups: GroupDoc[];
  /** Recent changes, oldest first, so watchers can resume across a restart. */
  recent: Change[];
}

/**
 * Durable state of the registry. Writes are serialised (one at a time across every replica) so
 * revision order is commit order and write times never go backwards.
 */
export interface Store {
  readonly description: string;
  open(recentLimit: number): Promise<LoadedState>;
  /**
   * Runs one write transaction: locks, calls `decide` with the write time and missed changes,
   * persists the changes it returns with consecutive revisions, commits. A throw rolls back.
   */
  write<T>(
    knownRevision: number,
    decide: (ctx: WriteContext) => { changes: PendingChange[]; result: T },
  ): Promise<{ committed: Change[]; missed: Change[]; result: T }>;
  /** Changes after `revision`, oldest first. */
  changesSince(revision: number): Promise<Change[]>;
  /**
   * The committed revision and the registry time up to which every write has committed: no
   * write with an earlier time can commit after this call returns.
   */
  horizon(): Promise<{ revision: number; completeUntil: number }>;
  /** Called with a revision whenever another replica commits (PostgreSQL LISTEN/NOTIFY). */
  onRemoteCommit(listener: (revision: number) => void): void;
  pruneChanges(keep: number): Promise<void>;
  getSecret(id: string): Promise<Secret | undefined>;
  putSecret(id: string, secret: Secret): Promise<void>;
  touchLease(lease: Lease): Promise<void>;
  dropLease(lease: Omit<Lease, 'expiresAt'>): Promise<void>;
  expiredLeases(now: number): Promise<Lease[]>;
  /**
   * Claims `key` for `holder` for `ttlMs` (renewing it when `holder` already has it); true when
   * `holder` has it now. Replicas claim a sandbox before provisioning its resources, so one of
   * them runs the hooks; a crashed replica's claim runs out and another one takes over.
   */
  claim(key: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Gives a claim up (no-op unless `holder` has it). */
  releaseClaim(key: string, holder: string): Promise<void>;
  /**
   * Records a webhook delivery id; false when it is already recorded (a repeat), atomically
   * across replicas. Only the `keep` most recently recorded ids are kept.
   */
  recordDelivery(id: string, keep: number): Promise<boolean>;
  /** Forgets a recorded delivery id (its processing failed, so a redelivery may run it). */
  forgetDelivery(id: string): Promise<void>;
  close(): Promise<void>;
}

export function rowToChange(r: {
  revision: number | bigint | string;
  time: number | bigint | string;
  type: string;
  kind: string;
  id: string;
  name: string;
  doc: string | null;
}): Change {
  const c: Change = {
    revision: Number(r.revision),
    time: Number(r.time),
    type: r.type as Change['type'],
    kind: r.kind as Change['kind'],
    id: r.id,
    name: r.name,
  };
  if (r.doc) c.object = JSON.parse(r.doc);
  return c;
}
