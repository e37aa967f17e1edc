import { explainInvalidKey, isValidRoutingKey, isValidSandboxName, isValidServiceName } from './rules.js';

/** Where a sandbox's version of a service listens. Several addresses are balanced round-robin. */
export interface EndpointSpec {
  /** Base URL such as `http://10.0.3.7:8080`. */
  http?: string | string[];
  /** gRPC target such as `10.0.3.7:50051`. */
  grpc?: string | string[];
}

/** A span of registry time (ms since epoch), `to` exclusive; open-ended while `to` is absent. */
export interface Interval {
  from: number;
  to?: number | null;
}

export interface SandboxSpec {
  name: string;
  /** The routing key that selects this sandbox. */
  key: string;
  /** service → endpoints of this sandbox's version of that service. */
  overrides?: Record<string, EndpointSpec>;
  labels?: Record<string, string>;
  createdAt?: number;
  expiresAt?: number | null;
  /** Set on a tombstone: the sandbox was deleted at this registry time. */
  deletedAt?: number | null;
  /**
   * Per service, the registry-time intervals during which the override routed. Queue consumers
   * decide by a message's time against these; without them an override counts from `createdAt`.
   */
  history?: Record<string, Interval[]>;
  /** Opaque resource declarations and state (databases, queues), owned by their packages. */
  resources?: Record<string, unknown>;
}

export interface RouteGroupSpec {
  name: string;
  key: string;
  match: { labels: Record<string, string>; mode?: 'all' | 'any' };
  createdAt?: number;
  expiresAt?: number | null;
  deletedAt?: number | null;
}

export interface RouteTableSpec {
  /** Registry revision this table reflects (0 for static tables). */
  revision?: number;
  /**
   * Registry time up to which this view is complete: no change with an earlier time can still
   * arrive. Queue consumers hold a message whose time is later. Static tables: complete forever.
   */
  completeUntil?: number;
  sandboxes?: SandboxSpec[];
  groups?: RouteGroupSpec[];
}

/** The answer to "where does (service, key) go": a sandbox and its endpoints. */
export interface Rule {
  readonly service: string;
  readonly key: string;
  readonly sandbox: string;
  /** Set when the key is a route group's. */
  readonly group?: string;
  readonly http: readonly string[];
  readonly grpc: readonly string[];
}

/** Two sandboxes matched by one route group override the same service. The older one wins. */
export interface RouteConflict {
  group: string;
  service: string;
  winner: string;
  losers: string[];
}

export class RouteTableError extends Error {
  constructor(
    readonly path: string,
    readonly value: unknown,
    reason: string,
  ) {
    super(`branchline route table: ${path} ${reason} (got ${preview(value)})`);
    this.name = 'RouteTableError';
  }
}

function preview(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 120 ? `${s.slice(0, 120)}…` : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optTime(v: unknown, path: string): void {
  if (v === undefined || v === null) return;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new RouteTableError(path, v, 'must be a time in ms since the epoch');
}

function checkUrl(v: unknown, path: string, kind: 'http' | 'grpc'): string {
  if (typeof v !== 'string' || v.length === 0)
    throw new RouteTableError(path, v, 'must be a non-empty string');
  if (kind === 'http') {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      throw new RouteTableError(path, v, 'must be an absolute http(s) URL such as "http://10.0.0.7:8080"');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new RouteTableError(path, v, 'must use http: or https:');
    return v.endsWith('/') ? v.slice(0, -1) : v;
  }
  return v;
}

function endpoints(v: unknown, path: string, kind: 'http' | 'grpc'): string[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x, i) => checkUrl(x, Array.isArray(v) ? `${path}[${i}]` : path, kind));
}

function validateSandbox(s: unknown, path: string): SandboxSpec {
  if (!isObject(s)) throw new RouteTableError(path, s, 'must be an object');
  if (typeof s.name !== 'string' || !isValidSandboxName(s.name)) {
    throw new RouteTableError(
      `${path}.name`,
      s.name,
      'must be a DNS-label-like name (lowercase letters, digits, hyphens)',
    );
  }
  if (!isValidRoutingKey(s.key))
    throw new RouteTableError(`${path}.key`, s.key, `is not a routing key: ${explainInvalidKey(s.key)}`);
  if (s.overrides !== undefined) {
    if (!isObject(s.overrides))
      throw new RouteTableError(`${path}.overrides`, s.overrides, 'must map service names to endpoints');
    for (const [svc, ep] of Object.entries(s.overrides)) {
      const p = `${path}.overrides.${svc}`;
      if (!isValidServiceName(svc)) throw new RouteTableError(p, svc, 'is not a valid service name');
      if (!isObject(ep))
        throw new RouteTableError(p, ep, 'must be an object like {"http": "http://host:port"}');
      endpoints(ep.http, `${p}.http`, 'http');
      endpoints(ep.grpc, `${p}.grpc`, 'grpc');
    }
  }
  if (s.labels !== undefined) {
    if (!isObject(s.labels))
      throw new RouteTableError(`${path}.labels`, s.labels, 'must be an object of strings');
    for (const [k, v] of Object.entries(s.labels)) {
      if (typeof v !== 'string') throw new RouteTableError(`${path}.labels.${k}`, v, 'must be a string');
    }
  }
  optTime(s.createdAt, `${path}.createdAt`);
  optTime(s.expiresAt, `${path}.expiresAt`);
  optTime(s.deletedAt, `${path}.deletedAt`);
  if (s.history !== undefined) {
    if (!isObject(s.history))
      throw new RouteTableError(`${path}.history`, s.history, 'must map services to intervals');
    for (const [svc, list] of Object.entries(s.history)) {
      if (!Array.isArray(list))
        throw new RouteTableError(`${path}.history.${svc}`, list, 'must be an array of {from, to}');
      list.forEach((iv, i) => {
        const p = `${path}.history.${svc}[${i}]`;
        if (!isObject(iv)) throw new RouteTableError(p, iv, 'must be {from, to}');
        optTime(iv.from, `${p}.from`);
        if (typeof iv.from !== 'number') throw new RouteTableError(`${p}.from`, iv.from, 'is required');
        optTime(iv.to, `${p}.to`);
      });
    }
  }
  return s as unknown as SandboxSpec;
}

function validateGroup(g: unknown, path: string): RouteGroupSpec {
  if (!isObject(g)) throw new RouteTableError(path, g, 'must be an object');
  if (typeof g.name !== 'string' || !isValidSandboxName(g.name))
    throw new RouteTableError(`${path}.name`, g.name, 'must be a DNS-label-like name');
  if (!isValidRoutingKey(g.key))
    throw new RouteTableError(`${path}.key`, g.key, `is not a routing key: ${explainInvalidKey(g.key)}`);
  if (!isObject(g.match) || !isObject(g.match.labels)) {
    throw new RouteTableError(`${path}.match`, g.match, 'must be {"labels": {...}, "mode": "all" | "any"}');
  }
  if (g.match.mode !== undefined && g.match.mode !== 'all' && g.match.mode !== 'any') {
    throw new RouteTableError(`${path}.match.mode`, g.match.mode, 'must be "all" or "any"');
  }
  optTime(g.createdAt, `${path}.createdAt`);
  optTime(g.deletedAt, `${path}.deletedAt`);
  optTime(g.expiresAt, `${path}.expiresAt`);
  return g as unknown as RouteGroupSpec;
}

/** Checks a route table document; throws a RouteTableError naming the field and the bad value. */
export function validateRouteTableSpec(input: unknown): RouteTableSpec {
  if (!isObject(input))
    throw new RouteTableError('(root)', input, 'must be an object with "sandboxes" and optional "groups"');
  const sandboxes = input.sandboxes ?? [];
  const groups = input.groups ?? [];
  if (!Array.isArray(sandboxes)) throw new RouteTableError('sandboxes', sandboxes, 'must be an array');
  if (!Array.isArray(groups)) throw new RouteTableError('groups', groups, 'must be an array');
  optTime(input.completeUntil, 'completeUntil');
  if (input.revision !== undefined && (typeof input.revision !== 'number' || input.revision < 0)) {
    throw new RouteTableError('revision', input.revision, 'must be a non-negative number');
  }
  const liveKeys = new Map<string, string>();
  const names = new Set<string>();
  sandboxes.forEach((s, i) => {
    const sb = validateSandbox(s, `sandboxes[${i}]`);
    if (sb.deletedAt != null) return;
    if (names.has(sb.name))
      throw new RouteTableError(`sandboxes[${i}].name`, sb.name, 'is used by another live sandbox');
    names.add(sb.name);
    const other = liveKeys.get(sb.key);
    if (other) throw new RouteTableError(`sandboxes[${i}].key`, sb.key, `is already the key of ${other}`);
    liveKeys.set(sb.key, `sandbox ${sb.name}`);
  });
  groups.forEach((g, i) => {
    const gr = validateGroup(g, `groups[${i}]`);
    if (gr.deletedAt != null) return;
    const other = liveKeys.get(gr.key);
    if (other) throw new RouteTableError(`groups[${i}].key`, gr.key, `is already the key of ${other}`);
    liveKeys.set(gr.key, `group ${gr.name}`);
  });
  return input as RouteTableSpec;
}

function matches(group: RouteGroupSpec, s: SandboxSpec): boolean {
  const want = Object.entries(group.match.labels);
  if (want.length === 0) return false;
  const labels = s.labels ?? {};
  if (group.match.mode === 'any') return want.some(([k, v]) => labels[k] === v);
  return want.every(([k, v]) => labels[k] === v);
}

/** Older sandbox first, then by name: the documented winner of a route-group conflict. */
function byAge(a: SandboxSpec, b: SandboxSpec): number {
  const d = (a.createdAt ?? 0) - (b.createdAt ?? 0);
  return d !== 0 ? d : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function contains(iv: Interval, at: number): boolean {
  return iv.from <= at && (iv.to == null || at < iv.to);
}

/** Whether sandbox `s` routed `service` at registry time `at`. */
function overrideActiveAt(s: SandboxSpec, service: string, at: number): boolean {
  if (s.deletedAt != null && at >= s.deletedAt) return false;
  const hist = s.history?.[service];
  if (hist) return hist.some((iv) => contains(iv, at));
  if (!s.overrides?.[service]) return false;
  return (s.createdAt ?? Number.NEGATIVE_INFINITY) <= at;
}

function groupActiveAt(g: RouteGroupSpec, at: number): boolean {
  if (g.deletedAt != null && at >= g.deletedAt) return false;
  return (g.createdAt ?? Number.NEGATIVE_INFINITY) <= at;
}

const EMPTY: readonly string[] = Object.freeze([]);
const EMPTY_SANDBOXES: readonly SandboxSpec[] = Object.freeze([]);
const EMPTY_CONFLICTS: readonly RouteConflict[] = Object.freeze([]);

function freezeList(list: string[]): readonly string[] {
  return list.length ? Object.freeze(list) : EMPTY;
}

interface KeyHistory {
  sandboxes: SandboxSpec[];
  groups: RouteGroupSpec[];
}

/**
 * What changed since a table was built, for `RouteTable.derive`: the full lists after the
 * change (in the order a rebuild would get them) and each changed document as (before, after),
 * where `before` is the very object the table was built from and either side may be absent.
 */
export interface RouteTableChange {
  revision?: number;
  completeUntil?: number;
  sandboxes: SandboxSpec[];
  groups: RouteGroupSpec[];
  changedSandboxes: readonly (readonly [SandboxSpec | undefined, SandboxSpec | undefined])[];
  /** Whether any route group was added, replaced or removed (the table is then rebuilt). */
  groupsChanged: boolean;
}

/** A live group's rules (the oldest member wins a service) and its conflicts. */
function compileGroup(
  g: RouteGroupSpec,
  members: readonly SandboxSpec[],
): { rules: Map<string, Rule>; conflicts: RouteConflict[] } {
  const rules = new Map<string, Rule>();
  const conflicts: RouteConflict[] = [];
  const seen = new Map<string, RouteConflict | null>();
  for (const s of members) {
    for (const [service, ep] of Object.entries(s.overrides ?? {})) {
      const prior = seen.get(service);
      if (prior === undefined) {
        seen.set(service, null);
        rules.set(
          service,
          Object.freeze({ service, key: g.key, sandbox: s.name, group: g.name, ...compileEndpoints(ep) }),
        );
      } else if (prior === null) {
        const c: RouteConflict = {
          group: g.name,
          service,
          winner: rules.get(service)?.sandbox ?? '',
          losers: [s.name],
        };
        conflicts.push(c);
        seen.set(service, c);
      } else {
        prior.losers.push(s.name);
      }
    }
  }
  return { rules, conflicts };
}

/** The compiled maps a table answers from; a derived table shares every one it did not change. */
interface Compiled {
  byKey: Map<string, Map<string, Rule>>;
  historyByKey: Map<string, KeyHistory>;
  byName: Map<string, SandboxSpec>;
  services: Set<string>;
  /** Live sandboxes overriding each service, so `derive` can keep `services` without a scan. */
  serviceCount: Map<string, number>;
  liveMembers: Map<string, readonly SandboxSpec[]>;
  groupConflicts: Map<string, readonly RouteConflict[]>;
  conflicts: readonly RouteConflict[];
}

/** A map that is copied on its first write, for `derive`: unchanged maps stay shared. */
class CopyOnWrite<K, V> {
  private owned = false;
  constructor(private map: Map<K, V>) {}
  get(k: K): V | undefined {
    return this.map.get(k);
  }
  has(k: K): boolean {
    return this.map.has(k);
  }
  set(k: K, v: V): void {
    if (this.map.get(k) !== v || !this.map.has(k)) this.writable().set(k, v);
  }
  delete(k: K): void {
    if (this.map.has(k)) this.writable().delete(k);
  }
  get result(): Map<K, V> {
    return this.map;
  }
  private writable(): Map<K, V> {
    if (!this.owned) {
      this.map = new Map(this.map);
      this.owned = true;
    }
    return this.map;
  }
}

function compile(
  all: readonly SandboxSpec[],
  live: readonly SandboxSpec[],
  groups: readonly RouteGroupSpec[],
): Compiled {
  const c: Compiled = {
    byKey: new Map(),
    historyByKey: new Map(),
    byName: new Map(),
    services: new Set(),
    serviceCount: new Map(),
    liveMembers: new Map(),
    groupConflicts: new Map(),
    conflicts: EMPTY_CONFLICTS,
  };
  const historyOf = (key: string): KeyHistory => {
    let h = c.historyByKey.get(key);
    if (!h) {
      h = { sandboxes: [], groups: [] };
      c.historyByKey.set(key, h);
    }
    return h;
  };
  const put = (rule: Rule): void => {
    let m = c.byKey.get(rule.key);
    if (!m) {
      m = new Map();
      c.byKey.set(rule.key, m);
    }
    m.set(rule.service, Object.freeze(rule));
  };
  for (const s of all) {
    historyOf(s.key).sandboxes.push(s);
    if (s.deletedAt != null) continue;
    c.byName.set(s.name, s);
    for (const [service, ep] of Object.entries(s.overrides ?? {})) {
      c.services.add(service);
      c.serviceCount.set(service, (c.serviceCount.get(service) ?? 0) + 1);
      put({ service, key: s.key, sandbox: s.name, ...compileEndpoints(ep) });
    }
  }
  const conflicts: RouteConflict[] = [];
  for (const g of groups) {
    historyOf(g.key).groups.push(g);
    if (g.deletedAt != null) continue;
    const members = live.filter((s) => matches(g, s)).sort(byAge);
    c.liveMembers.set(g.key, Object.freeze(members));
    const compiled = compileGroup(g, members);
    for (const rule of compiled.rules.values()) put(rule);
    c.groupConflicts.set(g.key, compiled.conflicts);
    conflicts.push(...compiled.conflicts);
  }
  if (conflicts.length) c.conflicts = Object.freeze(conflicts);
  return c;
}

/** Whether two sandbox versions override the same services (in the same order). */
function sameServices(a: SandboxSpec, b: SandboxSpec): boolean {
  if (a.overrides === b.overrides) return true;
  const x = Object.keys(a.overrides ?? {});
  const y = Object.keys(b.overrides ?? {});
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/**
 * An immutable, compiled route table. Sources build a new one per change and swap the
 * reference, so a reader never sees half an update. `resolve` is two Map lookups.
 */
export class RouteTable {
  readonly revision: number;
  readonly completeUntil: number;
  readonly groups: readonly RouteGroupSpec[];
  readonly conflicts: readonly RouteConflict[];
  /** The documents the table was built from, tombstones included; `sandboxes` filters them once. */
  private readonly allSandboxes: readonly SandboxSpec[];
  private liveSandboxes: readonly SandboxSpec[] | undefined;
  /** What the table answers from; `withCompleteUntil` hands it whole to the new table. */
  private readonly compiled: Compiled;
  /** Every member (tombstones included) of a group, for `owner`; filled on first use. */
  private allMembers: WeakMap<RouteGroupSpec, SandboxSpec[]> | undefined;

  static readonly empty = new RouteTable({});

  /** Validates and compiles a route table document. */
  static from(spec: unknown): RouteTable {
    return new RouteTable(validateRouteTableSpec(spec));
  }

  /**
   * Compiles an already-validated spec (use `RouteTable.from` for untrusted input). `derive`
   * passes the compiled maps instead; both ways give tables of one shape, so `resolve` on the
   * request path stays monomorphic.
   */
  constructor(spec: RouteTableSpec, compiled?: Compiled) {
    const all = spec.sandboxes ?? [];
    const groups = spec.groups ?? [];
    this.revision = spec.revision ?? 0;
    this.completeUntil = spec.completeUntil ?? Number.POSITIVE_INFINITY;
    this.groups = compiled ? groups : groups.filter((g) => g.deletedAt == null);
    this.allSandboxes = all;
    this.liveSandboxes = compiled ? undefined : all.filter((s) => s.deletedAt == null);
    const c = compiled ?? compile(all, this.liveSandboxes!, groups);
    this.conflicts = c.conflicts;
    this.compiled = c;
    this.allMembers = undefined;
  }

  /**
   * This table with a later `completeUntil` (a registry heartbeat): the compiled maps are
   * shared, nothing is recompiled.
   */
  withCompleteUntil(completeUntil: number): RouteTable {
    return new RouteTable(
      {
        revision: this.revision,
        completeUntil,
        sandboxes: this.allSandboxes as SandboxSpec[],
        groups: this.groups as RouteGroupSpec[],
      },
      this.compiled,
    );
  }

  /** The live sandboxes, in the order of the documents the table was built from. */
  get sandboxes(): readonly SandboxSpec[] {
    this.liveSandboxes ??= this.allSandboxes.filter((s) => s.deletedAt == null);
    return this.liveSandboxes;
  }

  /**
   * The table after `change`, computed from this one: only the changed sandboxes are compiled
   * and the route groups they match (before or after) re-evaluated; every map nothing wrote to
   * is shared. The result answers exactly as `new RouteTable({revision, completeUntil,
   * sandboxes, groups})` would (which it falls back to for route-group changes and large
   * batches). A registry source applies each change this way instead of recompiling every
   * sandbox.
   */
  derive(change: RouteTableChange): RouteTable {
    const revision = change.revision ?? this.revision;
    const completeUntil = change.completeUntil ?? this.completeUntil;
    const rebuild = () =>
      new RouteTable({ revision, completeUntil, sandboxes: change.sandboxes, groups: change.groups });
    const n = change.changedSandboxes.length;
    // Many changes at once (a resumed stream catching up): compiling everything costs about as much.
    if (change.groupsChanged || n > Math.max(32, change.sandboxes.length / 8)) return rebuild();
    const byKey = new CopyOnWrite(this.compiled.byKey);
    const historyByKey = new CopyOnWrite(this.compiled.historyByKey);
    const byName = new CopyOnWrite(this.compiled.byName);
    const serviceCount = new CopyOnWrite(this.compiled.serviceCount);
    const liveMembers = new CopyOnWrite(this.compiled.liveMembers);
    const groupConflicts = new CopyOnWrite(this.compiled.groupConflicts);
    // Inner maps and history entries are shared with this table until first written.
    const copied = new Set<unknown>();
    const rulesOf = (key: string): Map<string, Rule> => {
      let m = byKey.get(key);
      if (!m || !copied.has(m)) {
        m = new Map(m);
        copied.add(m);
        byKey.set(key, m);
      }
      return m;
    };
    const historyOf = (key: string): KeyHistory => {
      let h = historyByKey.get(key);
      if (!h || !copied.has(h)) {
        h = { sandboxes: [...(h?.sandboxes ?? [])], groups: [...(h?.groups ?? [])] };
        copied.add(h);
        historyByKey.set(key, h);
      }
      return h;
    };
    const grouped = this.groups.length > 0;
    const touched = new Set<RouteGroupSpec>();
    const gone = new Set<SandboxSpec>();
    let servicesChanged = false;
    for (const [before, after] of change.changedSandboxes) {
      // A sandbox sharing a key with a live group: let the rebuild decide as it always has.
      if ((before && liveMembers.has(before.key)) || (after && liveMembers.has(after.key))) return rebuild();
      // A live sandbox replaced by a live version of itself with the same services: the
      // per-service counts (and so the set of overridden services) stay as they are.
      const sameCount =
        before !== undefined &&
        after !== undefined &&
        before.deletedAt == null &&
        after.deletedAt == null &&
        sameServices(before, after);
      if (before) {
        const h = historyOf(before.key);
        const i = h.sandboxes.indexOf(before);
        if (i < 0) return rebuild();
        if (after && after.key === before.key) h.sandboxes[i] = after;
        else h.sandboxes.splice(i, 1);
        if (h.sandboxes.length === 0 && h.groups.length === 0) historyByKey.delete(before.key);
        if (before.deletedAt == null) {
          if (grouped) gone.add(before);
          if (byName.get(before.name) === before) byName.delete(before.name);
          const services = Object.keys(before.overrides ?? {});
          if (services.length) {
            const rules = rulesOf(before.key);
            for (const service of services) {
              if (rules.get(service)?.sandbox === before.name) rules.delete(service);
              if (sameCount) continue;
              const left = (serviceCount.get(service) ?? 1) - 1;
              if (left > 0) serviceCount.set(service, left);
              else {
                serviceCount.delete(service);
                servicesChanged = true;
              }
            }
            if (rules.size === 0) byKey.delete(before.key);
          }
        }
      }
      if (after) {
        if (!before || after.key !== before.key) historyOf(after.key).sandboxes.push(after);
        if (after.deletedAt == null) {
          if (grouped) gone.delete(after);
          byName.set(after.name, after);
          const entries = Object.entries(after.overrides ?? {});
          if (entries.length) {
            const rules = rulesOf(after.key);
            for (const [service, ep] of entries) {
              if (!sameCount) {
                const count = serviceCount.get(service) ?? 0;
                if (count === 0) servicesChanged = true;
                serviceCount.set(service, count + 1);
              }
              rules.set(
                service,
                Object.freeze({ service, key: after.key, sandbox: after.name, ...compileEndpoints(ep) }),
              );
            }
          }
        }
      }
      if (grouped)
        for (const g of this.groups)
          if (
            (before && before.deletedAt == null && matches(g, before)) ||
            (after && after.deletedAt == null && matches(g, after))
          )
            touched.add(g);
    }
    let conflicts = this.conflicts;
    if (touched.size) {
      const added = change.changedSandboxes
        .map(([, after]) => after)
        .filter((s): s is SandboxSpec => s !== undefined && s.deletedAt == null);
      for (const g of touched) {
        const members = (liveMembers.get(g.key) ?? EMPTY_SANDBOXES).filter((s) => !gone.has(s));
        for (const s of added) if (!members.includes(s) && matches(g, s)) members.push(s);
        // A sandbox changed twice in one batch: only its latest version is live.
        const live = members.filter((s) => byName.get(s.name) === s).sort(byAge);
        liveMembers.set(g.key, Object.freeze(live));
        const compiled = compileGroup(g, live);
        if (compiled.rules.size) byKey.set(g.key, compiled.rules);
        else byKey.delete(g.key);
        groupConflicts.set(g.key, compiled.conflicts);
      }
      const all = this.groups.flatMap((g) => groupConflicts.get(g.key) ?? []);
      conflicts = all.length ? Object.freeze(all) : EMPTY_CONFLICTS;
    }
    return new RouteTable(
      { revision, completeUntil, sandboxes: change.sandboxes, groups: this.groups as RouteGroupSpec[] },
      {
        byKey: byKey.result,
        historyByKey: historyByKey.result,
        byName: byName.result,
        services: servicesChanged ? new Set(serviceCount.result.keys()) : this.compiled.services,
        serviceCount: serviceCount.result,
        liveMembers: liveMembers.result,
        groupConflicts: groupConflicts.result,
        conflicts,
      },
    );
  }

  /** Every sandbox (tombstones included) a group's labels match, oldest first; computed once. */
  private membersOf(g: RouteGroupSpec): SandboxSpec[] {
    this.allMembers ??= new WeakMap();
    let list = this.allMembers.get(g);
    if (!list) {
      list = [];
      for (const h of this.compiled.historyByKey.values())
        for (const s of h.sandboxes) if (matches(g, s)) list.push(s);
      list.sort(byAge);
      this.allMembers.set(g, list);
    }
    return list;
  }

  /** The rule that sends (service, key) to a sandbox now, or undefined for baseline. */
  resolve(service: string, key: string | undefined): Rule | undefined {
    if (key === undefined) return undefined;
    return this.compiled.byKey.get(key)?.get(service);
  }

  /**
   * The live sandboxes a live route group (by its key) matches, oldest first — the order in
   * which they win conflicts. Empty for an unknown key.
   */
  groupMembers(key: string): readonly SandboxSpec[] {
    return this.compiled.liveMembers.get(key) ?? EMPTY_SANDBOXES;
  }

  /** The live sandbox called `name`. */
  sandbox(name: string): SandboxSpec | undefined {
    return this.compiled.byName.get(name);
  }

  /** Whether any live sandbox overrides `service`. */
  isOverridden(service: string): boolean {
    return this.compiled.services.has(service);
  }

  /** Every live rule, for listings. */
  rules(): Rule[] {
    const out: Rule[] = [];
    for (const m of this.compiled.byKey.values()) for (const r of m.values()) out.push(r);
    return out;
  }

  /**
   * The sandbox that owns messages of (service, key): at registry time `at` when given (using
   * override history and tombstones, so every consumer that sees the same message agrees), or
   * now. Undefined means the baseline owns it.
   */
  owner(service: string, key: string | undefined, at?: number): string | undefined {
    if (key === undefined) return undefined;
    if (at === undefined) return this.resolve(service, key)?.sandbox;
    const h = this.compiled.historyByKey.get(key);
    if (!h) return undefined;
    for (const s of h.sandboxes) if (overrideActiveAt(s, service, at)) return s.name;
    for (const g of h.groups) {
      if (!groupActiveAt(g, at)) continue;
      // Members are sorted oldest first, so the first active one is the conflict winner.
      for (const s of this.membersOf(g)) if (overrideActiveAt(s, service, at)) return s.name;
    }
    return undefined;
  }
}

function compileEndpoints(ep: EndpointSpec): { http: readonly string[]; grpc: readonly string[] } {
  return {
    http: freezeList(endpoints(ep.http, 'http', 'http')),
    grpc: freezeList(endpoints(ep.grpc, 'grpc', 'grpc')),
  };
}
