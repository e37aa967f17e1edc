import type { Command } from 'commander';
import { CliError, EXIT } from '../client.js';

// What @branchline/pg exports for these commands (declared here, loaded by a computed name, so
// @branchline/cli builds and installs without @branchline/pg; see proxy.ts).
interface Progress {
  phase: string;
  done?: number;
  total?: number;
  unit?: string;
  message?: string;
}
interface PgModule {
  snapshotDatabase(
    source: string,
    options: Record<string, unknown>,
  ): Promise<{ database: string; method: string; bytes: number; ms: number }>;
  createSandboxDatabases(options: Record<string, unknown>): {
    list(): Promise<{ database: string; sandbox: string; source: string; state: string }[]>;
  };
  progressPrinter(stream?: NodeJS.WritableStream): { update(p: Progress): void; done(): void };
  formatBytes(n: number): string;
  fetchSandboxDatabase(
    resource: string,
    options: { registry: string; token?: string; sandbox: string; waitMs?: number },
  ): Promise<Record<string, unknown> & { database: string; url: string }>;
  formatConnection(outputs: Record<string, unknown>, label?: string): string;
}

/**
 * For `branchline sandbox create … --db orders [--db payments]`: the resources to declare, one
 * `postgres` resource named `<source>-db` per database (pass them in the PUT body, then --wait).
 */
export function dbResources(sources: string[]): Record<string, { type: 'postgres'; spec: { from: string } }> {
  const out: Record<string, { type: 'postgres'; spec: { from: string } }> = {};
  for (const from of sources) {
    const name = `${from
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')}-db`;
    out[name] = { type: 'postgres', spec: { from } };
  }
  return out;
}

/**
 * After the sandbox is ready: the connection details of each `--db` database, read with the
 * sandbox token the PUT returned, formatted for people (password masked).
 */
export async function databaseDetails(
  registry: string,
  sandbox: string,
  token: string | undefined,
  sources: string[],
): Promise<string> {
  const pg = await loadPg();
  const parts: string[] = [];
  for (const resource of Object.keys(dbResources(sources))) {
    const outputs = await pg.fetchSandboxDatabase(resource, { registry, token, sandbox }).catch(failure);
    parts.push(pg.formatConnection(outputs, resource));
  }
  return parts.join('\n');
}

interface Out {
  log(s: string): void;
}

async function loadPg(): Promise<PgModule> {
  const name = '@branchline/pg';
  try {
    return (await import(name)) as PgModule;
  } catch (err) {
    throw new CliError(
      `branchline db needs the @branchline/pg package (npm install @branchline/pg pg): ${(err as Error).message}`,
      EXIT.error,
    );
  }
}

interface DbOptions {
  connection?: string;
  prefix?: string;
  snapshotPrefix?: string;
}

function pgOptions(opts: DbOptions): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (opts.connection) o.connection = opts.connection;
  if (opts.prefix) o.prefix = opts.prefix;
  if (opts.snapshotPrefix) o.snapshotPrefix = opts.snapshotPrefix;
  return o;
}

function failure(err: unknown): never {
  const e = err as Error & { code?: string };
  if (e?.name === 'SandboxDatabaseError' || e instanceof TypeError)
    throw new CliError(e.message.replace(/^branchline pg: /, ''), EXIT.usage);
  throw err;
}

/**
 * `branchline db snapshot <source>`: refreshes the snapshot sandbox databases are cloned from
 * (sandboxes created afterwards get the new data). `branchline db list`: the sandbox databases.
 * They talk to PostgreSQL directly with an admin connection (`--connection` or PG* variables).
 */
export function registerDbCommand(program: Command, out: Out): void {
  const db = program.command('db').description('per-sandbox PostgreSQL databases (@branchline/pg)');
  const common = (c: Command) =>
    c
      .option(
        '--connection <url>',
        'admin connection (CREATEDB role), e.g. postgres://admin@db:5432/postgres; default: PG* variables',
        process.env.BRANCHLINE_PG_ADMIN,
      )
      .option('--prefix <prefix>', 'sandbox database name prefix', undefined)
      .option('--snapshot-prefix <prefix>', 'snapshot database name prefix', undefined);

  common(
    db
      .command('snapshot')
      .description(
        'take or refresh the snapshot of a baseline database that sandbox databases are cloned from',
      )
      .argument('<source>', 'the baseline database, e.g. orders')
      .option('--method <method>', 'auto | template | dump', 'auto'),
  ).action(async (source: string, opts: DbOptions & { method: string }) => {
    if (!['auto', 'template', 'dump'].includes(opts.method))
      throw new CliError(
        `--method ${JSON.stringify(opts.method)} must be auto, template or dump`,
        EXIT.usage,
      );
    const pg = await loadPg();
    const bar = pg.progressPrinter(process.stderr);
    const result = await pg
      .snapshotDatabase(source, {
        ...pgOptions(opts),
        method: opts.method,
        onProgress: (p: Progress) => bar.update(p),
      })
      .catch(failure)
      .finally(() => bar.done());
    out.log(
      `snapshot ${result.database} of ${source} ready: ${pg.formatBytes(result.bytes)} by ${result.method} in ${(result.ms / 1000).toFixed(1)} s`,
    );
  });

  common(db.command('list').description('list sandbox databases and their state')).action(
    async (opts: DbOptions) => {
      const pg = await loadPg();
      const rows = await pg.createSandboxDatabases(pgOptions(opts)).list().catch(failure);
      if (!rows.length) out.log('no sandbox databases');
      for (const r of rows) out.log(`${r.database}  sandbox=${r.sandbox}  from=${r.source}  ${r.state}`);
    },
  );
}
