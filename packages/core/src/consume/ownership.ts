import type { Interval, RouteTable, SandboxSpec } from '../routes.js';

/** A sandbox that overrides the consumer's service, and since when (registry time). */
export interface SandboxOwnership {
  sandbox: string;
  /** The sandbox's routing key. */
  key: string;
  /**
   * Registry-time intervals during which the sandbox's override of the service routed (from the
   * registry's history; a table without history gives one interval from `createdAt`).
   */
  intervals: readonly Interval[];
  /** When the sandbox began owning messages of this service: the earliest interval's start. */
  since: number;
  /**
   * Removed sandboxes only: every message the sandbox owns has an earlier time than this (the
   * view's `completeUntil` when the removal was seen, or the wall clock for complete views).
   */
  until?: number;
  /** Removed sandboxes only: the sandbox is gone (true) or only stopped overriding the service. */
  deleted?: boolean;
}

/** What changed in the set of sandboxes that override the consumer's service. */
export interface OwnersChange {
  /** Sandboxes that override the service now and did not before (all of them on the first call). */
  added: readonly SandboxOwnership[];
  /** Sandboxes that overrode the service and no longer do (deleted, or the override removed). */
  removed: readonly SandboxOwnership[];
  /** Every sandbox that overrides the service now. */
  current: ReadonlySet<string>;
  /** The table this change was computed from. */
  table: RouteTable;
  /** True for the call made when the listener subscribes (the current state, not a change). */
  initial: boolean;
}

export type OwnersListener = (change: OwnersChange) => void;

/** The intervals during which `s` overrode `service` (without history: from `createdAt`). */
export function overrideIntervals(s: SandboxSpec, service: string): readonly Interval[] {
  const hist = s.history?.[service];
  if (hist?.length) return hist;
  if (s.overrides?.[service] !== undefined) return [{ from: s.createdAt ?? 0 }];
  return [];
}

/** The ownership record of a live sandbox that overrides `service`, or undefined. */
export function ownershipOf(
  table: RouteTable,
  service: string,
  sandbox: string,
): SandboxOwnership | undefined {
  const s = table.sandbox(sandbox);
  if (!s || s.overrides?.[service] === undefined) return undefined;
  return ownershipFromSpec(s, service);
}

export function ownershipFromSpec(s: SandboxSpec, service: string): SandboxOwnership {
  const intervals = overrideIntervals(s, service);
  let since = Number.POSITIVE_INFINITY;
  for (const iv of intervals) if (iv.from < since) since = iv.from;
  return { sandbox: s.name, key: s.key, intervals, since: Number.isFinite(since) ? since : 0 };
}

/** The live sandboxes that override `service`, by name. */
export function overridingSandboxes(table: RouteTable, service: string): Map<string, SandboxSpec> {
  const out = new Map<string, SandboxSpec>();
  for (const s of table.sandboxes) if (s.overrides?.[service] !== undefined) out.set(s.name, s);
  return out;
}

/**
 * When `sandbox` began owning messages of `service` (registry time), for a new sandbox
 * destination that must start where the baseline began skipping. A sandbox the view does not
 * show yet cannot have been created before the view's `completeUntil`; one that shows but does
 * not override the service owns nothing before now.
 */
export function activationTime(
  table: RouteTable,
  service: string,
  sandbox: string,
  now = Date.now(),
): number {
  const s = table.sandbox(sandbox);
  if (!s) return Math.min(now, table.completeUntil);
  const hist = s.history?.[service];
  if (hist?.length) {
    let from = now;
    for (const iv of hist) if (iv.from < from) from = iv.from;
    return from;
  }
  if (s.overrides?.[service]) return Math.min(now, s.createdAt ?? 0);
  return now;
}
