import { logger } from '@branchline/core/transport';
import {
  checkSandboxName,
  checkSourceName,
  likePrefix,
  parseSandboxDatabaseName,
  quoteIdent,
  quoteLiteral,
  SandboxDatabaseError,
  sandboxDatabaseName,
  snapshotDatabaseName,
} from './names.js';
import { type DropRequest, guardReport, type ProvisionRequest } from './requests.js';
import { COMMENT_TAG, type DatabaseServer, LOCK_NAMESPACE } from './server.js';
import { takeSnapshot } from './snapshots.js';
import type { SandboxDatabaseOutputs, SweepResult } from './types.js';

// Creating, dropping, sweeping and listing sandbox databases (SandboxDatabases' provisioning side).

interface CatalogueRow {
  database: string;
  sandbox: string;
  state: 'creating' | 'ready' | 'deleting';
  age_ms: number;
}

/**
 * Creates the sandbox database of (`sandbox`, `source`) from the source's snapshot (taken
 * first when there is none) and returns its connection details. Idempotent: a database that
 * is already ready is returned as is. On failure nothing is left behind.
 */
export async function provisionDatabase(
  s: DatabaseServer,
  req: ProvisionRequest,
): Promise<SandboxDatabaseOutputs> {
  const sandbox = checkSandboxName(req.sandbox);
  const source = s.checkAllowed(checkSourceName(req.source));
  const database = sandboxDatabaseName(source, sandbox, s.prefix);
  const snapshot = snapshotDatabaseName(source, s.snapshotPrefix);
  const report = guardReport(req.report);
  const signal = req.signal;

  return s.withAdmin(async (c) => {
    await s.assertSourceExists(c, source);
    await s.ensureCatalogue(c);
    const prior = await c.query<{ state: string }>(
      `SELECT state FROM ${quoteIdent(s.catalogue)} WHERE database = $1`,
      [database],
    );
    if (prior.rows[0]?.state === 'ready' && (await s.exists(c, database))) {
      const bytes = await s.size(c, database);
      report({ phase: 'ready', done: bytes, total: bytes, unit: 'bytes', message: `${database} is ready` });
      return s.outputs(database, source, snapshot);
    }
    // Recorded before it exists: whatever happens next, the sweeper can find it.
    await c.query(
      `INSERT INTO ${quoteIdent(s.catalogue)} (database, sandbox, resource, source, state)
       VALUES ($1, $2, $3, $4, 'creating')
       ON CONFLICT (database) DO UPDATE SET sandbox = $2, resource = $3, source = $4,
         state = 'creating', created_at = now(), updated_at = now()`,
      [database, sandbox, req.resource ?? null, source],
    );
    try {
      // A leftover of an interrupted attempt is replaced, never reused half-made.
      await s.dropDatabase(c, database);
      if (req.refresh) await takeSnapshot(s, source, { onProgress: report, signal });
      else if (!(await s.exists(c, snapshot)))
        await takeSnapshot(s, source, { ifMissing: true, onProgress: report, signal });
      signal?.throwIfAborted();
      let bytes = 0;
      await s.withLock(c, `use:${snapshot}`, 'shared', async () => {
        if (!(await s.exists(c, snapshot))) {
          throw new SandboxDatabaseError(
            'clone-failed',
            `branchline pg: the snapshot ${snapshot} of "${source}" disappeared while cloning; retry`,
          );
        }
        bytes = await s.size(c, snapshot);
        report({
          phase: 'cloning',
          done: 0,
          total: bytes,
          unit: 'bytes',
          message: `cloning ${snapshot} into ${database}`,
        });
        const strategy = await s.strategyClause(c, bytes);
        const owner = s.owner ? ` OWNER ${quoteIdent(s.owner)}` : '';
        const message = `cloning ${snapshot} into ${database}`;
        const stop = s.watchCloneBytes(bytes, (done) =>
          report({ phase: 'cloning', done, total: bytes, unit: 'bytes', message }),
        );
        try {
          await c.query(
            `CREATE DATABASE ${quoteIdent(database)} TEMPLATE ${quoteIdent(snapshot)}${strategy}${owner}`,
          );
        } finally {
          await stop();
        }
      });
      const note = JSON.stringify({ sandbox, source, resource: req.resource });
      await c.query(`COMMENT ON DATABASE ${quoteIdent(database)} IS ${quoteLiteral(COMMENT_TAG + note)}`);
      await c.query(
        `UPDATE ${quoteIdent(s.catalogue)} SET state = 'ready', updated_at = now() WHERE database = $1`,
        [database],
      );
      report({ phase: 'ready', done: bytes, total: bytes, unit: 'bytes', message: `${database} is ready` });
      return s.outputs(database, source, snapshot);
    } catch (err) {
      await s.forget(database).catch((cleanupErr) =>
        logger().error('branchline pg: could not remove a half-made sandbox database; the sweeper will', {
          database,
          err: String(cleanupErr),
        }),
      );
      if (err instanceof SandboxDatabaseError || signal?.aborted) throw err;
      throw new SandboxDatabaseError(
        'clone-failed',
        `branchline pg: could not create ${database} for sandbox ${sandbox} from "${source}": ${(err as Error).message}`,
      );
    }
  }, signal);
}

/**
 * Drops the sandbox database (terminating its connections) and forgets it. Idempotent, so the
 * registry can retry it after a crash. Marked `deleting` first, so an interrupted drop is
 * finished by the sweeper.
 */
export async function dropDatabaseOf(s: DatabaseServer, req: DropRequest): Promise<void> {
  const sandbox = checkSandboxName(req.sandbox);
  const source = checkSourceName(req.source);
  const database =
    typeof req.database === 'string' && req.database.startsWith(s.prefix)
      ? req.database
      : sandboxDatabaseName(source, sandbox, s.prefix);
  await s.withAdmin(async (c) => {
    await s.ensureCatalogue(c);
    await c.query(
      `INSERT INTO ${quoteIdent(s.catalogue)} (database, sandbox, source, state) VALUES ($1, $2, $3, 'deleting')
       ON CONFLICT (database) DO UPDATE SET state = 'deleting', updated_at = now()`,
      [database, sandbox, source],
    );
    await s.dropDatabase(c, database);
    await c.query(`DELETE FROM ${quoteIdent(s.catalogue)} WHERE database = $1`, [database]);
  }, req.signal);
}

/**
 * Removes every sandbox database (with this prefix) whose sandbox is not in `liveSandboxes`:
 * interrupted deletions, databases whose catalogue entry was lost, entries whose database is
 * already gone. Entries of unknown sandboxes younger than `sweepGraceMs` are left alone, as is
 * everything a live sandbox owns. Also removes half-built snapshots nobody is building.
 */
export async function sweepDatabases(
  s: DatabaseServer,
  liveSandboxes: Iterable<string>,
): Promise<SweepResult> {
  const live = new Set(liveSandboxes);
  const result: SweepResult = { dropped: [], forgotten: [], kept: [] };
  await s.withAdmin(async (c) => {
    await s.ensureCatalogue(c);
    // Databases first, entries second: an entry is written before its database is created,
    // so every database listed here has its entry visible in the second read.
    const dbs = await c.query<{ datname: string; description: string | null }>(
      `SELECT d.datname, s.description FROM pg_database d
       LEFT JOIN pg_shdescription s ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass
       WHERE d.datname LIKE $1`,
      [likePrefix(s.prefix)],
    );
    const rows = await c.query<CatalogueRow>(
      `SELECT database, sandbox, state, (extract(epoch FROM now() - created_at) * 1000)::float8 AS age_ms
       FROM ${quoteIdent(s.catalogue)} WHERE database LIKE $1`,
      [likePrefix(s.prefix)],
    );
    const existing = new Set(dbs.rows.map((d) => d.datname));
    const known = new Set<string>();
    for (const row of rows.rows) {
      known.add(row.database);
      if (live.has(row.sandbox) || (row.state !== 'deleting' && row.age_ms < s.sweepGraceMs)) {
        result.kept.push(row.database);
        continue;
      }
      await c.query(
        `UPDATE ${quoteIdent(s.catalogue)} SET state = 'deleting', updated_at = now() WHERE database = $1`,
        [row.database],
      );
      if (existing.has(row.database)) {
        await s.dropDatabase(c, row.database);
        result.dropped.push(row.database);
      }
      await c.query(`DELETE FROM ${quoteIdent(s.catalogue)} WHERE database = $1`, [row.database]);
      result.forgotten.push(row.database);
    }
    for (const d of dbs.rows) {
      if (known.has(d.datname)) continue;
      const owner = commentOwner(d.description) ?? parseSandboxDatabaseName(d.datname, s.prefix);
      if (owner !== undefined && live.has(owner)) {
        result.kept.push(d.datname);
        continue;
      }
      await s.dropDatabase(c, d.datname);
      result.dropped.push(d.datname);
    }
    const half = await c.query<{ datname: string }>(
      `SELECT datname FROM pg_database WHERE datname LIKE $1 AND right(datname, 6) = '__next'`,
      [likePrefix(s.snapshotPrefix)],
    );
    for (const { datname } of half.rows) {
      const got = await c.query<{ ok: boolean }>(
        'SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS ok',
        [LOCK_NAMESPACE, `build:${datname}`],
      );
      if (!got.rows[0]?.ok) continue;
      try {
        await s.dropDatabase(c, datname);
        result.dropped.push(datname);
      } finally {
        await c.query('SELECT pg_advisory_unlock(hashtext($1), hashtext($2))', [
          LOCK_NAMESPACE,
          `build:${datname}`,
        ]);
      }
    }
  });
  if (result.dropped.length || result.forgotten.length)
    logger().info('branchline pg: sweeper removed orphaned sandbox databases', { ...result });
  return result;
}

/** Every sandbox database in the catalogue (for listings and tests). */
export async function listDatabases(
  s: DatabaseServer,
): Promise<{ database: string; sandbox: string; source: string; state: string }[]> {
  return s.withAdmin(async (c) => {
    await s.ensureCatalogue(c);
    const r = await c.query<{ database: string; sandbox: string; source: string; state: string }>(
      `SELECT database, sandbox, source, state FROM ${quoteIdent(s.catalogue)} WHERE database LIKE $1 ORDER BY database`,
      [likePrefix(s.prefix)],
    );
    return r.rows;
  });
}

function commentOwner(description: string | null): string | undefined {
  if (!description?.startsWith(COMMENT_TAG)) return undefined;
  try {
    const v = JSON.parse(description.slice(COMMENT_TAG.length)) as { sandbox?: unknown };
    return typeof v.sandbox === 'string' ? v.sandbox : undefined;
  } catch {
    return undefined;
  }
}
