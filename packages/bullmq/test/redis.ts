import { randomBytes } from 'node:crypto';
import type { RouteTableSpec, SandboxSpec } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach } from 'vitest';
import { instrumentQueue } from '../src/index.js';

export const REDIS = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null } as const;

/** A BullMQ key prefix of its own per test: nothing collides, and removing it removes everything. */
export function uniquePrefix(name: string): string {
  return `bltest-${name}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

export async function removePrefix(prefix: string): Promise<void> {
  const r = new Redis(REDIS);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

export async function keysOf(pattern: string): Promise<string[]> {
  const r = new Redis(REDIS);
  try {
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      out.push(...keys);
    } while (cursor !== '0');
    return out;
  } finally {
    r.disconnect();
  }
}

/** Drops every Redis connection whose client name starts with `prefix` (BullMQ names them so). */
export async function killClients(prefix: string): Promise<number> {
  const r = new Redis(REDIS);
  try {
    const list = (await r.client('LIST')) as string;
    let n = 0;
    for (const line of list.split('\n')) {
      const id = /\bid=(\d+)/.exec(line)?.[1];
      const name = /\bname=(\S*)/.exec(line)?.[1] ?? '';
      if (id && name.startsWith(prefix)) {
        await r.client('KILL', 'ID', id).catch(() => undefined);
        n++;
      }
    }
    return n;
  } finally {
    r.disconnect();
  }
}

const ep = { http: 'http://127.0.0.1:1' };

/** A registry stand-in: sandboxes with history and tombstones, views that lag it, heartbeats. */
export class FakeRegistry {
  readonly sandboxes: SandboxSpec[] = [];
  private readonly views: { source: StaticRouteSource; maxLagMs: number; lastAt: number }[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private beat: NodeJS.Timeout | undefined;

  constructor(
    readonly service: string,
    private readonly random: () => number = Math.random,
  ) {}

  view(maxLagMs = 0, synced = true): StaticRouteSource {
    const source = synced ? new StaticRouteSource(this.snapshot()) : new StaticRouteSource();
    this.views.push({ source, maxLagMs, lastAt: 0 });
    return source;
  }

  /** Sends the state every `ms` (the registry's watch stream advances `completeUntil` so). */
  heartbeat(ms = 200): void {
    this.beat = setInterval(() => this.publish(), ms);
  }

  snapshot(): RouteTableSpec {
    return {
      completeUntil: Date.now(),
      sandboxes: this.sandboxes.map((s) => ({ ...s, history: structuredClone(s.history) })),
    };
  }

  publish(): void {
    const spec = this.snapshot();
    const now = Date.now();
    for (const v of this.views) {
      const at = Math.max(v.lastAt, now + this.random() * v.maxLagMs);
      v.lastAt = at;
      const t = setTimeout(() => {
        this.timers.delete(t);
        v.source.update(spec);
      }, at - now);
      this.timers.add(t);
    }
  }

  create(name: string): void {
    const now = Date.now();
    this.sandboxes.push({
      name,
      key: name,
      overrides: { [this.service]: ep },
      createdAt: now,
      history: { [this.service]: [{ from: now }] },
    });
    this.publish();
  }

  delete(name: string): void {
    const s = this.sandboxes.find((x) => x.name === name && x.deletedAt == null);
    if (!s) throw new Error(`no live sandbox ${name}`);
    const now = Date.now();
    s.deletedAt = now;
    for (const iv of s.history![this.service]!) iv.to ??= now;
    this.publish();
  }

  /** The sandbox stops overriding the service but lives on. */
  stopOverride(name: string): void {
    const s = this.sandboxes.find((x) => x.name === name && x.deletedAt == null)!;
    delete s.overrides![this.service];
    for (const iv of s.history![this.service]!) iv.to ??= Date.now();
    this.publish();
  }

  /** The sandbox overrides the service again: a new ownership interval. */
  resumeOverride(name: string): void {
    const s = this.sandboxes.find((x) => x.name === name && x.deletedAt == null)!;
    s.overrides![this.service] = ep;
    s.history![this.service]!.push({ from: Date.now() });
    this.publish();
  }

  /** Who owned `key` at `at`: the sandbox whose interval covers it, else undefined (baseline). */
  ownerAt(key: string | undefined, at: number): string | undefined {
    if (key === undefined) return undefined;
    for (const s of this.sandboxes) {
      if (s.key !== key) continue;
      for (const iv of s.history?.[this.service] ?? [])
        if (at >= iv.from && (iv.to == null || at < iv.to)) return s.name;
    }
    return undefined;
  }

  async settle(): Promise<void> {
    const last = Math.max(0, ...this.views.map((v) => v.lastAt));
    await new Promise((r) => setTimeout(r, Math.max(0, last - Date.now()) + 50));
  }

  stop(): void {
    clearInterval(this.beat);
    for (const t of this.timers) clearTimeout(t);
  }
}

/**
 * Per-file queue fixtures: `setup(name)` gives an instrumented queue under a fresh key prefix;
 * whatever is pushed on `closers` (and the queue and its keys) goes after each test, in reverse.
 */
export function queueFixtures() {
  const closers: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });
  function setup(name: string) {
    const prefix = uniquePrefix(name);
    const queue = instrumentQueue(new Queue(`q-${name}`, { connection: REDIS, prefix }));
    closers.push(() => removePrefix(prefix));
    closers.push(() => queue.close());
    return { prefix, queue };
  }
  return { closers, setup };
}
