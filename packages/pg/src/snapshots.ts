import { dumpInto } from './dump.js';
import {
  checkSourceName,
  nextSnapshotName,
  quoteIdent,
  quoteLiteral,
  SandboxDatabaseError,
  snapshotDatabaseName,
} from './names.js';
import { guardReport, type SnapshotRequest } from './requests.js';
import { COMMENT_TAG, type DatabaseServer, pgCode } from './server.js';
import type { SnapshotResult } from './types.js';

// Snapshots of baseline databases, which sandbox databases are cloned from.

/**
 * Takes (or refreshes) the snapshot of `source` that sandbox databases are cloned from. The
 * new snapshot is built beside the old one and swapped in under a lock, so clones never see
 * a half-built snapshot and the baseline is never locked: with the baseline in use the copy
 * streams through `pg_dump | pg_restore` from one consistent MVCC snapshot.
 */
export async function takeSnapshot(
  s: DatabaseServer,
  source: string,
  req: SnapshotRequest = {},
): Promise<SnapshotResult> {
  checkSourceName(source);
  s.checkAllowed(source);
  const snap = snapshotDatabaseName(source, s.snapshotPrefix);
  const next = nextSnapshotName(source, s.snapshotPrefix);
  const report = guardReport(req.onProgress);
  const started = performance.now();
  const wanted = req.method ?? s.snapshotMethod;
  return s.withAdmin(async (c) => {
    await s.assertSourceExists(c, source);
    return s.withLock(c, `build:${next}`, 'exclusive', async () => {
      if (req.ifMissing && (await s.exists(c, snap))) {
        return {
          database: snap,
          method: 'existing',
          bytes: await s.size(c, snap),
          ms: performance.now() - started,
        };
      }
      await s.dropDatabase(c, next);
      let method: 'template' | 'dump' =
        wanted === 'auto' ? ((await s.connectionsTo(c, source)) > 0 ? 'dump' : 'template') : wanted;
      try {
        if (method === 'template') {
          report({ phase: 'snapshot', message: `copying ${source} into ${snap}` });
          try {
            const strategy = await s.strategyClause(c, await s.size(c, source));
            await c.query(`CREATE DATABASE ${quoteIdent(next)} TEMPLATE ${quoteIdent(source)}${strategy}`);
          } catch (err) {
            // 55006: someone connected to the baseline meanwhile; a dump does not mind.
            if (pgCode(err) !== '55006' || wanted !== 'auto') throw err;
            method = 'dump';
          }
        }
        if (method === 'dump') {
          const info = await c.query<{ enc: string; coll: string; ctype: string }>(
            `SELECT pg_encoding_to_char(encoding) AS enc, datcollate AS coll, datctype AS ctype
             FROM pg_database WHERE datname = $1`,
            [source],
          );
          const i = info.rows[0];
          const locale = i
            ? ` ENCODING ${quoteLiteral(i.enc)} LC_COLLATE ${quoteLiteral(i.coll)} LC_CTYPE ${quoteLiteral(i.ctype)}`
            : '';
          await c.query(`CREATE DATABASE ${quoteIdent(next)} TEMPLATE template0${locale}`);
          await dumpInto(s, source, next, report, req.signal);
        }
        // Nobody may connect to a snapshot: a connection would make it unusable as a template.
        await c.query(`ALTER DATABASE ${quoteIdent(next)} WITH ALLOW_CONNECTIONS false`);
        const note = JSON.stringify({ snapshotOf: source, at: new Date().toISOString(), method });
        await c.query(`COMMENT ON DATABASE ${quoteIdent(next)} IS ${quoteLiteral(COMMENT_TAG + note)}`);
        await s.withLock(c, `use:${snap}`, 'exclusive', async () => {
          await s.dropDatabase(c, snap);
          await c.query(`ALTER DATABASE ${quoteIdent(next)} RENAME TO ${quoteIdent(snap)}`);
        });
      } catch (err) {
        await s.dropDatabase(c, next).catch(() => {});
        if (err instanceof SandboxDatabaseError || req.signal?.aborted) throw err;
        throw new SandboxDatabaseError(
          'snapshot-failed',
          `branchline pg: could not snapshot "${source}" into ${snap}: ${(err as Error).message}`,
        );
      }
      const bytes = await s.size(c, snap);
      report({ phase: 'snapshot', done: bytes, total: bytes, unit: 'bytes', message: `${snap} is ready` });
      return { database: snap, method, bytes, ms: performance.now() - started };
    });
  }, req.signal);
}

/** Drops the snapshot of `source` (sandbox databases cloned from it are unaffected). */
export async function dropSnapshot(s: DatabaseServer, source: string): Promise<void> {
  const snap = snapshotDatabaseName(checkSourceName(source), s.snapshotPrefix);
  const next = nextSnapshotName(source, s.snapshotPrefix);
  await s.withAdmin(async (c) => {
    await s.withLock(c, `build:${next}`, 'exclusive', async () => {
      await s.dropDatabase(c, next);
      await s.withLock(c, `use:${snap}`, 'exclusive', () => s.dropDatabase(c, snap));
    });
  });
}
