import { describe, expect, it } from 'vitest';
import { decideIncoming, decideMessage } from '../src/decide.js';
import { RouteTable, RouteTableError } from '../src/routes.js';

const table = RouteTable.from({
  sandboxes: [
    {
      name: 'pay-fee',
      key: 'pay-fee',
      overrides: { payments: { http: 'http://127.0.0.1:4001' } },
      labels: { feature: 'checkout' },
      createdAt: 100,
    },
    {
      name: 'ord-v2',
      key: 'ord-v2',
      overrides: { orders: { http: ['http://127.0.0.1:4002', 'http://127.0.0.1:4003'] } },
      labels: { feature: 'checkout' },
      createdAt: 200,
    },
    {
      name: 'pay-alt',
      key: 'pay-alt',
      overrides: { payments: { http: 'http://127.0.0.1:4004' } },
      labels: { feature: 'checkout' },
      createdAt: 300,
    },
  ],
  groups: [{ name: 'checkout', key: 'checkout', match: { labels: { feature: 'checkout' } } }],
});

describe('route table', () => {
  it('resolves (service, key) to the sandbox that overrides it, and nothing else', () => {
    expect(table.resolve('payments', 'pay-fee')?.sandbox).toBe('pay-fee');
    expect(table.resolve('payments', 'pay-fee')?.http).toEqual(['http://127.0.0.1:4001']);
    expect(table.resolve('orders', 'pay-fee')).toBeUndefined();
    expect(table.resolve('payments', 'unknown')).toBeUndefined();
    expect(table.resolve('payments', undefined)).toBeUndefined();
  });

  it('resolves a route-group key to each matched sandbox, the older one winning a conflict', () => {
    expect(table.resolve('orders', 'checkout')?.sandbox).toBe('ord-v2');
    expect(table.resolve('payments', 'checkout')).toMatchObject({ sandbox: 'pay-fee', group: 'checkout' });
    expect(table.conflicts).toEqual([
      { group: 'checkout', service: 'payments', winner: 'pay-fee', losers: ['pay-alt'] },
    ]);
    expect(table.groupMembers('checkout').map((s) => s.name)).toEqual(['pay-fee', 'ord-v2', 'pay-alt']);
    expect(table.groupMembers('pay-fee')).toEqual([]);
  });

  it('rejects bad documents naming the field and the value', () => {
    const bad = (doc: unknown) => {
      try {
        RouteTable.from(doc);
      } catch (e) {
        expect(e).toBeInstanceOf(RouteTableError);
        return (e as Error).message;
      }
      throw new Error('expected an error');
    };
    expect(bad({ sandboxes: [{ name: 'a', key: 'Bad Key' }] })).toMatch(/sandboxes\[0\]\.key .*"Bad Key"/);
    expect(bad({ sandboxes: [{ name: 'a', key: 'a', overrides: { s: { http: 'ftp://x' } } }] })).toMatch(
      /sandboxes\[0\]\.overrides\.s\.http must use http/,
    );
    expect(
      bad({
        sandboxes: [
          { name: 'a', key: 'k' },
          { name: 'b', key: 'k' },
        ],
      }),
    ).toMatch(/sandboxes\[1\]\.key .*already the key of sandbox a/);
    expect(bad({ groups: [{ name: 'g', key: 'g', match: { labels: {}, mode: 'some' } }] })).toMatch(
      /groups\[0\]\.match\.mode/,
    );
    expect(bad([])).toMatch(/\(root\)/);
  });

  it('decides ownership by time from history and tombstones, so lagging consumers agree', () => {
    const t = RouteTable.from({
      completeUntil: 10_000,
      sandboxes: [
        { name: 'old', key: 'k', overrides: { ship: { http: 'http://h:1' } }, createdAt: 0, deletedAt: 1000 },
        {
          name: 'new',
          key: 'k',
          overrides: { ship: { http: 'http://h:2' } },
          createdAt: 2000,
          history: { ship: [{ from: 2500, to: 3000 }, { from: 4000 }] },
        },
      ],
    });
    expect(t.owner('ship', 'k', 500)).toBe('old');
    expect(t.owner('ship', 'k', 1500)).toBeUndefined();
    expect(t.owner('ship', 'k', 2600)).toBe('new');
    expect(t.owner('ship', 'k', 3500)).toBeUndefined();
    expect(t.owner('ship', 'k', 5000)).toBe('new');
    expect(t.owner('ship', 'k')).toBe('new');
    expect(decideMessage({ table: t, service: 'ship', sandbox: undefined, key: 'k', at: 1500 })).toEqual({
      action: 'process',
      owner: undefined,
    });
    expect(decideMessage({ table: t, service: 'ship', sandbox: 'new', key: 'k', at: 5000 })).toEqual({
      action: 'process',
      owner: 'new',
    });
    expect(decideMessage({ table: t, service: 'ship', sandbox: undefined, key: 'k', at: 5000 })).toEqual({
      action: 'skip',
      owner: 'new',
    });
    expect(decideMessage({ table: t, service: 'ship', sandbox: undefined, key: 'k', at: 20_000 })).toEqual({
      action: 'wait',
      reason: 'view-behind-message',
    });
    expect(decideMessage({ table: undefined, service: 'ship', sandbox: undefined, key: 'k' })).toEqual({
      action: 'wait',
      reason: 'never-synced',
    });
    expect(decideMessage({ table: undefined, service: 'ship', sandbox: undefined, key: undefined })).toEqual({
      action: 'process',
      owner: undefined,
    });
  });

  it('decides incoming requests: forward from baseline, serve in the sandbox, stop loops', () => {
    const base = {
      table,
      service: 'payments',
      sandbox: undefined,
      forwarded: false,
      transport: 'http' as const,
    };
    expect(decideIncoming({ ...base, key: undefined })).toEqual({ action: 'serve', reason: 'no-key' });
    expect(decideIncoming({ ...base, key: 'ord-v2' })).toEqual({ action: 'serve', reason: 'no-rule' });
    expect(decideIncoming({ ...base, key: 'pay-fee' })).toMatchObject({
      action: 'forward',
      endpoint: 'http://127.0.0.1:4001',
    });
    expect(decideIncoming({ ...base, key: 'pay-fee', forwarded: true })).toMatchObject({
      action: 'serve',
      reason: 'loop',
    });
    expect(decideIncoming({ ...base, key: 'pay-fee', sandbox: 'pay-fee' })).toEqual({
      action: 'serve',
      reason: 'sandbox-instance',
    });
    expect(decideIncoming({ ...base, key: 'pay-fee', transport: 'grpc' })).toEqual({
      action: 'serve',
      reason: 'no-endpoint',
    });
  });
});
