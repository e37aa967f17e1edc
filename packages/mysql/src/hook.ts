import { createSandboxDatabases, type SandboxDatabases } from './databases.js';
import { checkSourceName, SandboxDatabaseError } from './names.js';
import type {
  MysqlResourceSpec,
  ResourceContext,
  ResourceHook,
  SandboxDatabaseOutputs,
  SandboxDatabasesOptions,
} from './types.js';

export interface MysqlResourceHook extends ResourceHook {
  type: 'mysql';
  validate(spec: Record<string, unknown>): void;
  provision(ctx: ResourceContext): Promise<SandboxDatabaseOutputs>;
  deprovision(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  /** Removes orphans; `databases.sweep` returns what it removed. */
  sweep(liveSandboxes: string[]): Promise<void>;
  /** The manager behind the hook (listings, sweeps with a report). */
  readonly databases: SandboxDatabases;
}

/**
 * Reads a resource spec. Accepts `{ from }` in `spec` and, for hand-written documents, at the
 * top level of the resource (`{ type: 'mysql', from: 'orders' }`).
 */
export function parseMysqlSpec(spec: unknown): MysqlResourceSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new SandboxDatabaseError(
      'invalid-name',
      `branchline mysql: a mysql resource needs a spec like {"from": "orders"} (got ${JSON.stringify(spec)})`,
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
      `branchline mysql: spec.services must be a list of service names such as ["orders"] (got ${JSON.stringify(services)})`,
    );
  }
  const out: MysqlResourceSpec = { from };
  if (services) out.services = services as string[];
  return out;
}

/**
 * The registry resource hook for `{ type: 'mysql', spec: { from: 'orders' } }` (MySQL and
 * MariaDB): provisions a sandbox database copied from the baseline, reports progress, returns
 * the connection details as private outputs, drops it when the sandbox goes, and sweeps orphans.
 *
 * ```ts
 * createRegistryServer({ resourceHooks: [mysqlResourceHook({ connection: process.env.ADMIN_MYSQL_URL })] })
 * ```
 */
export function mysqlResourceHook(options: SandboxDatabasesOptions = {}): MysqlResourceHook {
  const databases = createSandboxDatabases(options);
  return {
    type: 'mysql',
    databases,
    validate(spec) {
      databases.checkAllowed(parseMysqlSpec(spec).from);
    },
    provision(ctx) {
      const spec = parseMysqlSpec(ctx.resource.spec);
      return databases.provision({
        sandbox: ctx.sandbox.name,
        source: spec.from,
        resource: ctx.resource.name,
        report: (p) => ctx.report(p),
        signal: ctx.signal,
      });
    },
    deprovision(ctx) {
      const spec = parseMysqlSpec(ctx.resource.spec);
      const database = typeof ctx.outputs?.database === 'string' ? ctx.outputs.database : undefined;
      return databases.drop({ sandbox: ctx.sandbox.name, source: spec.from, database, signal: ctx.signal });
    },
    async sweep(liveSandboxes) {
      await databases.sweep(liveSandboxes);
    },
  };
}
