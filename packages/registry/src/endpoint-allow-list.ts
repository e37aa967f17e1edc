import { BlockList, isIP } from 'node:net';

const HOST_NAME_RE = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/;
/** gRPC target schemes whose addresses are not host names or IP addresses (or name a DNS server). */
const UNCHECKABLE_SCHEME_RE = /^(unix|unix-abstract|vsock|xds|passthrough)$/;

/**
 * Where a registry lets endpoints point: networks (`10.0.0.0/8`, `fd00::/8`), single addresses,
 * host names, and `*.suffix` patterns (any name under the suffix, not the suffix itself). An IP
 * address passes only a network or address entry and a host name only a name or pattern entry:
 * the registry never resolves names, so it cannot tell where a name leads.
 */
export class EndpointAllowList {
  private readonly networks = new BlockList();
  private readonly names = new Set<string>();
  private readonly suffixes: string[] = [];
  readonly entries: readonly string[];

  constructor(entries: readonly string[]) {
    const kept: string[] = [];
    for (const raw of entries) {
      if (typeof raw !== 'string')
        throw new TypeError(`branchline registry: allowEndpoints entries are strings, got ${typeof raw}`);
      const e = raw.trim().toLowerCase();
      if (e === '') continue;
      kept.push(e);
      const slash = e.indexOf('/');
      if (slash >= 0) {
        const net = e.slice(0, slash);
        const bits = e.slice(slash + 1);
        const family = isIP(net);
        const max = family === 6 ? 128 : 32;
        if (family === 0 || !/^\d{1,3}$/.test(bits) || Number(bits) > max) throw badEntry(raw);
        this.networks.addSubnet(net, Number(bits), family === 6 ? 'ipv6' : 'ipv4');
      } else if (isIP(e) !== 0) this.networks.addAddress(e, isIP(e) === 6 ? 'ipv6' : 'ipv4');
      else if (e.startsWith('*.') && HOST_NAME_RE.test(e.slice(2))) this.suffixes.push(e.slice(1));
      else if (HOST_NAME_RE.test(e)) this.names.add(e);
      else throw badEntry(raw);
    }
    this.entries = kept;
  }

  /** Whether any entry was given; an empty list allows everything. */
  get enabled(): boolean {
    return this.entries.length > 0;
  }

  /** Why an http(s) endpoint is not allowed, or undefined when it is. */
  checkHttp(url: string): string | undefined {
    if (!this.enabled) return undefined;
    let host: string;
    try {
      host = new URL(url).hostname;
    } catch {
      return 'it is not a URL';
    }
    return this.checkHost(host);
  }

  /** Why a gRPC target is not allowed, or undefined when it is. */
  checkGrpc(target: string): string | undefined {
    if (!this.enabled) return undefined;
    const hosts = grpcTargetHosts(target);
    if (typeof hosts === 'string') return hosts;
    for (const h of hosts) {
      const why = this.checkHost(h);
      if (why) return why;
    }
    return undefined;
  }

  private checkHost(hostname: string): string | undefined {
    const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname.toLowerCase();
    const family = isIP(host);
    if (family !== 0) {
      if (this.networks.check(host, family === 6 ? 'ipv6' : 'ipv4')) return undefined;
      return `the address ${host} is in none of the allowed networks`;
    }
    if (this.names.has(host)) return undefined;
    for (const s of this.suffixes) if (host.endsWith(s)) return undefined;
    return `the host ${host} matches none of the allowed host names and patterns`;
  }
}

function badEntry(raw: string): TypeError {
  return new TypeError(
    `branchline registry: allowEndpoints entry ${JSON.stringify(raw)} is not a network (10.0.0.0/8, fd00::/8), an IP address, a host name or a "*.suffix" pattern`,
  );
}

/**
 * The hosts a gRPC target connects to, normalised as URL host names (so `127.1` reads as
 * `127.0.0.1`, as the resolver would take it), or why they cannot be checked. Understands
 * `host[:port]`, `[v6][:port]`, `dns:[///]host[:port]`, and `ipv4:`/`ipv6:` address lists.
 */
function grpcTargetHosts(target: string): string[] | string {
  let rest = target;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(target)?.[1]?.toLowerCase();
  if (scheme !== undefined && target.startsWith(`${scheme}://`) && !target.startsWith(`${scheme}:///`))
    return `the target names its own authority (${scheme}://…/); give host:port`;
  if (scheme === 'dns') rest = target.slice(4).replace(/^\/\/\//, '');
  else if (scheme === 'ipv4' || scheme === 'ipv6') {
    const list = target.slice(scheme.length + 1).split(',');
    const out: string[] = [];
    for (const a of list) {
      const h = hostOf(a);
      if (h === undefined) return `${JSON.stringify(a)} is not an address`;
      out.push(h);
    }
    return out;
  } else if (scheme !== undefined && UNCHECKABLE_SCHEME_RE.test(scheme))
    return `a ${scheme}: target has no host to check; give host:port`;
  const h = hostOf(rest);
  return h === undefined ? `${JSON.stringify(rest)} is not host:port` : [h];
}

function hostOf(hostPort: string): string | undefined {
  if (hostPort === '') return undefined;
  // A bare IPv6 address (ipv6:::1) has no brackets and no port.
  const candidate = isIP(hostPort) === 6 ? `[${hostPort}]` : hostPort;
  try {
    const u = new URL(`http://${candidate}`);
    if (u.pathname !== '/' || u.search || u.hash || u.username || u.password) return undefined;
    return u.hostname;
  } catch {
    return undefined;
  }
}
