import { describe, expect, it } from 'vitest';
import { type RouteGroupSpec, RouteTable, type SandboxSpec } from '../src/routes.js';

// RouteTable.derive must answer exactly like a table compiled from scratch. Random histories of
// creates, replaces, deletions (tombstones), forgets, key reuse and route groups are applied both
// ways and every answer the table gives is compared.

const SERVICES = ['payments', 'orders', 'ledger'];
const NAMES = ['a', 'b', 'c', 'd', 'e', 'f'];
const LABELS: Record<string, string>[] = [{}, { team: 'x' }, { team: 'y' }, { team: 'x', pr: '1' }];
const TIMES = [0, 50, 150, 250, 350, 1000, 5000];

function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return s / 0x7fffffff;
  };
}

function view(t: RouteTable): unknown {
  const keys = [...NAMES, ...NAMES.map((n) => `k-${n}`), 'g-x', 'g-y', 'g-any'];
  return {
    revision: t.revision,
    completeUntil: t.completeUntil,
    sandboxes: t.sandboxes.map((s) => s.name),
    groups: t.groups.map((g) => g.name),
    conflicts: t.conflicts,
    rules: t.rules().sort((x, y) => (x.service + x.key < y.service + y.key ? -1 : 1)),
    resolve: keys.flatMap((k) => SERVICES.map((s) => t.resolve(s, k) ?? null)),
    members: keys.map((k) => t.groupMembers(k).map((s) => s.name)),
    byName: NAMES.map((n) => t.sandbox(n) ?? null),
    overridden: SERVICES.map((s) => t.isOverridden(s)),
    owner: keys.flatMap((k) => SERVICES.flatMap((s) => TIMES.map((at) => t.owner(s, k, at) ?? null))),
    ownerNow: keys.flatMap((k) => SERVICES.map((s) => t.owner(s, k) ?? null)),
  };
}

describe('RouteTable.derive', () => {
  it('answers like a rebuild over random histories of sandbox changes, with route groups present', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const r = rng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
      const sandboxes = new Map<string, SandboxSpec>();
      const groups: RouteGroupSpec[] = [
        { name: 'gx', key: 'g-x', match: { labels: { team: 'x' } }, createdAt: 10 },
        { name: 'gy', key: 'g-y', match: { labels: { team: 'y', pr: '1' }, mode: 'any' }, createdAt: 20 },
      ];
      if (seed % 3 === 0) groups.length = 0;
      let ids = 0;
      let now = 100;
      let table = new RouteTable({ revision: 0, sandboxes: [], groups });
      for (let step = 0; step < 40; step++) {
        const changes: [SandboxSpec | undefined, SandboxSpec | undefined][] = [];
        const batch = 1 + Math.floor(r() * 3);
        for (let j = 0; j < batch; j++) {
          now += Math.floor(r() * 30);
          const live = [...sandboxes.entries()].filter(([, s]) => s.deletedAt == null);
          const dead = [...sandboxes.entries()].filter(([, s]) => s.deletedAt != null);
          const op = r();
          const overrides = () =>
            Object.fromEntries(
              SERVICES.filter(() => r() < 0.5).map((s) => [
                s,
                { http: `http://10.0.0.${Math.floor(r() * 9)}:80` },
              ]),
            );
          if (op < 0.35 || live.length === 0) {
            const name = pick(NAMES);
            if (live.some(([, s]) => s.name === name)) continue;
            const s: SandboxSpec = {
              name,
              key: r() < 0.5 ? name : `k-${name}`,
              overrides: overrides(),
              labels: pick(LABELS),
              createdAt: now,
              history: {},
            };
            const id = `id-${ids++}`;
            changes.push([undefined, s]);
            sandboxes.set(id, s);
          } else if (op < 0.7) {
            const [id, old] = pick(live);
            const s: SandboxSpec = {
              ...old,
              overrides: overrides(),
              labels: r() < 0.3 ? pick(LABELS) : old.labels,
            };
            changes.push([old, s]);
            sandboxes.set(id, s);
          } else if (op < 0.9) {
            const [id, old] = pick(live);
            const s: SandboxSpec = { ...old, deletedAt: now };
            changes.push([old, s]);
            sandboxes.set(id, s);
          } else if (dead.length) {
            const [id, old] = pick(dead);
            changes.push([old, undefined]);
            sandboxes.delete(id);
          }
        }
        const spec = { revision: step + 1, completeUntil: now, sandboxes: [...sandboxes.values()], groups };
        const derived = table.derive({ ...spec, changedSandboxes: changes, groupsChanged: false });
        const rebuilt = new RouteTable(spec);
        expect(view(derived), `seed ${seed} step ${step}`).toEqual(view(rebuilt));
        table = derived;
      }
    }
  });

  it('withCompleteUntil moves only the horizon: same answers, same rules, the earlier table untouched', () => {
    const a: SandboxSpec = {
      name: 'a',
      key: 'a',
      createdAt: 100,
      deletedAt: 200,
      overrides: { payments: { http: 'http://10.0.0.1:80' } },
    };
    const b: SandboxSpec = { name: 'b', key: 'b', overrides: { orders: { http: 'http://10.0.0.2:80' } } };
    const t1 = new RouteTable({ revision: 4, completeUntil: 1000, sandboxes: [a, b] });
    const t2 = t1.withCompleteUntil(1500);
    expect(t2.completeUntil).toBe(1500);
    expect(t1.completeUntil).toBe(1000);
    expect(t2.revision).toBe(4);
    expect(t2.resolve('orders', 'b')).toBe(t1.resolve('orders', 'b'));
    expect(t2.sandboxes.map((s) => s.name)).toEqual(['b']);
    expect(t2.owner('payments', 'a', 150)).toBe('a');
    expect(t2.owner('payments', 'a', 250)).toBeUndefined();
  });

  it('shares what did not change and leaves the earlier table as it was', () => {
    const a: SandboxSpec = { name: 'a', key: 'a', overrides: { payments: { http: 'http://10.0.0.1:80' } } };
    const b: SandboxSpec = { name: 'b', key: 'b', overrides: { orders: { http: 'http://10.0.0.2:80' } } };
    const t1 = new RouteTable({ revision: 1, sandboxes: [a, b] });
    const a2: SandboxSpec = { ...a, overrides: { payments: { http: 'http://10.0.0.9:80' } } };
    const t2 = t1.derive({
      revision: 2,
      sandboxes: [a2, b],
      groups: [],
      changedSandboxes: [[a, a2]],
      groupsChanged: false,
    });
    expect(t2.resolve('payments', 'a')?.http).toEqual(['http://10.0.0.9:80']);
    expect(t1.resolve('payments', 'a')?.http).toEqual(['http://10.0.0.1:80']);
    expect(t2.resolve('orders', 'b')).toBe(t1.resolve('orders', 'b'));
    expect(t2).toBeInstanceOf(RouteTable);
    const t3 = t2.derive({
      revision: 3,
      sandboxes: [b],
      groups: [],
      changedSandboxes: [[a2, undefined]],
      groupsChanged: false,
    });
    expect(t3.isOverridden('payments')).toBe(false);
    expect(t2.isOverridden('payments')).toBe(true);
  });

  it('rebuilds when route groups change, and compiles a bad endpoint the same way (it throws)', () => {
    const a: SandboxSpec = {
      name: 'a',
      key: 'a',
      overrides: { payments: { http: 'http://10.0.0.1:80' } },
      labels: { team: 'x' },
    };
    const t1 = new RouteTable({ sandboxes: [a] });
    const g: RouteGroupSpec = { name: 'gx', key: 'g-x', match: { labels: { team: 'x' } } };
    const t2 = t1.derive({ sandboxes: [a], groups: [g], changedSandboxes: [], groupsChanged: true });
    expect(t2.resolve('payments', 'g-x')?.sandbox).toBe('a');
    const bad: SandboxSpec = { name: 'b', key: 'b', overrides: { payments: { http: 'not a url' } } };
    expect(() =>
      t2.derive({
        sandboxes: [a, bad],
        groups: [g],
        changedSandboxes: [[undefined, bad]],
        groupsChanged: false,
      }),
    ).toThrow(/absolute http/);
  });
});
