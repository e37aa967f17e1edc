import { afterEach, describe, expect, it } from 'vitest';
import {
  backoffDelay,
  createMessageSelector,
  getRoutingKey,
  HoldAbandonedError,
  HoldTimeoutError,
  type OwnersChange,
  RouteTable,
  resolveBackoff,
  type SandboxSpec,
  StaticRouteSource,
  setLogger,
} from '../src/index.js';

const T0 = 1_000_000;

function sandboxSpec(name: string, from: number, to?: number): SandboxSpec {
  return {
    name,
    key: name,
    overrides: { orders: { http: 'http://127.0.0.1:1' } },
    createdAt: from,
    history: { orders: [{ from, to: to ?? null }] },
  };
}

function table(completeUntil: number, sandboxes: SandboxSpec[]): RouteTable {
  return RouteTable.from({ revision: 1, completeUntil, sandboxes });
}

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
  setLogger(undefined);
});

function selector(source: StaticRouteSource, sandbox?: string, holdTimeoutMs = 2000) {
  const s = createMessageSelector({
    service: 'orders',
    sandbox: sandbox ?? null,
    routes: source,
    holdTimeoutMs,
  });
  closers.push(() => s.close());
  return s;
}

describe('message selector: decisions', () => {
  it('baseline and sandbox agree by the ownership history at the message time', () => {
    const source = new StaticRouteSource(table(T0 + 10_000, [sandboxSpec('feat-a', T0 + 1000, T0 + 5000)]));
    const base = selector(source);
    const sb = selector(source, 'feat-a');
    // Before, during and after the override interval.
    for (const [at, owner] of [
      [T0, undefined],
      [T0 + 2000, 'feat-a'],
      [T0 + 6000, undefined],
    ] as const) {
      const b = base.decide('feat-a', at);
      const s = sb.decide('feat-a', at);
      expect(b.action === 'process').toBe(owner === undefined);
      expect(s.action === 'process').toBe(owner === 'feat-a');
      // Exactly one of the two processes.
      expect([b.action, s.action].filter((a) => a === 'process')).toHaveLength(1);
    }
    expect(base.decide(undefined, T0)).toEqual({ action: 'process', owner: undefined });
    expect(sb.decide(undefined, T0)).toEqual({ action: 'skip', owner: undefined });
    expect(base.decide('other-key', T0 + 2000).action).toBe('process');
  });

  it('holds a message the view does not reach yet, and one with no table at all', () => {
    const never = selector(new StaticRouteSource());
    expect(never.decide('feat-a', T0)).toEqual({ action: 'hold', reason: 'never-synced' });
    expect(never.decide(undefined, T0).action).toBe('process');
    const behind = selector(new StaticRouteSource(table(T0, [])));
    expect(behind.decide('feat-a', T0 + 1)).toEqual({ action: 'hold', reason: 'view-behind-message' });
    expect(behind.decideNow('feat-a')).toEqual({ action: 'process', owner: undefined });
  });

  it('reads the key from a carrier and from a cached baggage value', () => {
    const source = new StaticRouteSource(table(T0 + 10_000, [sandboxSpec('feat-a', T0)]));
    const base = selector(source);
    const headers = { baggage: Buffer.from('branchline=feat-a,other=1') };
    const { key, selection } = base.decideCarrier(
      headers,
      {
        keys: (c) => Object.keys(c),
        get: (c, k) => (k === 'baggage' ? c.baggage.toString() : undefined),
      },
      T0 + 1,
    );
    expect(key).toBe('feat-a');
    expect(selection).toEqual({ action: 'skip', owner: 'feat-a' });
    expect(base.baggageOnly).toBe(true);
    expect(base.keyFromBaggage('branchline=feat-a')).toBe('feat-a');
    expect(base.keyFromBaggage('branchline=feat-a')).toBe('feat-a');
    expect(base.keyFromBaggage('other=1')).toBeUndefined();
    expect(base.keyFromBaggage('branchline=NOT VALID')).toBeUndefined();
  });
});

describe('message selector: holds', () => {
  it('a hold ends with the decision once the route source catches up', async () => {
    const source = new StaticRouteSource(table(T0, []));
    const sb = selector(source, 'feat-a');
    const beats: number[] = [];
    const held = sb.hold('feat-a', T0 + 500, { heartbeat: () => beats.push(1) });
    await new Promise((r) => setTimeout(r, 50));
    source.update(table(T0 + 1000, [sandboxSpec('feat-a', T0 + 100)]));
    await expect(held).resolves.toEqual({ action: 'process', owner: 'feat-a' });
    expect(beats.length).toBeGreaterThanOrEqual(1);
    expect(sb.stats).toMatchObject({ held: 1, holdTimeouts: 0 });
  });

  it('a hold that times out rejects with HoldTimeoutError, or decides now when asked', async () => {
    const source = new StaticRouteSource();
    const base = selector(source, undefined, 150);
    const started = Date.now();
    const err = await base.hold('feat-a', T0, { where: 'orders[0]@7' }).catch((e) => e);
    expect(err).toBeInstanceOf(HoldTimeoutError);
    expect(err.reason).toBe('never-synced');
    expect(err.message).toContain('orders[0]@7');
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    await expect(base.hold('feat-a', T0, { onTimeout: 'decide-now' })).resolves.toEqual({
      action: 'process',
      owner: undefined,
    });
    expect(base.stats).toMatchObject({ held: 2, holdTimeouts: 2 });
    const custom = await base
      .hold('feat-a', T0, { timeoutError: (r) => new RangeError(`custom ${r}`) })
      .catch((e) => e);
    expect(custom).toBeInstanceOf(RangeError);
  });

  it('aborting, or closing the selector, abandons a hold', async () => {
    const base = selector(new StaticRouteSource(), undefined, 10_000);
    const ac = new AbortController();
    const held = base.hold('feat-a', T0, { signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await expect(held).rejects.toBeInstanceOf(HoldAbandonedError);
    const held2 = base.hold('feat-a', T0);
    setTimeout(() => base.close(), 20);
    await expect(held2).rejects.toBeInstanceOf(HoldAbandonedError);
  });

  it('waitForView resolves true on a new table and false after its timeout', async () => {
    const source = new StaticRouteSource(table(T0, []));
    const base = selector(source);
    await expect(base.waitForView(30)).resolves.toBe(false);
    const w = base.waitForView(5000);
    source.update(table(T0 + 1, []));
    await expect(w).resolves.toBe(true);
  });
});

describe('message selector: owners', () => {
  it('reports sandboxes that start and stop overriding the service, with their intervals', () => {
    const source = new StaticRouteSource(table(T0 + 100, [sandboxSpec('feat-a', T0)]));
    const base = selector(source);
    const changes: OwnersChange[] = [];
    const off = base.onOwnersChanged((c) => changes.push(c));
    expect(changes[0]).toMatchObject({ initial: true, removed: [] });
    expect(changes[0]!.added.map((o) => [o.sandbox, o.since])).toEqual([['feat-a', T0]]);

    // A heartbeat and a sandbox that overrides another service change nothing.
    source.update(table(T0 + 200, [sandboxSpec('feat-a', T0)]));
    source.update(
      table(T0 + 300, [
        sandboxSpec('feat-a', T0),
        { name: 'pay-b', key: 'pay-b', overrides: { payments: { http: 'http://127.0.0.1:1' } } },
      ]),
    );
    expect(changes).toHaveLength(1);

    source.update(table(T0 + 400, [sandboxSpec('feat-a', T0), sandboxSpec('feat-b', T0 + 350)]));
    expect(changes[1]).toMatchObject({ initial: false, removed: [] });
    expect(changes[1]!.added).toEqual([
      { sandbox: 'feat-b', key: 'feat-b', intervals: [{ from: T0 + 350, to: null }], since: T0 + 350 },
    ]);
    expect([...base.owners].sort()).toEqual(['feat-a', 'feat-b']);
    expect(base.ownership('feat-b')?.since).toBe(T0 + 350);

    source.update(table(T0 + 500, [sandboxSpec('feat-b', T0 + 350)]));
    expect(changes[2]!.added).toEqual([]);
    expect(changes[2]!.removed).toEqual([
      {
        sandbox: 'feat-a',
        key: 'feat-a',
        intervals: [{ from: T0, to: null }],
        since: T0,
        until: T0 + 500,
        deleted: true,
      },
    ]);
    // Override removed, sandbox kept: removed but not deleted.
    source.update(
      table(T0 + 600, [
        { name: 'feat-b', key: 'feat-b', overrides: { payments: { http: 'http://127.0.0.1:1' } } },
      ]),
    );
    expect(changes[3]!.removed).toMatchObject([{ sandbox: 'feat-b', deleted: false, until: T0 + 600 }]);
    off();
    source.update(table(T0 + 700, [sandboxSpec('feat-c', T0 + 650)]));
    expect(changes).toHaveLength(4);
  });

  it('activation time: history start, or the view edge for a sandbox not in the view yet', () => {
    const source = new StaticRouteSource(table(T0 + 100, [sandboxSpec('feat-a', T0 + 10)]));
    const sb = selector(source, 'feat-a');
    expect(sb.activationTime()).toBe(T0 + 10);
    expect(sb.activationTime(undefined, 'feat-z')).toBe(T0 + 100);
  });
});

describe('message selector: context, counters, options', () => {
  it('runs the handler in the key context and counts', async () => {
    const base = selector(new StaticRouteSource(table(T0, [])));
    expect(base.run('feat-a', () => getRoutingKey())).toBe('feat-a');
    expect(
      await base.run('feat-b', async () => {
        await new Promise((r) => setTimeout(r, 1));
        return getRoutingKey();
      }),
    ).toBe('feat-b');
    expect(base.run(undefined, () => getRoutingKey())).toBeUndefined();
    base.noteProcessed(3);
    base.noteSkipped();
    expect(base.stats).toMatchObject({ processed: 3, skipped: 1 });
  });

  it('rejects bad options with a clear answer', () => {
    const routes = new StaticRouteSource(table(T0, []));
    expect(() => createMessageSelector({ sandbox: null, routes, transport: 'nats' })).toThrow(
      /nats consumer needs its service name/,
    );
    expect(() => createMessageSelector({ service: 'orders', sandbox: 'Bad Name', routes })).toThrow(
      /not a sandbox name/,
    );
    expect(() => createMessageSelector({ service: 'orders', routes, holdTimeoutMs: -1 })).toThrow(
      /holdTimeoutMs must be a number of milliseconds/,
    );
    expect(() => createMessageSelector({ service: 'orders', routes, backoff: { factor: 0.5 } })).toThrow(
      /factor must be a number >= 1/,
    );
  });

  it('backoff: one shape, deprecated names accepted with one warning', () => {
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, error() {}, warn: (m) => warnings.push(m) });
    expect(resolveBackoff(undefined)).toEqual({ initialMs: 100, maxMs: 5000, factor: 2 });
    expect(resolveBackoff({ initialDelayMs: 50, maxDelayMs: 800 }, 'test-alias')).toEqual({
      initialMs: 50,
      maxMs: 800,
      factor: 2,
    });
    resolveBackoff({ initialDelayMs: 60 }, 'test-alias');
    expect(warnings.filter((w) => w.includes('initialDelayMs'))).toHaveLength(1);
    expect(warnings.find((w) => w.includes('initialDelayMs'))).toContain('use initialMs');
    expect(resolveBackoff({ initialMs: 10, initialDelayMs: 99 }, 'test-alias').initialMs).toBe(10);
    const b = resolveBackoff({ initialMs: 100, maxMs: 1000, factor: 2 });
    for (let i = 0; i < 20; i++) {
      const d = backoffDelay(b, 10);
      expect(d).toBeGreaterThanOrEqual(800);
      expect(d).toBeLessThanOrEqual(1200);
    }
    expect(backoffDelay(b, 0)).toBeLessThanOrEqual(120);
  });
});
