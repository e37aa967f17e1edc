import { SANDBOX_NAME_RULE } from '@branchline/core';
import { z } from 'zod';
import { NAME_RE, parseBody, serviceName } from './schemas.js';

/** The kinds of routing activity SDKs report (see `recordActivity` in @branchline/core). */
export const ACTIVITY_KINDS = ['forwarded', 'consumed', 'routed'] as const;
export type ActivityKind = (typeof ACTIVITY_KINDS)[number];
export type ActivityCounts = Record<ActivityKind, number>;

const entry = z.strictObject({
  sandbox: z.string().regex(NAME_RE, `must be a sandbox name: ${SANDBOX_NAME_RULE}`),
  service: serviceName,
  kind: z.enum(ACTIVITY_KINDS),
  count: z.number().int().positive().max(1_000_000_000),
  at: z.number().finite().optional(),
});

/** `POST /v1/activity`: `{entries: [...]}` or a bare array of entries. */
export const activityBody = z.strictObject({ entries: z.array(entry).max(5000) });

export interface ActivityLogOptions {
  /** How far back activity is kept. Default 15 minutes. */
  windowMs?: number;
  /** Resolution of the kept series. Default 10 s. */
  bucketMs?: number;
  /** Sandboxes tracked at once; reports for more are dropped. Default 1000. */
  maxSandboxes?: number;
  /** Services tracked per sandbox. Default 100. */
  maxServices?: number;
}

/** What `GET /v1/activity` answers. */
export interface ActivitySnapshot {
  /** Registry time of the snapshot. */
  now: number;
  windowMs: number;
  bucketMs: number;
  sandboxes: Record<
    string,
    {
      total: ActivityCounts;
      services: Record<string, ActivityCounts>;
      /** Registry time of the latest report that counted something. */
      lastAt: number;
      /** Counts of every kind per bucket, oldest first; the last bucket is the current one. */
      series: number[];
    }
  >;
}

interface ServiceActivity {
  /** bucket start → counts */
  buckets: Map<number, ActivityCounts>;
}

interface SandboxActivity {
  services: Map<string, ServiceActivity>;
  lastAt: number;
}

const zero = (): ActivityCounts => ({ forwarded: 0, consumed: 0, routed: 0 });

/**
 * Routing activity per sandbox, kept in memory as a rolling window of small buckets. It is a
 * view for people (the dashboard), not a ledger: a registry restart starts it afresh, and each
 * replica knows only the reports it received.
 */
export class ActivityLog {
  readonly windowMs: number;
  readonly bucketMs: number;
  private readonly maxSandboxes: number;
  private readonly maxServices: number;
  private readonly sandboxes = new Map<string, SandboxActivity>();
  dropped = 0;

  constructor(options: ActivityLogOptions = {}) {
    this.windowMs = options.windowMs ?? 15 * 60_000;
    this.bucketMs = options.bucketMs ?? 10_000;
    this.maxSandboxes = options.maxSandboxes ?? 1000;
    this.maxServices = options.maxServices ?? 100;
  }

  /**
   * Validates and adds a report; returns how many entries were counted. A report's `at` is
   * trusted only within the window (clocks differ): anything else counts as now.
   */
  report(input: unknown, now = Date.now()): { accepted: number; dropped: number } {
    const { entries } = parseBody(activityBody, Array.isArray(input) ? { entries: input } : input);
    this.prune(now);
    let accepted = 0;
    let dropped = 0;
    for (const e of entries) {
      let sb = this.sandboxes.get(e.sandbox);
      if (!sb) {
        if (this.sandboxes.size >= this.maxSandboxes) {
          dropped++;
          continue;
        }
        sb = { services: new Map(), lastAt: 0 };
        this.sandboxes.set(e.sandbox, sb);
      }
      let svc = sb.services.get(e.service);
      if (!svc) {
        if (sb.services.size >= this.maxServices) {
          dropped++;
          continue;
        }
        svc = { buckets: new Map() };
        sb.services.set(e.service, svc);
      }
      const at = e.at !== undefined && e.at <= now && e.at >= this.firstBucket(now) ? e.at : now;
      const start = at - (at % this.bucketMs);
      let b = svc.buckets.get(start);
      if (!b) {
        b = zero();
        svc.buckets.set(start, b);
      }
      b[e.kind] += e.count;
      sb.lastAt = Math.max(sb.lastAt, now);
      accepted++;
    }
    this.dropped += dropped;
    return { accepted, dropped };
  }

  /** Drops buckets that left the window, and sandboxes with nothing left. */
  prune(now = Date.now()): void {
    const first = this.firstBucket(now);
    for (const [name, sb] of this.sandboxes) {
      for (const [svcName, svc] of sb.services) {
        for (const start of svc.buckets.keys()) if (start < first) svc.buckets.delete(start);
        if (svc.buckets.size === 0) sb.services.delete(svcName);
      }
      if (sb.services.size === 0) this.sandboxes.delete(name);
    }
  }

  /** Start of the oldest bucket in the window: the window is whole buckets, the last one current. */
  private firstBucket(now: number): number {
    return now - (now % this.bucketMs) - (this.buckets - 1) * this.bucketMs;
  }

  private get buckets(): number {
    return Math.ceil(this.windowMs / this.bucketMs);
  }

  snapshot(now = Date.now(), only?: string): ActivitySnapshot {
    this.prune(now);
    const n = this.buckets;
    const first = this.firstBucket(now);
    const out: ActivitySnapshot = { now, windowMs: this.windowMs, bucketMs: this.bucketMs, sandboxes: {} };
    for (const [name, sb] of this.sandboxes) {
      if (only !== undefined && name !== only) continue;
      const total = zero();
      const services: Record<string, ActivityCounts> = {};
      const series = new Array<number>(n).fill(0);
      for (const [svcName, svc] of sb.services) {
        const counts = zero();
        for (const [start, b] of svc.buckets) {
          const i = Math.floor((start - first) / this.bucketMs);
          for (const k of ACTIVITY_KINDS) {
            counts[k] += b[k];
            total[k] += b[k];
            if (i >= 0 && i < n) series[i]! += b[k];
          }
        }
        services[svcName] = counts;
      }
      out.sandboxes[name] = { total, services, lastAt: sb.lastAt, series };
    }
    return out;
  }
}
