import type { Client, Pool, PoolClient } from 'pg';
import {
  type Lease,
  type LoadedState,
  rowToChange,
  type Secret,
  type Store,
  type WriteContext,
} from './store.js';
import type { Change, PendingChange } from './types.js';

const CHANNEL = 'branchline_changes';
const NOW_MS = 'floor(extract(epoch from clock_timestamp()) * 1000)::bigint';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS branchline_meta (id int PRIMARY KEY CHECK (id = 1), revision bigint NOT NULL, last_time bigint NOT NULL);
INSERT INTO branchline_meta (id, revision, last_time) VALUES (1, 0, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS branchline_objects (id text PRIMARY KEY, kind text NOT NULL, name text NOT NULL, deleted_at bigint, doc text NOT NULL);
CREATE TABLE IF NOT EXISTS branchline_changes (revision bigint PRIMARY KEY, time bigint NOT NULL, type text NOT NULL, kind text NOT NULL, id text NOT NULL, name text NOT NULL, doc text);
CREATE TABLE IF NOT EXISTS branchline_secrets (id text PRIMARY KEY, secret text NOT NULL);
CREATE TABLE IF NOT EXISTS branchline_leases (sandbox_id text NOT NULL, service text NOT NULL, transport text NOT NULL, endpoint text NOT NULL, expires_at bigint NOT NULL, PRIMARY KEY (sandbox_id, service, transport, endpoint));
CREATE TABLE IF NOT EXISTS branchline_claims (key text PRIMARY KEY, holder text NOT NULL, expires_at bigint NOT NULL);
CREATE TABLE IF NOT EXISTS branchline_deliveries (seq bigserial PRIMARY KEY, id text NOT NULL UNIQUE, time bigint NOT NULL);
`;

/**
 * The shared store for several registry replicas. Every write locks the single meta row, so
 * writes are serialised across replicas: revisions are gap-free and in commit order, and a
 * write's time (the database clock, never going backwards) is taken under that lock. Commits
 * NOTIFY the other replicas, which read what they missed from `branchline_changes`.
 */
export class PostgresStore implements Store {
  readonly description: string;
  private pool!: Pool;
  private listener: Client | undefined;
  private listeners: ((revision: number) => void)[] = [];
  private closed = false;

  constructor(readonly url: string) {
    const u = new URL(url);
    this.description = `postgresql ${u.host}${u.pathname}`;
  }

  private async pgModule(): Promise<typeof import('pg')> {
    try {
      const mod = (await import('pg')) as unknown as { default?: typeof import('pg') } & typeof import('pg');
      return mod.default ?? mod;
    } catch {
      throw new Error(
        'branchline registry: the PostgreSQL store needs the "pg" package; install it with `npm install pg`',
      );
    }
  }

  async open(recentLimit: number): Promise<LoadedState> {
    const pg = await this.pgModule();
    this.pool = new pg.Pool({ connectionString: this.url, max: 5 });
    this.pool.on('error', () => undefined);
    const c = await this.pool.connect();
    try {
      await c.query("SELECT pg_advisory_lock(hashtext('branchline_schema'))");
      await c.query(SCHEMA);
      await c.query("SELECT pg_advisory_unlock(hashtext('branchline_schema'))");
      const meta = (await c.query('SELECT revision FROM branchline_meta WHERE id = 1')).rows[0];
      const rows = (await c.query('SELECT kind, doc FROM branchline_objects')).rows;
      const recent = (
        await c.query('SELECT * FROM branchline_changes ORDER BY revision DESC LIMIT $1', [recentLimit])
      ).rows
        .map(rowToChange)
        .reverse();
      await this.listen(pg);
      return {
        revision: Number(meta.revision),
        sandboxes: rows.filter((r) => r.kind === 'sandbox').map((r) => JSON.parse(r.doc)),
        groups: rows.filter((r) => r.kind === 'group').map((r) => JSON.parse(r.doc)),
        recent,
      };
    } finally {
      c.release();
    }
  }

  private async listen(pg: typeof import('pg')): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.url });
    const retry = () => {
      if (this.listener !== client || this.closed) return;
      this.listener = undefined;
      client.end().catch(() => undefined);
      // Missed notifications are harmless: every heartbeat tick catches up from the table.
      setTimeout(() => this.listen(pg).catch(() => undefined), 1000).unref();
    };
    client.on('error', retry);
    client.on('end', retry);
    client.on('notification', (n) => {
      const rev = Number(n.payload);
      for (const l of this.listeners) l(rev);
    });
    this.listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch {
      retry();
    }
  }

  private async tx<T>(fn: (c: PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const r = await fn(c);
      await c.query('COMMIT');
      return r;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  write<T>(
    knownRevision: number,
    decide: (ctx: WriteContext) => { changes: PendingChange[]; result: T },
  ): Promise<{ committed: Change[]; missed: Change[]; result: T }> {
    return this.tx(async (c) => {
      const meta = (await c.query('SELECT revision, last_time FROM branchline_meta WHERE id = 1 FOR UPDATE'))
        .rows[0];
      const now = Number((await c.query(`SELECT ${NOW_MS} AS now`)).rows[0].now);
      let revision = Number(meta.revision);
      const time = Math.max(Number(meta.last_time), now);
      const missed =
        revision > knownRevision
          ? (
              await c.query('SELECT * FROM branchline_changes WHERE revision > $1 ORDER BY revision', [
                knownRevision,
              ])
            ).rows.map(rowToChange)
          : [];
      const { changes, result } = decide({ time, missed });
      const committed: Change[] = [];
      for (const p of changes) {
        revision++;
        const ch: Change = { ...p, revision, time };
        const doc = ch.object ? JSON.stringify(ch.object) : null;
        await c.query(
          'INSERT INTO branchline_changes (revision, time, type, kind, id, name, doc) VALUES ($1, $2, $3, $4, $5, $6, $7)',
          [revision, time, ch.type, ch.kind, ch.id, ch.name, doc],
        );
        if (ch.type === 'forget') {
          await c.query('DELETE FROM branchline_objects WHERE id = $1', [ch.id]);
          await c.query('DELETE FROM branchline_secrets WHERE id = $1', [ch.id]);
          await c.query('DELETE FROM branchline_leases WHERE sandbox_id = $1', [ch.id]);
        } else {
          await c.query(
            'INSERT INTO branchline_objects (id, kind, name, deleted_at, doc) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET name = excluded.name, deleted_at = excluded.deleted_at, doc = excluded.doc',
            [ch.id, ch.kind, ch.name, ch.object?.deletedAt ?? null, doc],
          );
        }
        committed.push(ch);
      }
      if (committed.length) {
        await c.query('UPDATE branchline_meta SET revision = $1, last_time = $2 WHERE id = 1', [
          revision,
          time,
        ]);
        await c.query('SELECT pg_notify($1, $2)', [CHANNEL, String(revision)]);
      }
      return { committed, missed, result };
    });
  }

  async changesSince(revision: number): Promise<Change[]> {
    const r = await this.pool.query(
      'SELECT * FROM branchline_changes WHERE revision > $1 ORDER BY revision',
      [revision],
    );
    return r.rows.map(rowToChange);
  }

  horizon(): Promise<{ revision: number; completeUntil: number }> {
    return this.tx(async (c) => {
      // FOR SHARE waits for any write holding the meta row; the clock is read after that, so
      // every later write gets a time at or after it (commit-then-publish ordering).
      await c.query('SELECT 1 FROM branchline_meta WHERE id = 1 FOR SHARE');
      const row = (
        await c.query(`SELECT revision, last_time, ${NOW_MS} AS now FROM branchline_meta WHERE id = 1`)
      ).rows[0];
      return {
        revision: Number(row.revision),
        completeUntil: Math.max(Number(row.last_time), Number(row.now)),
      };
    });
  }

  onRemoteCommit(listener: (revision: number) => void): void {
    this.listeners.push(listener);
  }

  async pruneChanges(keep: number): Promise<void> {
    await this.pool.query(
      'DELETE FROM branchline_changes WHERE revision <= (SELECT revision FROM branchline_meta WHERE id = 1) - $1',
      [keep],
    );
  }

  async getSecret(id: string): Promise<Secret | undefined> {
    const r = await this.pool.query('SELECT secret FROM branchline_secrets WHERE id = $1', [id]);
    return r.rows[0] ? JSON.parse(r.rows[0].secret) : undefined;
  }

  async putSecret(id: string, secret: Secret): Promise<void> {
    await this.pool.query(
      'INSERT INTO branchline_secrets (id, secret) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET secret = excluded.secret',
      [id, JSON.stringify(secret)],
    );
  }

  async touchLease(l: Lease): Promise<void> {
    await this.pool.query(
      'INSERT INTO branchline_leases (sandbox_id, service, transport, endpoint, expires_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sandbox_id, service, transport, endpoint) DO UPDATE SET expires_at = excluded.expires_at',
      [l.sandboxId, l.service, l.transport, l.endpoint, l.expiresAt],
    );
  }

  async dropLease(l: Omit<Lease, 'expiresAt'>): Promise<void> {
    await this.pool.query(
      'DELETE FROM branchline_leases WHERE sandbox_id = $1 AND service = $2 AND transport = $3 AND endpoint = $4',
      [l.sandboxId, l.service, l.transport, l.endpoint],
    );
  }

  async expiredLeases(now: number): Promise<Lease[]> {
    const r = await this.pool.query('SELECT * FROM branchline_leases WHERE expires_at <= $1', [now]);
    return r.rows.map((x) => ({
      sandboxId: x.sandbox_id,
      service: x.service,
      transport: x.transport,
      endpoint: x.endpoint,
      expiresAt: Number(x.expires_at),
    }));
  }

  /** Expiry on the database clock, so replicas with skewed clocks agree on when a claim ran out. */
  async claim(key: string, holder: string, ttlMs: number): Promise<boolean> {
    const r = await this.pool.query(
      `INSERT INTO branchline_claims (key, holder, expires_at) VALUES ($1, $2, ${NOW_MS} + $3)
       ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
       WHERE branchline_claims.holder = EXCLUDED.holder OR branchline_claims.expires_at < ${NOW_MS}
       RETURNING holder`,
      [key, holder, Math.round(ttlMs)],
    );
    return r.rowCount === 1;
  }

  async releaseClaim(key: string, holder: string): Promise<void> {
    await this.pool.query('DELETE FROM branchline_claims WHERE key = $1 AND holder = $2', [key, holder]);
  }

  /** The unique id makes the insert the decision: of two replicas recording one id, one wins. */
  async recordDelivery(id: string, keep: number): Promise<boolean> {
    const r = await this.pool.query(
      `INSERT INTO branchline_deliveries (id, time) VALUES ($1, ${NOW_MS}) ON CONFLICT (id) DO NOTHING RETURNING seq`,
      [id],
    );
    if (r.rowCount !== 1) return false;
    await this.pool.query('DELETE FROM branchline_deliveries WHERE seq <= $1', [
      Number(r.rows[0].seq) - keep,
    ]);
    return true;
  }

  async forgetDelivery(id: string): Promise<void> {
    await this.pool.query('DELETE FROM branchline_deliveries WHERE id = $1', [id]);
  }

  async close(): Promise<void> {
    this.closed = true;
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => undefined);
    await this.pool?.end().catch(() => undefined);
  }
}
