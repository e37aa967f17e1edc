import type { ResourceContext, ResourceHook } from '../resources.js';
import type { SandboxDatabaseDropRequest, SandboxDatabaseProvisionRequest } from './types.js';

/** A declared sandbox database: `{ type: '<type>', spec: { from: 'orders' } }`. */
export interface DatabaseResourceSpec {
  /** The baseline database whose data seeds the sandbox database. */
  from: string;
  /** Services whose routed pools use this database for the sandbox's key. Absent: every service. */
  services?: string[];
  /** Take a fresh copy of `from` first (only adapters that keep snapshots accept it). */
  refresh?: boolean;
}

/** What differs between database adapters when a resource spec is read. */
export interface DatabaseSpecRules {
  /** Resource type, e.g. `postgres`, `mysql`. */
  type: string;
  /** Adapter name in messages (`branchline <driver>: …`). */
  driver: string;
  /** Whether `spec.refresh` is accepted. Default false (it is then left out of the result). */
  refresh?: boolean;
  /** Checks the baseline database name; throws the adapter's error when it is not one. */
  checkSource(name: unknown, where: string): string;
  /** The adapter's error for a spec a person must fix. */
  fail(message: string): Error;
}

/**
 * Reads a database resource spec. Accepts `{ from }` in `spec` and, for hand-written documents,
 * at the top level of the resource (`{ type: 'postgres', from: 'orders' }`).
 */
export function parseDatabaseSpec(spec: unknown, rules: DatabaseSpecRules): DatabaseResourceSpec {
  const tag = `branchline ${rules.driver}:`;
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw rules.fail(
      `${tag} a ${rules.type} resource needs a spec like {"from": "orders"} (got ${JSON.stringify(spec)})`,
    );
  }
  const s = spec as Record<string, unknown>;
  const nested =
    typeof s.spec === 'object' && s.spec !== null ? (s.spec as Record<string, unknown>) : undefined;
  const from = rules.checkSource(nested?.from ?? s.from, 'spec.from');
  const services = nested?.services ?? s.services;
  if (
    services !== undefined &&
    (!Array.isArray(services) || services.some((x) => typeof x !== 'string' || x.length === 0))
  ) {
    throw rules.fail(
      `${tag} spec.services must be a list of service names such as ["orders"] (got ${JSON.stringify(services)})`,
    );
  }
  const out: DatabaseResourceSpec = { from };
  if (services) out.services = services as string[];
  if (rules.refresh) {
    const refresh = nested?.refresh ?? s.refresh;
    if (refresh !== undefined && typeof refresh !== 'boolean') {
      throw rules.fail(`${tag} spec.refresh must be true or false (got ${JSON.stringify(refresh)})`);
    }
    if (refresh !== undefined) out.refresh = refresh;
  }
  return out;
}

/** What a database adapter's manager offers the resource hook. */
export interface SandboxDatabaseManager<O> {
  checkAllowed(source: string): unknown;
  provision(req: SandboxDatabaseProvisionRequest & { refresh?: boolean }): Promise<O>;
  drop(req: SandboxDatabaseDropRequest): Promise<void>;
  sweep(liveSandboxes: Iterable<string>): Promise<unknown>;
}

export interface DatabaseResourceHook<T extends string, O extends Record<string, unknown>, M>
  extends ResourceHook {
  type: T;
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<O>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  /** Removes orphans; `databases.sweep` returns what it removed. */
  sweep(liveSandboxes: string[]): Promise<void>;
  /** The manager behind the hook. */
  readonly databases: M;
}

/**
 * The registry resource hook of a database adapter: validates specs with `parse`, provisions
 * through `databases` with progress reports, drops the database named in the outputs (or
 * computed from the spec) when the sandbox goes, and sweeps orphans.
 */
export function databaseResourceHook<
  T extends string,
  O extends Record<string, unknown>,
  M extends SandboxDatabaseManager<O>,
>(type: T, databases: M, parse: (spec: unknown) => DatabaseResourceSpec): DatabaseResourceHook<T, O, M> {
  return {
    type,
    databases,
    validate(spec) {
      databases.checkAllowed(parse(spec).from);
    },
    provision(ctx) {
      const spec = parse(ctx.resource.spec);
      return databases.provision({
        sandbox: ctx.sandbox.name,
        source: spec.from,
        resource: ctx.resource.name,
        ...(spec.refresh !== undefined ? { refresh: spec.refresh } : {}),
        report: (p) => ctx.report(p),
        signal: ctx.signal,
      });
    },
    deprovision(ctx) {
      const spec = parse(ctx.resource.spec);
      const database = typeof ctx.outputs?.database === 'string' ? ctx.outputs.database : undefined;
      return databases.drop({ sandbox: ctx.sandbox.name, source: spec.from, database, signal: ctx.signal });
    },
    async sweep(liveSandboxes) {
      await databases.sweep(liveSandboxes);
    },
  };
}
