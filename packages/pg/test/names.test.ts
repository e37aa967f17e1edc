import { describe, expect, it } from 'vitest';
import {
  formatBytes,
  formatConnection,
  parsePostgresSpec,
  parseSandboxDatabaseName,
  renderProgress,
  SandboxDatabaseError,
  sandboxDatabaseName,
  snapshotDatabaseName,
} from '../src/index.js';
import { checkPrefix, nextSnapshotName, quoteIdent } from '../src/names.js';

describe('sandbox database names', () => {
  it('names a sandbox database <prefix><sandbox>__<source> and reads the owner back', () => {
    expect(sandboxDatabaseName('orders', 'pr-42')).toBe('bl_sb_pr-42__orders');
    expect(parseSandboxDatabaseName('bl_sb_pr-42__orders')).toBe('pr-42');
    expect(parseSandboxDatabaseName('bl_sb_pr-42__orders', 'other_')).toBeUndefined();
    expect(parseSandboxDatabaseName('orders')).toBeUndefined();
  });

  it('never exceeds 63 bytes, keeps names distinct, and keeps the owner readable while it fits', () => {
    const long = 'a'.repeat(63);
    const source = 'b'.repeat(63);
    const names = new Set<string>();
    for (const [sb, src] of [
      ['pr-1', source],
      ['pr-2', source],
      [long, 'orders'],
      [long, 'payments'],
      [`${'c'.repeat(40)}`, source],
    ] as const) {
      const name = sandboxDatabaseName(src, sb);
      expect(name.length).toBeLessThanOrEqual(63);
      names.add(name);
    }
    expect(names.size).toBe(5);
    expect(parseSandboxDatabaseName(sandboxDatabaseName(source, 'pr-1'))).toBe('pr-1');
    expect(parseSandboxDatabaseName(sandboxDatabaseName('orders', long))).toBeUndefined();
    expect(snapshotDatabaseName(source).length).toBeLessThanOrEqual(63);
    expect(nextSnapshotName(source).endsWith('__next')).toBe(true);
    expect(nextSnapshotName(source).length).toBeLessThanOrEqual(63);
  });

  it('quotes identifiers so no name can break out of the statement', () => {
    expect(quoteIdent('we"ird')).toBe('"we""ird"');
  });

  it('rejects a prefix the sweeper could confuse with other databases', () => {
    expect(() => checkPrefix('', 'prefix')).toThrow(TypeError);
    expect(() => checkPrefix('orders', 'prefix')).toThrow(/must be 3-24 lowercase/);
    expect(checkPrefix('bl_sb_', 'prefix')).toBe('bl_sb_');
  });
});

describe('resource spec', () => {
  it('reads {from} nested in spec or at the top level, with services and refresh', () => {
    expect(parsePostgresSpec({ from: 'orders' })).toEqual({ from: 'orders' });
    expect(parsePostgresSpec({ type: 'postgres', from: 'orders' })).toEqual({ from: 'orders' });
    expect(parsePostgresSpec({ spec: { from: 'orders', services: ['orders'], refresh: true } })).toEqual({
      from: 'orders',
      services: ['orders'],
      refresh: true,
    });
  });

  it('says which field is wrong, with the value', () => {
    expect(() => parsePostgresSpec({ from: 'a b' })).toThrow(SandboxDatabaseError);
    expect(() => parsePostgresSpec({ from: 'a b' })).toThrow(/spec\.from="a b"/);
    expect(() => parsePostgresSpec({ from: 'x'.repeat(64) })).toThrow(/at most 63/);
    expect(() => parsePostgresSpec({ from: 'orders', refresh: 'yes' })).toThrow(
      /spec\.refresh must be true or false/,
    );
  });
});

describe('progress rendering', () => {
  it('draws a bar with percentage and units', () => {
    expect(
      renderProgress(
        { phase: 'snapshot', done: 3, total: 12, unit: 'tables', message: 'copying public.items' },
        { width: 12 },
      ),
    ).toBe('snapshot   [###---------]   25%  3/12 tables  copying public.items');
    expect(
      renderProgress({ phase: 'cloning', done: 0, total: 100 * 1024 * 1024, unit: 'bytes' }, { width: 4 }),
    ).toBe('cloning    [----]    0%  0 B/100.0 MB');
    expect(renderProgress({ phase: 'preparing', message: 'waiting' })).toBe('preparing  waiting');
    expect(formatBytes(1536)).toBe('1.5 kB');
  });

  it('prints connection details with the password masked', () => {
    const text = formatConnection({
      host: 'db',
      port: 5432,
      database: 'bl_sb_pr-42__orders',
      user: 'app',
      password: 's3cret',
      url: 'postgres://app:s3cret@db:5432/bl_sb_pr-42__orders',
      source: 'orders',
      snapshot: 'branchline_snap_orders',
    });
    expect(text).toContain('postgres://app:****@db:5432/bl_sb_pr-42__orders');
    expect(text).not.toContain('s3cret');
  });
});
