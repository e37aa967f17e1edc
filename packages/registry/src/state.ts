import { randomBytes } from 'node:crypto';
import type { EndpointSpec, Interval, RouteTableSpec } from '@branchline/core';
import type { ResourceState } from '@branchline/core/transport';
import type { Change, GroupDoc, PendingChange, SandboxDoc, SandboxStatus } from './types.js';

/** An error that maps to an HTTP status with a JSON body a person can act on. */
export class RegistryError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/**
 * The registry's view of every sandbox and route group (tombstones included), rebuilt from the
 * store at start and advanced only by committed changes, in revision order.
 */
export class RegistryState {
  revision = 0;
  readonly sandboxes = new Map<string, SandboxDoc>();
  readonly groups = new Map<string, GroupDoc>();
  private readonly liveSandboxIds = new Map<string, string>();
  private readonly liveGroupIds = new Map<string, string>();
  private readonly keys = new Map<string, string>();

  load(revision: number, sandboxes: SandboxDoc[], groups: GroupDoc[]): void {
    this.revision = revision;
    for (const s of sandboxes) this.put('sandbox', s);
    for (const g of groups) this.put('group', g);
  }

  /** Applies a committed change; returns false when it was already applied. */
  apply(c: Change): boolean {
    if (c.revision <= this.revision) return false;
    this.revision = c.revision;
    if (c.type === 'forget') this.drop(c.kind, c.id);
    else if (c.object) this.put(c.kind, c.object);
    return true;
  }

  private drop(kind: 'sandbox' | 'group', id: string): void {
    const map = kind === 'sandbox' ? this.sandboxes : this.groups;
    const old = map.get(id);
    if (!old) return;
    map.delete(id);
    if (old.deletedAt == null) {
      (kind === 'sandbox' ? this.liveSandboxIds : this.liveGroupIds).delete(old.name);
      if (this.keys.get(old.key) === `${kind} ${old.name}`) this.keys.delete(old.key);
    }
  }

  private put(kind: 'sandbox' | 'group', doc: SandboxDoc | GroupDoc): void {
    this.drop(kind, doc.id);
    if (kind === 'sandbox') this.sandboxes.set(doc.id, doc as SandboxDoc);
    else this.groups.set(doc.id, doc as GroupDoc);
    if (doc.deletedAt == null) {
      (kind === 'sandbox' ? this.liveSandboxIds : this.liveGroupIds).set(doc.name, doc.id);
      this.keys.set(doc.key, `${kind} ${doc.name}`);
    }
  }

  sandbox(name: string): SandboxDoc | undefined {
    const id = this.liveSandboxIds.get(name);
    return id === undefined ? undefined : this.sandboxes.get(id);
  }

  group(name: string): GroupDoc | undefined {
    const id = this.liveGroupIds.get(name);
    return id === undefined ? undefined : this.groups.get(id);
  }

  /** "sandbox NAME" or "group NAME" when a live object holds `key`. */
  keyOwner(key: string): string | undefined {
    return this.keys.get(key);
  }

  liveSandboxes(): SandboxDoc[] {
    const out: SandboxDoc[] = [];
    for (const id of this.liveSandboxIds.values()) out.push(this.sandboxes.get(id)!);
    return out;
  }

  liveGroups(): GroupDoc[] {
    const out: GroupDoc[] = [];
    for (const id of this.liveGroupIds.values()) out.push(this.groups.get(id)!);
    return out;
  }

  get liveSandboxCount(): number {
    return this.liveSandboxIds.size;
  }

  get liveGroupCount(): number {
    return this.liveGroupIds.size;
  }

  /** A core route table document: live objects and tombstones with their history. */
  tableSpec(completeUntil?: number): RouteTableSpec {
    return {
      revision: this.revision,
      completeUntil,
      sandboxes: [...this.sandboxes.values()],
      groups: [...this.groups.values()],
    };
  }
}

export function newId(): string {
  return `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
}

/** Lists every endpoint of a spec as arrays. */
export function endpointArrays(ep: EndpointSpec | undefined): { http: string[]; grpc: string[] } {
  const arr = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
  return { http: arr(ep?.http), grpc: arr(ep?.grpc) };
}

/** Declared overrides merged with announced endpoints; a service without endpoints is absent. */
export function effectiveOverrides(
  declared: Record<string, EndpointSpec>,
  announced: Record<string, { http: string[]; grpc: string[] }>,
): Record<string, EndpointSpec> {
  const out: Record<string, EndpointSpec> = {};
  const services = new Set([...Object.keys(declared), ...Object.keys(announced)]);
  for (const svc of services) {
    const d = endpointArrays(declared[svc]);
    const a = announced[svc] ?? { http: [], grpc: [] };
    const http = [...new Set([...d.http, ...a.http])];
    const grpc = [...new Set([...d.grpc, ...a.grpc])];
    if (!http.length && !grpc.length) continue;
    const ep: EndpointSpec = {};
    if (http.length) ep.http = http.length === 1 ? http[0] : http;
    if (grpc.length) ep.grpc = grpc.length === 1 ? grpc[0] : grpc;
    out[svc] = ep;
  }
  return out;
}

/** Opens an interval for services that start routing at `time`, closes those that stop. */
export function advanceHistory(
  history: Record<string, Interval[]>,
  before: Record<string, EndpointSpec>,
  after: Record<string, EndpointSpec>,
  time: number,
): Record<string, Interval[]> {
  const out: Record<string, Interval[]> = {};
  for (const [svc, list] of Object.entries(history)) out[svc] = list.map((iv) => ({ ...iv }));
  for (const svc of Object.keys(after)) {
    if (before[svc]) continue;
    const list = out[svc] ?? [];
    const last = list[list.length - 1];
    if (!last || last.to != null) list.push({ from: time });
    out[svc] = list;
  }
  for (const svc of Object.keys(before)) {
    if (after[svc]) continue;
    const last = out[svc]?.[out[svc]!.length - 1];
    if (last && last.to == null) last.to = time;
  }
  return out;
}

export function sandboxStatus(resources: Record<string, ResourceState>, deleted: boolean): SandboxStatus {
  const list = Object.values(resources);
  if (deleted) return list.length ? 'deleting' : 'deleted';
  if (list.some((r) => r.status === 'failed')) return 'failed';
  if (list.some((r) => r.status !== 'ready')) return 'provisioning';
  return 'ready';
}

/**
 * A sandbox's label by name, own labels only: `labels.constructor` or `labels.toString` would
 * otherwise find Object.prototype's, and every sandbox would "have" them.
 */
export function labelValue(labels: Record<string, string>, name: string): string | undefined {
  return Object.hasOwn(labels, name) ? labels[name] : undefined;
}

export function groupMatches(g: GroupDoc, s: SandboxDoc): boolean {
  const want = Object.entries(g.match.labels);
  if (want.length === 0) return false;
  if (g.match.mode === 'any') return want.some(([k, v]) => labelValue(s.labels, k) === v);
  return want.every(([k, v]) => labelValue(s.labels, k) === v);
}

/** A tombstone for `s` at `time`: every open history interval closes, so it stops routing. */
export function tombstoneSandbox(s: SandboxDoc, time: number, reason: string): SandboxDoc {
  const resources: Record<string, ResourceState> = {};
  for (const [n, r] of Object.entries(s.resources)) {
    resources[n] = { ...r, status: 'deleting', progress: undefined, error: undefined };
  }
  return {
    ...s,
    history: advanceHistory(s.history, s.overrides, {}, time),
    deletedAt: time,
    deleteReason: reason,
    resources,
    status: sandboxStatus(resources, true),
    updatedAt: time,
  };
}

/**
 * Groups with `expireWhenUnmatched` that matched one of `before` and match none of the live
 * sandboxes after a change: deleted in the same write.
 */
export function unmatchedGroups(state: RegistryState, changed: SandboxDoc[], time: number): PendingChange[] {
  const out: PendingChange[] = [];
  const changedIds = new Set(changed.map((s) => s.id));
  for (const g of state.liveGroups()) {
    if (!g.expireWhenUnmatched) continue;
    const before = changed.some((s) => {
      const old = state.sandboxes.get(s.id);
      return old && old.deletedAt == null && groupMatches(g, old);
    });
    if (!before) continue;
    const live = state.liveSandboxes().filter((s) => !changedIds.has(s.id));
    for (const s of changed) if (s.deletedAt == null) live.push(s);
    if (live.some((s) => groupMatches(g, s))) continue;
    const tomb: GroupDoc = { ...g, deletedAt: time, deleteReason: 'unmatched', updatedAt: time };
    out.push({ type: 'remove', kind: 'group', id: g.id, name: g.name, object: tomb });
  }
  return out;
}

/** A routing key for a new sandbox: its name when free, else the name with a random suffix. */
export function generateKey(state: RegistryState, name: string): string {
  if (!state.keyOwner(name)) return name;
  for (;;) {
    const suffix = randomBytes(3).toString('hex');
    const key = `${name.slice(0, 56)}-${suffix}`;
    if (!state.keyOwner(key)) return key;
  }
}
