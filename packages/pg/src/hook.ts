import { createSandboxDatabases, type SandboxDatabases } from './databases.js';
import { checkSourceName, SandboxDatabaseError } from './names.js';
import type {
  PostgresResourceSpec,
  ResourceContext,
  ResourceHook,
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
} from './types.js';

export interface PostgresResourceHook extends ResourceHook {
  type: 'postgres';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<SandboxDatabaseOutputs>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  /** Removes orphans; `databases.sweep` returns what it removed. */
  sweep(liveSandboxes: string[]): Promise<void>;
  /** The manager behind the hook (snapshots, listings, sweeps with a report). */
  readonly databases: SandboxDatabases;
}

/**
 * Reads a resource spec. Accepts `{ from }` in `spec` and, for hand-written documents, at the
 * top level of the resource (`{ type: 'postgres', from: 'orders' }`).
 */
export function parsePostgresSpec(spec: unknown): PostgresResourceSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline pg: a postgres resource needs a spec like {"from": "orders"} (got ${JSON.stringify(spec)})`,
    );
  }
  const s = spec as Record<string, unknown>;
  const nested =
    typeof s.spec === 'object' && s.spec !== null ? (s.spec as Record<string, unknown>) : undefined;
  const from = checkSourceName(nested?.from ?? s.from, 'spec.from');
  const services = nested?.services ?? s.services;
  if (
    services !== undefined &&
    (!Array.isArray(services) || services.some((x) => typeof x !== 'string' || x.length === 0))
  ) {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline pg: spec.services must be a list of service names such as ["orders"] (got ${JSON.stringify(services)})`,
    );
  }
  const refresh = nested?.refresh ?? s.refresh;
  if (refresh !== undefined && typeof refresh !== 'boolean') {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline pg: spec.refresh must be true or false (got ${JSON.stringify(refresh)})`,
    );
  }
  const out: PostgresResourceSpec = { from };
  if (services) out.services = services as string[];
  if (refresh !== undefined) out.refresh = refresh;
  return out;
}

/**
 * The registry resource hook for `{ type: 'postgres', spec: { from: 'orders' } }`: provisions a
 * sandbox database cloned from the baseline's snapshot, reports progress, returns the connection
 * details as private outputs, drops it when the sandbox goes, and sweeps orphans.
 *
 * ```ts
 * createRegistryServer({ resourceHooks: [postgresResourceHook({ connection: process.env.ADMIN_DATABASE_URL })] })
 * ```
 */
export function postgresResourceHook(options: SandboxDatabasesOptions = {}): PostgresResourceHook {
  const databases = createSandboxDatabases(options);
  return {
    type: 'postgres',
    databases,
    validate(spec) {
      databases.checkAllowed(parsePostgresSpec(spec).from);
    },
    provision(ctx) {
      const spec = parsePostgresSpec(ctx.resource.spec);
      return databases.provision({
        sandbox: ctx.sandbox.name,
        source: spec.from,
        resource: ctx.resource.name,
        refresh: spec.refresh,
        report: (p) => ctx.report(p),
        signal: ctx.signal,
      });
    },
    deprovision(ctx) {
      const spec = parsePostgresSpec(ctx.resource.spec);
      const database = typeof ctx.outputs?.database === 'string' ? ctx.outputs.database : undefined;
      return databases.drop({ sandbox: ctx.sandbox.name, source: spec.from, database, signal: ctx.signal });
    },
    async sweep(liveSandboxes) {
      await databases.sweep(liveSandboxes);
    },
  };
}
