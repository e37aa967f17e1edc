import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startNode } from '../../../test/helpers/processes.js';
import { createSandboxDatabases, sandboxDatabaseName } from '../src/index.js';
import {
  admin,
  catalogueRows,
  cleanup,
  createBaseline,
  databasesLike,
  options,
  uniqueNames,
} from './helpers.js';

const names = uniqueNames('s');
const dbs = createSandboxDatabases(options(names));

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(() => createBaseline(names.baseline, 5));
afterAll(() => cleanup(names));

describe('sweeper', () => {
  it('finishes a deletion whose process was killed while the DROP was under way', async () => {
    const out = await dbs.provision({ sandbox: 'killed', source: names.baseline });
    // Hold a lock that makes the child's DROP DATABASE wait, so we can kill it mid-drop.
    await admin(async (blocker) => {
      await blocker.query('BEGIN');
      await blocker.query(`COMMENT ON DATABASE "${out.database}" IS 'held by the test'`);
      const child = startNode(join(import.meta.dirname, 'fixtures', 'drop-child.mjs'), [], {
        BRANCHLINE_PG_CHILD: JSON.stringify({
          options: options(names),
          sandbox: 'killed',
          source: names.baseline,
        }),
      });
      await child.waitFor('child: dropping');
      const pid = await waitFor('the child to block in DROP DATABASE', async () => {
        // Polled on another session: pg_stat_activity is frozen inside the blocker's transaction.
        const r = await admin((c) =>
          c.query<{ pid: number }>(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'DROP DATABASE%' AND query LIKE '%' || $1 || '%' AND wait_event_type = 'Lock'",
            [out.database],
          ),
        );
        return r.rows[0]?.pid;
      });
      await child.stop('SIGKILL');
      // The server notices a dead client only when it writes; end its session like a crash would.
      await blocker.query('SELECT pg_terminate_backend($1)', [pid]);
      await waitFor('the killed session to end', async () => {
        const r = await admin((c) => c.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid]));
        return r.rowCount === 0 ? true : undefined;
      });
      await blocker.query('ROLLBACK');
    });
    expect(await databasesLike(out.database)).toEqual([out.database]);
    expect(await catalogueRows(names)).toContainEqual({ database: out.database, state: 'deleting' });

    // The sandbox is no longer live, so the sweeper finishes the deletion.
    const result = await dbs.sweep(['someone-else']);
    expect(result.dropped).toContain(out.database);
    expect(await databasesLike(out.database)).toEqual([]);
    expect((await catalogueRows(names)).map((r) => r.database)).not.toContain(out.database);
  });

  it('removes a database left without its catalogue entry unless its sandbox is live', async () => {
    const ghost = sandboxDatabaseName(names.baseline, 'ghost', names.prefix);
    const alive = sandboxDatabaseName(names.baseline, 'alive', names.prefix);
    await admin(async (c) => {
      await c.query(`CREATE DATABASE "${ghost}"`);
      await c.query(`CREATE DATABASE "${alive}"`);
    });
    const result = await dbs.sweep(['alive']);
    expect(result.dropped).toContain(ghost);
    expect(result.kept).toContain(alive);
    expect(await databasesLike(ghost)).toEqual([]);
    expect(await databasesLike(alive)).toEqual([alive]);
    await admin((c) => c.query(`DROP DATABASE "${alive}"`));
  });

  it('keeps the databases of live sandboxes and of entries younger than the grace period', async () => {
    const live = await dbs.provision({ sandbox: 'live-one', source: names.baseline });
    const young = await dbs.provision({ sandbox: 'young-one', source: names.baseline });
    const patient = createSandboxDatabases(options(names, { sweepGraceMs: 10 * 60_000 }));
    const first = await patient.sweep(['live-one']);
    expect(first.kept).toEqual(expect.arrayContaining([live.database, young.database]));
    expect(await databasesLike(young.database)).toEqual([young.database]);

    const second = await dbs.sweep(['live-one']);
    expect(second.dropped).toContain(young.database);
    expect(second.dropped).not.toContain(live.database);
    expect(await databasesLike(live.database)).toEqual([live.database]);
    expect(await databasesLike(young.database)).toEqual([]);

    await dbs.sweep([]);
    expect(await databasesLike(names.prefix)).toEqual([]);
    expect(await catalogueRows(names)).toEqual([]);
  });

  it('removes a half-built snapshot that nobody is building', async () => {
    const half = `${names.snapshotPrefix}${names.baseline}__next`;
    await admin((c) => c.query(`CREATE DATABASE "${half}"`));
    const result = await dbs.sweep([]);
    expect(result.dropped).toContain(half);
    expect(await databasesLike(half)).toEqual([]);
  });
});
