import type { EndpointSpec, RouteGroupSpec, RouteTableSpec, SandboxSpec } from '@branchline/core';
import { until } from './index.js';

type History = Record<string, { from: number; to?: number }[]>;

/**
 * What the registry would send on its watch stream, kept in memory: sandboxes with per-service
 * history, tombstones with `deletedAt`, and `completeUntil` = the time of the snapshot. Tests
 * hand snapshots to each consumer's StaticRouteSource at different moments (a `LaggingView`) to
 * simulate views that lag behind each other.
 */
export class RegistrySim {
  private readonly sandboxes = new Map<string, SandboxSpec>();
  private readonly tombstones: SandboxSpec[] = [];
  private readonly groups: RouteGroupSpec[] = [];
  private readonly listeners = new Set<() => void>();
  private revision = 0;

  /** Creates a live sandbox keyed by its name; returns its creation time (its intervals' `from`). */
  create(name: string, overrides: Record<string, EndpointSpec>, labels?: Record<string, string>): number {
    const now = Date.now();
    const history: History = {};
    for (const svc of Object.keys(overrides)) history[svc] = [{ from: now }];
    this.sandboxes.set(name, { name, key: name, overrides, labels, createdAt: now, history });
    this.changed();
    return now;
  }

  /** Deletes a live sandbox: it stays as a tombstone whose intervals all end now. */
  delete(name: string): number {
    const s = this.liveSandbox(name);
    const now = Date.now();
    this.sandboxes.delete(name);
    const history: History = {};
    for (const [svc, list] of Object.entries(s.history ?? {}))
      history[svc] = list.map((iv) => ({ from: iv.from, to: iv.to ?? now }));
    this.tombstones.push({ ...s, history, deletedAt: now });
    this.changed();
    return now;
  }

  /** The sandbox stops overriding `service` but lives on: its open interval ends now. */
  stopOverride(name: string, service: string): number {
    const s = this.liveSandbox(name);
    const now = Date.now();
    delete s.overrides![service];
    for (const iv of s.history?.[service] ?? []) iv.to ??= now;
    this.changed();
    return now;
  }

  /** The sandbox overrides `service` again: a new ownership interval from now. */
  resumeOverride(name: string, service: string, at: EndpointSpec = endpoint): number {
    const s = this.liveSandbox(name);
    const now = Date.now();
    s.overrides = { ...s.overrides, [service]: at };
    s.history = { ...s.history, [service]: [...(s.history?.[service] ?? []), { from: now }] };
    this.changed();
    return now;
  }

  group(name: string, labels: Record<string, string>): void {
    this.groups.push({ name, key: name, match: { labels }, createdAt: Date.now() });
    this.changed();
  }

  /** A complete snapshot as of now. */
  snapshot(): RouteTableSpec {
    const completeUntil = Date.now();
    return {
      revision: this.revision,
      completeUntil,
      sandboxes: structuredClone([...this.tombstones, ...this.sandboxes.values()]),
      groups: structuredClone(this.groups),
    };
  }

  /** The live sandboxes' names (= keys); given `service`, only those that override it. */
  live(service?: string): string[] {
    const all = [...this.sandboxes.values()];
    return (service === undefined ? all : all.filter((s) => s.overrides?.[service])).map((s) => s.name);
  }

  /** The deleted sandboxes' names (= keys), in the order they were deleted. */
  deleted(): string[] {
    return this.tombstones.map((s) => s.name);
  }

  /**
   * The sandbox that owned `key` for `service` at time `at` (by the sandbox's own key; route
   * groups are not considered), or undefined: the baseline's.
   */
  ownerAt(service: string, key: string | undefined, at: number): string | undefined {
    if (key === undefined) return undefined;
    for (const s of [...this.tombstones, ...this.sandboxes.values()]) {
      if (s.key !== key) continue;
      for (const iv of s.history?.[service] ?? [])
        if (at >= iv.from && (iv.to == null || at < iv.to)) return s.name;
    }
    return undefined;
  }

  /** Calls `listener` after every change (the watch stream's add/remove/replace events). */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private liveSandbox(name: string): SandboxSpec {
    const s = this.sandboxes.get(name);
    if (!s) throw new Error(`no live sandbox ${name}`);
    return s;
  }

  private changed(): void {
    this.revision++;
    for (const listener of this.listeners) listener();
  }
}

export const endpoint = { http: 'http://127.0.0.1:1' };

export interface LaggingViewOptions {
  /** Refresh every this many ms, like the watch stream's heartbeat (default 100; 0 = never). */
  everyMs?: number;
  /** Also deliver a snapshot on every registry change, as the watch stream sends events (default false). */
  events?: boolean;
  /**
   * Each delivery (event or heartbeat) reaches the source after a random delay of up to this
   * many ms, never before one sent earlier (default 0: at once).
   */
  maxLagMs?: number;
  /** Where the random delays come from (a `seededRandom()` makes a run repeatable). */
  random?: () => number;
  /** Take a first snapshot at once (default true); false: the view starts unsynced. */
  synced?: boolean;
}

/**
 * A consumer's view of the registry. Refreshed every `everyMs` (the watch stream's heartbeat)
 * and pausable to make it lag behind other views. With `events` it also follows every change;
 * with `maxLagMs` each snapshot reaches the source after its own random delay, never out of order.
 */
export class LaggingView<
  S extends { update(spec: RouteTableSpec): unknown } = { update(spec: unknown): unknown },
> {
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<NodeJS.Timeout>();
  private readonly unsubscribe: (() => void) | undefined;
  private readonly maxLagMs: number;
  private readonly events: boolean;
  private readonly random: () => number;
  private paused = false;
  private lastAt = 0;
  private scheduled = 0;
  private delivered = 0;

  constructor(
    readonly source: S,
    private readonly registry: RegistrySim,
    options: number | LaggingViewOptions = {},
  ) {
    const {
      everyMs = 100,
      events = false,
      maxLagMs = 0,
      random = Math.random,
      synced = true,
    } = typeof options === 'number' ? { everyMs: options } : options;
    this.maxLagMs = maxLagMs;
    this.events = events;
    this.random = random;
    if (synced) this.sync();
    if (everyMs > 0) {
      this.timer = setInterval(() => {
        if (!this.paused) this.deliver();
      }, everyMs);
      this.timer.unref();
    }
    if (events)
      this.unsubscribe = registry.onChange(() => {
        if (!this.paused) this.deliver();
      });
  }

  /** Hands the current snapshot to the source now. */
  sync(): void {
    this.source.update(this.registry.snapshot());
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.sync();
  }

  /** Resolves once every snapshot scheduled so far has reached the source. */
  async settled(): Promise<void> {
    const target = this.scheduled;
    await until(() => this.delivered >= target, 'the lagging view delivering its snapshots', {
      timeoutMs: this.maxLagMs + 5_000,
    });
  }

  stop(): void {
    clearInterval(this.timer);
    this.unsubscribe?.();
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
  }

  /** The snapshot of now, after this view's random lag, never before one scheduled earlier. */
  private deliver(): void {
    // Heartbeats without lag arrive at once; events always after the change that caused them.
    if (this.maxLagMs <= 0 && !this.events) {
      this.sync();
      return;
    }
    const spec = this.registry.snapshot();
    const now = Date.now();
    const at = Math.max(this.lastAt, now + this.random() * this.maxLagMs);
    this.lastAt = at;
    const seq = ++this.scheduled;
    const t = setTimeout(() => {
      this.pending.delete(t);
      // Two timers due in the same millisecond may fire in either order: the older one is dropped.
      if (seq <= this.delivered) return;
      this.delivered = seq;
      this.source.update(spec);
    }, at - now);
    this.pending.add(t);
  }
}
