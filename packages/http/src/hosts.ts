import { isIP } from 'node:net';
import type { HostMapOptions } from './types.js';

/** What Branchline knows about one origin: may it get the key, and which service is it. */
export interface OriginInfo {
  readonly internal: boolean;
  readonly service: string | undefined;
  /** `http:` or `https:` */
  readonly protocol: string;
}

const EXTERNAL: OriginInfo = Object.freeze({ internal: false, service: undefined, protocol: '' });
const MAX_CACHED = 4096;

/** The documented default: a host's first DNS label is its service; IP addresses have none. */
export function firstLabel(hostname: string): string | undefined {
  if (hostname.length === 0 || isIP(hostname.startsWith('[') ? hostname.slice(1, -1) : hostname) !== 0)
    return undefined;
  const dot = hostname.indexOf('.');
  return dot === -1 ? hostname : hostname.slice(0, dot);
}

/**
 * Host → (internal, service), compiled once from the options and cached per origin string, so
 * the per-call cost is one Map lookup.
 */
export class HostMap {
  private readonly byHost = new Map<string, string>();
  private readonly exact = new Set<string>();
  private readonly suffixes: string[] = [];
  private readonly predicate: ((hostname: string) => boolean) | undefined;
  private readonly serviceOf: (hostname: string) => string | undefined;
  private readonly cache = new Map<string, OriginInfo>();

  constructor(options: HostMapOptions = {}) {
    for (const [service, url] of Object.entries(options.services ?? {})) {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        throw new TypeError(
          `branchline: services.${service} = ${JSON.stringify(url)} is not a URL; give the service's baseline address such as "http://${service}:8080"`,
        );
      }
      this.byHost.set(u.host.toLowerCase(), service);
    }
    const internal = options.internalHosts;
    if (typeof internal === 'function') this.predicate = internal;
    else if (internal !== undefined) {
      if (!Array.isArray(internal))
        throw new TypeError(
          `branchline: internalHosts must be an array of host names or a function, got ${typeof internal}`,
        );
      for (const h of internal) {
        if (typeof h !== 'string' || h.length === 0)
          throw new TypeError(`branchline: internalHosts entry ${JSON.stringify(h)} is not a host name`);
        const lower = h.toLowerCase();
        if (lower.startsWith('*.')) this.suffixes.push(lower.slice(1));
        else if (lower.startsWith('.')) this.suffixes.push(lower);
        else this.exact.add(lower);
      }
    }
    if (options.serviceOf !== undefined && typeof options.serviceOf !== 'function')
      throw new TypeError('branchline: serviceOf must be a function (hostname) => service name');
    this.serviceOf = options.serviceOf ?? firstLabel;
  }

  /** Looks up an origin such as `http://payments:8080`. */
  lookup(origin: string | URL): OriginInfo {
    const k = typeof origin === 'string' ? origin : origin.origin;
    let info = this.cache.get(k);
    if (info === undefined) {
      info = this.compute(k);
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(k, info);
    }
    return info;
  }

  private compute(origin: string): OriginInfo {
    let u: URL;
    try {
      u = new URL(origin);
    } catch {
      return EXTERNAL;
    }
    const protocol = u.protocol;
    const mapped = this.byHost.get(u.host.toLowerCase());
    if (mapped !== undefined) return Object.freeze({ internal: true, service: mapped, protocol });
    const hostname = u.hostname.toLowerCase();
    if (!this.isInternal(hostname)) return EXTERNAL;
    return Object.freeze({ internal: true, service: this.serviceOf(hostname), protocol });
  }

  private isInternal(hostname: string): boolean {
    if (this.exact.has(hostname)) return true;
    for (const s of this.suffixes) if (hostname.endsWith(s)) return true;
    if (this.predicate) {
      try {
        return this.predicate(hostname) === true;
      } catch {
        return false;
      }
    }
    return false;
  }
}
