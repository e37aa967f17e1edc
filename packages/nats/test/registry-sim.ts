import type { EndpointSpec, RouteGroupSpec, RouteTableSpec, SandboxSpec } from '@branchline/core';

/**
 * What the registry would send on its watch stream, kept in memory: sandboxes with per-service
 * history, tombstones with `deletedAt`, and `completeUntil` = the time of the snapshot. Tests
 * hand snapshots to each consumer's StaticRouteSource at different moments to simulate views
 * that lag behind each other.
 */
export class RegistrySim {
  private readonly sandboxes = new Map<string, SandboxSpec>();
  private readonly tombstones: SandboxSpec[] = [];
  private readonly groups: RouteGroupSpec[] = [];
  private revision = 0;

  create(name: string, overrides: Record<string, EndpointSpec>, labels?: Record<string, string>): number {
    const now = Date.now();
    const history: Record<string, { from: number; to?: number }[]> = {};
    for (const svc of Object.keys(overrides)) history[svc] = [{ from: now }];
    this.sandboxes.set(name, { name, key: name, overrides, labels, createdAt: now, history });
    this.revision++;
    return now;
  }

  delete(name: string): number {
    const s = this.sandboxes.get(name);
    if (!s) throw new Error(`no live sandbox ${name}`);
    const now = Date.now();
    this.sandboxes.delete(name);
    const history: Record<string, { from: number; to?: number }[]> = {};
    for (const [svc, list] of Object.entries(s.history ?? {}))
      history[svc] = list.map((iv) => ({ from: iv.from, to: iv.to ?? now }));
    this.tombstones.push({ ...s, history, deletedAt: now });
    this.revision++;
    return now;
  }

  group(name: string, labels: Record<string, string>): void {
    this.groups.push({ name, key: name, match: { labels }, createdAt: Date.now() });
    this.revision++;
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

  live(): string[] {
    return [...this.sandboxes.keys()];
  }
}

export const endpoint = { http: 'http://127.0.0.1:1' };

/**
 * A consumer's view of the registry: refreshed every `everyMs` (the watch stream's heartbeat),
 * and pausable to make it lag behind other views.
 */
export class LaggingView {
  private timer: NodeJS.Timeout | undefined;
  private paused = false;

  constructor(
    readonly source: { update(spec: unknown): unknown },
    private readonly registry: RegistrySim,
    everyMs = 100,
  ) {
    this.sync();
    this.timer = setInterval(() => {
      if (!this.paused) this.sync();
    }, everyMs);
    this.timer.unref();
  }

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

  stop(): void {
    clearInterval(this.timer);
  }
}
