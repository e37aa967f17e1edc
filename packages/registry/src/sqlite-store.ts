import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import {
  type Lease,
  type LoadedState,
  rowToChange,
  type Secret,
  type Store,
  type WriteContext,
} from './store.js';
import type { Change, PendingChange } from './types.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS branchline_meta (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL, last_time INTEGER NOT NULL);
INSERT OR IGNORE INTO branchline_meta (id, revision, last_time) VALUES (1, 0, 0);
CREATE TABLE IF NOT EXISTS branchline_objects (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, deleted_at INTEGER, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS branchline_changes (revision INTEGER PRIMARY KEY, time INTEGER NOT NULL, type TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, doc TEXT);
CREATE TABLE IF NOT EXISTS branchline_secrets (id TEXT PRIMARY KEY, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS branchline_leases (sandbox_id TEXT NOT NULL, service TEXT NOT NULL, transport TEXT NOT NULL, endpoint TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (sandbox_id, service, transport, endpoint));
CREATE TABLE IF NOT EXISTS branchline_deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, time INTEGER NOT NULL);
`;

/**
 * The embedded store: one SQLite file through Node's built-in `node:sqlite` (no native build),
 * WAL journal, every write one transaction. One registry process per file.
 */
export class SqliteStore implements Store {
  readonly description: string;
  private readonly db: DatabaseSync;
  /** Highest completeUntil handed out, so later writes never get an earlier time. */
  private announced = 0;
  private readonly statements = new Map<string, StatementSync>();

  /** Prepared once per SQL text: compiling a statement costs more than running it. */
  private sql(text: string): StatementSync {
    let st = this.statements.get(text);
    if (!st) {
      st = this.db.prepare(text);
      this.statements.set(text, st);
    }
    return st;
  }

  constructor(readonly path: string) {
    this.description = `sqlite ${path}`;
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new DatabaseSync(path);
    this.db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;');
    this.db.exec(SCHEMA);
  }

  async open(recentLimit: number): Promise<LoadedState> {
    const meta = this.sql('SELECT revision, last_time FROM branchline_meta WHERE id = 1').get() as {
      revision: number;
      last_time: number;
    };
    this.announced = Number(meta.last_time);
    const rows = this.sql('SELECT kind, doc FROM branchline_objects').all() as {
      kind: string;
      doc: string;
    }[];
    const recent = (
      this.sql('SELECT * FROM branchline_changes ORDER BY revision DESC LIMIT ?').all(recentLimit) as never[]
    )
      .map(rowToChange)
      .reverse();
    return {
      revision: Number(meta.revision),
      sandboxes: rows.filter((r) => r.kind === 'sandbox').map((r) => JSON.parse(r.doc)),
      groups: rows.filter((r) => r.kind === 'group').map((r) => JSON.parse(r.doc)),
      recent,
    };
  }

  async write<T>(
    knownRevision: number,
    decide: (ctx: WriteContext) => { changes: PendingChange[]; result: T },
  ): Promise<{ committed: Change[]; missed: Change[]; result: T }> {
    const db = this.db;
    db.exec('BEGIN IMMEDIATE');
    try {
      const meta = this.sql('SELECT revision, last_time FROM branchline_meta WHERE id = 1').get() as {
        revision: number;
        last_time: number;
      };
      let revision = Number(meta.revision);
      const time = Math.max(Number(meta.last_time), this.announced, Date.now());
      const missed =
        revision > knownRevision
          ? (
              this.sql('SELECT * FROM branchline_changes WHERE revision > ? ORDER BY revision').all(
                knownRevision,
              ) as never[]
            ).map(rowToChange)
          : [];
      const { changes, result } = decide({ time, missed });
      const committed: Change[] = [];
      const insertChange = this.sql(
        'INSERT INTO branchline_changes (revision, time, type, kind, id, name, doc) VALUES (?, ?, ?, ?, ?, ?, ?)',
      );
      const upsert = this.sql(
        'INSERT INTO branchline_objects (id, kind, name, deleted_at, doc) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, deleted_at = excluded.deleted_at, doc = excluded.doc',
      );
      const forget = this.sql('DELETE FROM branchline_objects WHERE id = ?');
      for (const p of changes) {
        revision++;
        const c: Change = { ...p, revision, time };
        const doc = c.object ? JSON.stringify(c.object) : null;
        insertChange.run(revision, time, c.type, c.kind, c.id, c.name, doc);
        if (c.type === 'forget') {
          forget.run(c.id);
          this.sql('DELETE FROM branchline_secrets WHERE id = ?').run(c.id);
          this.sql('DELETE FROM branchline_leases WHERE sandbox_id = ?').run(c.id);
        } else upsert.run(c.id, c.kind, c.name, c.object?.deletedAt ?? null, doc!);
        committed.push(c);
      }
      if (committed.length)
        this.sql('UPDATE branchline_meta SET revision = ?, last_time = ? WHERE id = 1').run(revision, time);
      db.exec('COMMIT');
      return { committed, missed, result };
    } catch (err) {
      if (db.isTransaction) db.exec('ROLLBACK');
      throw err;
    }
  }

  async changesSince(revision: number): Promise<Change[]> {
    return (
      this.sql('SELECT * FROM branchline_changes WHERE revision > ? ORDER BY revision').all(
        revision,
      ) as never[]
    ).map(rowToChange);
  }

  async horizon(): Promise<{ revision: number; completeUntil: number }> {
    const meta = this.sql('SELECT revision, last_time FROM branchline_meta WHERE id = 1').get() as {
      revision: number;
      last_time: number;
    };
    // Writes are synchronous in this process, so none is in flight: everything before now is in.
    this.announced = Math.max(this.announced, Number(meta.last_time), Date.now());
    return { revision: Number(meta.revision), completeUntil: this.announced };
  }

  onRemoteCommit(): void {
    // One process per file: there is no other replica to hear from.
  }

  async pruneChanges(keep: number): Promise<void> {
    this.sql(
      'DELETE FROM branchline_changes WHERE revision <= (SELECT revision FROM branchline_meta WHERE id = 1) - ?',
    ).run(keep);
  }

  async getSecret(id: string): Promise<Secret | undefined> {
    const row = this.sql('SELECT secret FROM branchline_secrets WHERE id = ?').get(id) as
      | { secret: string }
      | undefined;
    return row ? JSON.parse(row.secret) : undefined;
  }

  async putSecret(id: string, secret: Secret): Promise<void> {
    this.sql(
      'INSERT INTO branchline_secrets (id, secret) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET secret = excluded.secret',
    ).run(id, JSON.stringify(secret));
  }

  async touchLease(l: Lease): Promise<void> {
    this.sql(
      'INSERT INTO branchline_leases (sandbox_id, service, transport, endpoint, expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET expires_at = excluded.expires_at',
    ).run(l.sandboxId, l.service, l.transport, l.endpoint, l.expiresAt);
  }

  async dropLease(l: Omit<Lease, 'expiresAt'>): Promise<void> {
    this.sql(
      'DELETE FROM branchline_leases WHERE sandbox_id = ? AND service = ? AND transport = ? AND endpoint = ?',
    ).run(l.sandboxId, l.service, l.transport, l.endpoint);
  }

  async expiredLeases(now: number): Promise<Lease[]> {
    const rows = this.sql('SELECT * FROM branchline_leases WHERE expires_at <= ?').all(now) as {
      sandbox_id: string;
      service: string;
      transport: 'http' | 'grpc';
      endpoint: string;
      expires_at: number;
    }[];
    return rows.map((r) => ({
      sandboxId: r.sandbox_id,
      service: r.service,
      transport: r.transport,
      endpoint: r.endpoint,
      expiresAt: Number(r.expires_at),
    }));
  }

  /** One registry process per file: it always has every claim. */
  async claim(): Promise<boolean> {
    return true;
  }

  async releaseClaim(): Promise<void> {}

  async recordDelivery(id: string, keep: number): Promise<boolean> {
    const r = this.sql('INSERT OR IGNORE INTO branchline_deliveries (id, time) VALUES (?, ?)').run(
      id,
      Date.now(),
    );
    if (r.changes === 0) return false;
    this.sql('DELETE FROM branchline_deliveries WHERE seq <= ?').run(Number(r.lastInsertRowid) - keep);
    return true;
  }

  async forgetDelivery(id: string): Promise<void> {
    this.sql('DELETE FROM branchline_deliveries WHERE id = ?').run(id);
  }

  async close(): Promise<void> {
    if (this.db.isOpen) this.db.close();
  }
}
