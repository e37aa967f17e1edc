import { getRoutingKey } from '../context.js';
import { warnRateLimited } from '../log.js';
import type { RouteTable, SandboxSpec } from '../routes.js';

export interface SandboxDatabaseSelectionOptions {
  /** Adapter name in messages (`branchline <driver>: …`) and warning codes. */
  driver: string;
  /** Resource type whose `from` names the baseline, e.g. `postgres`, `mysql`. */
  type: string;
  /** The baseline database name (what resources name in `from`). */
  source: string;
  /** Name prefix of sandbox databases. */
  prefix: string;
  /** This service's name, matched against a resource's `services`. */
  service?: string;
  /** The sandbox this process belongs to: it always uses its own sandbox's database. */
  sandbox?: string;
  /** Picks the database of a sandbox instead of the built-in rule. */
  resolveDatabase?: (sandbox: SandboxSpec) => string | undefined;
  /** The adapter's sandbox database name (the one its resource hook creates). */
  databaseName(source: string, sandbox: string, prefix: string): string;
}

interface ResourceLike {
  type?: unknown;
  status?: unknown;
  spec?: { from?: unknown; services?: unknown };
  from?: unknown;
  services?: unknown;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Which database a routed database pool uses for the active routing key, following the route
 * table: the database of the key's sandbox (or of the sandbox that serves this service in the
 * key's group) when its resource of `type` copies `source` and is ready; the baseline otherwise.
 * A sandbox workload always uses its own sandbox's database. The adapters keep the pools; this
 * only decides.
 */
export class SandboxDatabaseSelection {
  private readonly options: SandboxDatabaseSelectionOptions;
  private keyToDb = new Map<string, string>();
  /** Keys whose sandbox declared a database that is not ready yet: routed to baseline, and said so. */
  private pendingKeys = new Set<string>();
  private ownDb: string | undefined;

  constructor(options: SandboxDatabaseSelectionOptions) {
    this.options = options;
  }

  /** This process's own sandbox database, when it is a sandbox workload whose sandbox has one. */
  get own(): string | undefined {
    return this.ownDb;
  }

  /** The database a query would use now for `key` (default: the active context's key). */
  databaseFor(key: string | undefined = getRoutingKey()): string {
    if (this.ownDb !== undefined) return this.ownDb;
    if (key === undefined) return this.options.source;
    return this.keyToDb.get(key) ?? this.options.source;
  }

  /**
   * The sandbox database the active key selects, or undefined for the baseline. Warns (rate
   * limited) when the key's sandbox database is declared but not ready yet.
   */
  select(): string | undefined {
    if (this.ownDb !== undefined) return this.ownDb;
    // No sandbox has a database for us: do not even read the key (the common case costs nothing).
    if (this.keyToDb.size === 0 && this.pendingKeys.size === 0) return undefined;
    const key = getRoutingKey();
    if (key === undefined) return undefined;
    const db = this.keyToDb.get(key);
    if (db !== undefined) return db;
    if (this.pendingKeys.has(key)) {
      const { driver, source } = this.options;
      warnRateLimited(
        `${driver}-not-ready:${key}`,
        `branchline ${driver}: the sandbox database for this key is not ready; the query goes to the baseline database`,
        { key, source },
      );
    }
    return undefined;
  }

  /**
   * Follows a new route table and returns the sandbox databases still in use (the adapter
   * closes the pools of the others). Throws, keeping the previous selection, when the table
   * cannot be read.
   */
  apply(table: RouteTable): Set<string> {
    const { service, sandbox } = this.options;
    const byKey = new Map<string, string>();
    const pending = new Set<string>();
    const dbOf = new Map<string, { db: string; ready: boolean } | undefined>();
    const lookup = (s: SandboxSpec) => {
      if (!dbOf.has(s.name)) dbOf.set(s.name, this.databaseOf(s));
      return dbOf.get(s.name);
    };
    for (const s of table.sandboxes) {
      const d = lookup(s);
      if (d?.ready) byKey.set(s.key, d.db);
      else if (d) pending.add(s.key);
    }
    for (const g of table.groups) {
      // The sandbox that serves this service in the group decides; else the oldest member
      // that has a database for it (the same winner rule route groups use).
      const server = service ? table.resolve(service, g.key)?.sandbox : undefined;
      const members = table.groupMembers(g.key);
      const chosen = members.find((s) => s.name === server && lookup(s)) ?? members.find((s) => lookup(s));
      const d = chosen ? lookup(chosen) : undefined;
      if (d?.ready) byKey.set(g.key, d.db);
      else if (d) pending.add(g.key);
    }
    // A sandbox workload uses its own database even before it is ready: its schema may not
    // fit the baseline, and a clear "no such database" beats writing to shared data.
    const own = sandbox ? table.sandbox(sandbox) : undefined;
    const ownDb = own ? lookup(own)?.db : undefined;
    this.keyToDb = byKey;
    this.pendingKeys = pending;
    this.ownDb = ownDb;
    const wanted = new Set(byKey.values());
    if (ownDb) wanted.add(ownDb);
    return wanted;
  }

  /** The database `s` has for this pool's source and service, and whether it is ready. */
  private databaseOf(s: SandboxSpec): { db: string; ready: boolean } | undefined {
    const { resolveDatabase, type, source, service, prefix } = this.options;
    if (resolveDatabase) {
      const db = resolveDatabase(s);
      return db === undefined ? undefined : { db, ready: true };
    }
    const resources = s.resources;
    if (!isObject(resources)) return undefined;
    for (const raw of Object.values(resources)) {
      if (!isObject(raw)) continue;
      const r = raw as ResourceLike;
      if (r.type !== type) continue;
      const spec = isObject(r.spec) ? r.spec : r;
      if (spec.from !== source) continue;
      const services = spec.services;
      if (Array.isArray(services) && (service === undefined || !services.includes(service))) continue;
      if (r.status === 'deleting') return undefined;
      return {
        db: this.options.databaseName(source, s.name, prefix),
        ready: r.status == null || r.status === 'ready',
      };
    }
    return undefined;
  }
}
