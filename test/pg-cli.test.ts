// The `branchline db` command file (packages/cli/src/commands/db.ts) against a real PostgreSQL
// and a real registry: snapshot refresh, and the `--db` helpers for `sandbox create`.
import { postgresResourceHook } from '@branchline/pg';
import { createRegistryServer } from '@branchline/registry';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseDetails, dbResources, registerDbCommand } from '../packages/cli/src/commands/db.js';
import { main } from '../packages/cli/src/program.js';
import { admin, cleanup, PG, uniqueNames, withClient } from '../packages/pg/test/helpers.js';

const names = uniqueNames('c');
const { baseline, prefix, snapshotPrefix, catalogue } = names;

/** A registry with the postgres resource hook and a read+write token `w`. */
async function startRegistry() {
  const server = createRegistryServer({
    store: ':memory:',
    tokens: [{ token: 'w', scopes: ['read', 'write'] }],
    resourceHooks: [postgresResourceHook({ connection: PG, prefix, snapshotPrefix, catalogue })],
    log: () => {},
  });
  return { server, url: await server.listen(0) };
}

async function run(...args: string[]): Promise<string[]> {
  const lines: string[] = [];
  const program = new Command('branchline').exitOverride();
  registerDbCommand(program, { log: (s) => lines.push(s) });
  await program.parseAsync(['node', 'branchline', ...args]);
  return lines;
}

beforeAll(async () => {
  await admin((c) => c.query(`CREATE DATABASE "${baseline}"`));
  await withClient(baseline, async (c) => {
    await c.query('CREATE TABLE orders (id int PRIMARY KEY)');
    await c.query('INSERT INTO orders SELECT generate_series(1, 5)');
  });
});

afterAll(async () => {
  await cleanup(names);
});

describe('branchline db', () => {
  it('db snapshot <source> takes the snapshot sandbox databases are cloned from', async () => {
    const conn = `postgres://postgres@127.0.0.1:5432/postgres`;
    const out = await run(
      'db',
      'snapshot',
      baseline,
      '--connection',
      conn,
      '--snapshot-prefix',
      snapshotPrefix,
    );
    expect(out.join('\n')).toMatch(
      new RegExp(`snapshot ${snapshotPrefix}${baseline} of ${baseline} ready: .* by template`),
    );
    const snap = await admin((c) =>
      c.query('SELECT datallowconn FROM pg_database WHERE datname = $1', [`${snapshotPrefix}${baseline}`]),
    );
    expect(snap.rows).toEqual([{ datallowconn: false }]);
  });

  it('--db helpers declare a postgres resource per database and print its connection details', async () => {
    expect(dbResources(['orders', 'Billing_DB'])).toEqual({
      'orders-db': { type: 'postgres', spec: { from: 'orders' } },
      'billing-db-db': { type: 'postgres', spec: { from: 'Billing_DB' } },
    });
    const { server, url } = await startRegistry();
    try {
      const res = await fetch(`${url}/v1/sandboxes/pr-cli`, {
        method: 'PUT',
        headers: { authorization: 'Bearer w', 'content-type': 'application/json' },
        body: JSON.stringify({ resources: dbResources([baseline]) }),
      });
      const { sandboxToken } = (await res.json()) as { sandboxToken: string };
      const until = Date.now() + 60_000;
      for (;;) {
        const s = (await (
          await fetch(`${url}/v1/sandboxes/pr-cli`, { headers: { authorization: 'Bearer w' } })
        ).json()) as {
          status: string;
        };
        if (s.status === 'ready') break;
        if (Date.now() > until) throw new Error(`sandbox not ready: ${JSON.stringify(s)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const text = await databaseDetails(url, 'pr-cli', sandboxToken, [baseline]);
      expect(text).toContain(`postgres://postgres@127.0.0.1:5432/${prefix}pr-cli__${baseline}`);
      expect(text).toContain(`copy of ${baseline}`);
      await fetch(`${url}/v1/sandboxes/pr-cli`, { method: 'DELETE', headers: { authorization: 'Bearer w' } });
    } finally {
      await server.close();
    }
  });

  it('sandbox create --db waits with a progress bar and prints the connection details of the copy', async () => {
    const { server, url } = await startRegistry();
    try {
      const lines: string[] = [];
      const errs: string[] = [];
      const code = await main(
        [
          'node',
          'branchline',
          '--registry',
          url,
          '--token',
          'w',
          'sandbox',
          'create',
          'pr-db',
          '--db',
          baseline,
        ],
        { log: (l) => lines.push(l), err: (l) => errs.push(l), isTTY: false },
      );
      expect(errs.filter((l) => l.startsWith('branchline:'))).toEqual([]);
      expect(code).toBe(0);
      const text = lines.join('\n');
      expect(text).toMatch(/sandbox pr-db is ready/);
      expect(text).toContain('baggage: branchline=pr-db');
      expect(text).toContain(`postgres://postgres@127.0.0.1:5432/${prefix}pr-db__${baseline}`);
      // The copy really exists and holds the baseline's rows.
      const rows = await withClient(`${prefix}pr-db__${baseline}`, (c) =>
        c.query('SELECT count(*)::int AS n FROM orders'),
      );
      expect(rows.rows).toEqual([{ n: 5 }]);
      const del = await main(
        ['node', 'branchline', '--registry', url, '--token', 'w', 'sandbox', 'delete', 'pr-db'],
        {
          log: () => {},
          err: () => {},
          isTTY: false,
        },
      );
      expect(del).toBe(0);
      const left = await admin((c) =>
        c.query('SELECT 1 FROM pg_database WHERE datname = $1', [`${prefix}pr-db__${baseline}`]),
      );
      expect(left.rowCount).toBe(0);
    } finally {
      await server.close();
    }
  });
});
