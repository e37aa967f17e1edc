import { type BranchlineRuntime, defaultRuntime, getRoutingKey } from '@branchline/core';
import {
  bufferTextMapGetter,
  type CarrierSetter,
  injectRoutingKey,
  noteRouted,
  parseBaggage,
  recordSetter,
  renamedOption,
  resolveOutgoing,
  serializeBaggage,
} from '@branchline/core/transport';
import { HostMap, type OriginInfo } from './hosts.js';
import type { SandboxTarget } from './sandbox-error.js';
import type { OutgoingRoutingOptions } from './types.js';

/**
 * The outgoing decision shared by the undici interceptor and the node:http agents: which
 * origin a call goes to and whether it may carry the key. Never reads a header to decide a
 * destination: the destination comes from the route table only.
 */
export class OutgoingRouter {
  readonly hosts: HostMap;
  private runtimeRef: BranchlineRuntime | undefined;
  private readonly route: boolean;

  constructor(options: OutgoingRoutingOptions = {}) {
    this.hosts = new HostMap(options);
    this.runtimeRef = options.runtime;
    this.route =
      renamedOption(
        '@branchline/http outgoing routing',
        options.routeCalls,
        options.route,
        'route',
        'routeCalls',
      ) !== false;
  }

  /** Built on first use, never at import time. */
  get runtime(): BranchlineRuntime {
    this.runtimeRef ??= defaultRuntime();
    return this.runtimeRef;
  }

  get baggageKey(): string {
    return this.runtime.config.baggageKey;
  }

  /**
   * Where a call to `info`'s service with `key` goes instead: the sandbox endpoint with its
   * sandbox and service (for errors that name them), or undefined (unchanged).
   */
  target(info: OriginInfo, key: string): SandboxTarget | undefined {
    if (!this.route || info.service === undefined) return undefined;
    const table = this.runtime.routes.table;
    if (table === undefined) return undefined;
    const hit = resolveOutgoing(table, info.service, key, 'http');
    if (hit === undefined) return undefined;
    noteRouted(hit.rule.sandbox, info.service);
    return { endpoint: hit.endpoint, sandbox: hit.rule.sandbox, service: info.service };
  }
}

/** The routing key of the active context (what outgoing calls carry). */
export function currentKey(): string | undefined {
  return getRoutingKey();
}

type FlatHeaders = (string | string[])[];

const flatSetter: CarrierSetter<FlatHeaders> = {
  set(c, key, value) {
    for (let i = 0; i < c.length; i += 2) {
      const k = c[i];
      if (typeof k === 'string' && k.length === key.length && k.toLowerCase() === key) {
        c[i + 1] = value;
        return;
      }
    }
    c.push(key, value);
  },
};

const flatGetter = {
  keys: (c: FlatHeaders) => c.filter((_, i) => i % 2 === 0) as string[],
  get(c: FlatHeaders, key: string): string | string[] | undefined {
    for (let i = 0; i < c.length; i += 2) {
      const k = c[i];
      if (typeof k === 'string' && k.length === key.length && k.toLowerCase() === key) return c[i + 1];
    }
    return undefined;
  },
};

/**
 * Returns dispatch headers (any undici form: object, flat array, array of pairs, iterable) with
 * the key merged into `baggage`. The caller's headers are never mutated.
 */
export function headersWithKey(headers: unknown, key: string, baggageKey: string): unknown {
  if (headers === undefined || headers === null) return { baggage: `${baggageKey}=${key}` };
  if (Array.isArray(headers)) {
    const flat: FlatHeaders = [];
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const pair of headers as [string, string][]) flat.push(pair[0], pair[1]);
    } else for (const h of headers) flat.push(h as string);
    injectRoutingKey(flat, flatGetter, flatSetter, key, baggageKey);
    return flat;
  }
  if (typeof headers === 'object') {
    const it = (headers as { [Symbol.iterator]?: unknown })[Symbol.iterator];
    if (typeof it === 'function') {
      const flat: FlatHeaders = [];
      for (const [k, v] of headers as Iterable<[string, string]>) flat.push(k, v);
      injectRoutingKey(flat, flatGetter, flatSetter, key, baggageKey);
      return flat;
    }
    const copy = { ...(headers as Record<string, unknown>) };
    injectRoutingKey(copy, bufferTextMapGetter, recordSetter, key, baggageKey);
    return copy;
  }
  return headers;
}

/** Removes member `name` from a baggage header; undefined when nothing is left. */
export function withoutBaggageMember(header: string, name: string): string | undefined {
  const parsed = parseBaggage(header);
  const kept = parsed.members.filter((m) => m.key !== name);
  // Sent as it was only if nothing went unread: a malformed or unread member could be ours.
  if (kept.length === parsed.members.length && parsed.malformed + parsed.excess === 0 && !parsed.truncated)
    return header;
  return kept.length ? serializeBaggage(kept) : undefined;
}
