import { type ClientRequest, request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { type BackoffOptions, backoffDelay, type ResolvedBackoff, resolveBackoff } from './backoff.js';
import { logger, renamedOption, warnRateLimited } from './log.js';
import type { RouteSource, RouteSourceStatus } from './route-source.js';
import { type RouteGroupSpec, RouteTable, type SandboxSpec } from './routes.js';
import { TableHolder } from './table-holder.js';

export interface RegistrySourceOptions {
  /** Registry base URL, e.g. `http://branchline-registry:7070` (`BRANCHLINE_REGISTRY`). */
  registry?: string;
  /** @deprecated Use `registry`. */
  url?: string;
  /** Bearer token with the read scope (`BRANCHLINE_TOKEN`). */
  token?: string;
  /** Default bound of `ready()`: how long to wait for the first sync. Default 5000 ms. */
  syncTimeoutMs?: number;
  /**
   * Reconnect delays (with jitter): `{ initialMs: 100, maxMs: 5000, factor: 2 }` by default.
   */
  reconnect?: BackoffOptions;
  /** @deprecated Use `reconnect.initialMs`. */
  initialBackoffMs?: number;
  /** @deprecated Use `reconnect.maxMs`. */
  maxBackoffMs?: number;
  /**
   * Reconnect when nothing (not even a heartbeat) arrived for this long. Default: three
   * heartbeat intervals as announced by the registry, at least 3000 ms.
   */
  idleTimeoutMs?: number;
}

/** What a registry-backed source knows about its connection, for health checks and logs. */
export interface RegistrySourceStatus extends RouteSourceStatus {
  /** The stream is open and has delivered its synced marker. */
  connected: boolean;
  /** Last applied registry revision. */
  revision: number;
  /** Registry time up to which the view is complete (from heartbeats); 0 before the first. */
  completeUntil: number;
  /** Connections opened after the first one. */
  reconnects: number;
}

interface Frame {
  event: string;
  data: string;
  id?: string;
}

type Doc = (SandboxSpec | RouteGroupSpec) & { id?: string };

/**
 * The live route table: a `RouteSource` fed by the registry's `GET /v1/watch` stream. It
 * waits (bounded) for the first sync, reconnects with exponential backoff and jitter, resumes
 * from its last revision, keeps the last known table while the registry is away, and builds a
 * new immutable `RouteTable` per change and per heartbeat (which advances `completeUntil`).
 */
export class RegistryRouteSource extends TableHolder implements RouteSource {
  private readonly sandboxes = new Map<string, SandboxSpec>();
  private readonly groups = new Map<string, RouteGroupSpec>();
  /** Sandbox changes since the published table, (before, after), for `RouteTable.derive`. */
  private changes: [SandboxSpec | undefined, SandboxSpec | undefined][] = [];
  private groupsChanged = false;
  /** The next table is compiled from scratch (first one, after a snapshot or a failure). */
  private fullRebuild = true;
  private req: ClientRequest | undefined;
  private res: IncomingMessage | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly idleTimer: NodeJS.Timeout;
  private attempt = 0;
  private everConnected = false;
  private closed = false;
  private lastMessageAt = 0;
  private heartbeatInterval = 1000;
  private readonly base: URL;
  private readonly reconnect: ResolvedBackoff;
  readonly status: RegistrySourceStatus = {
    synced: false,
    stale: true,
    connected: false,
    revision: 0,
    completeUntil: 0,
    reconnects: 0,
  };

  constructor(private readonly options: RegistrySourceOptions) {
    super();
    const where = 'registry route source';
    const url = renamedOption(where, options.registry, options.url, 'url', 'registry');
    if (typeof url !== 'string' || url === '')
      throw new TypeError(
        'branchline: the registry route source needs option registry, the registry URL (e.g. http://branchline-registry:7070)',
      );
    let base: URL | undefined;
    try {
      base = new URL(url.endsWith('/') ? url : `${url}/`);
    } catch {
      base = undefined;
    }
    if (!base || (base.protocol !== 'http:' && base.protocol !== 'https:'))
      throw new TypeError(
        `branchline: registry URL ${JSON.stringify(url)} must be an http(s) URL such as http://branchline-registry:7070`,
      );
    this.base = base;
    this.reconnect = resolveBackoff(
      {
        initialMs: renamedOption(
          where,
          options.reconnect?.initialMs,
          options.initialBackoffMs,
          'initialBackoffMs',
          'reconnect.initialMs',
        ),
        maxMs: renamedOption(
          where,
          options.reconnect?.maxMs,
          options.maxBackoffMs,
          'maxBackoffMs',
          'reconnect.maxMs',
        ),
        factor: options.reconnect?.factor,
      },
      'reconnect',
      { initialMs: 100, maxMs: 5000, factor: 2 },
    );
    this.idleTimer = setInterval(() => this.checkIdle(), 500);
    this.idleTimer.unref();
    this.connect();
  }

  /** Milliseconds since the registry last said anything (events or heartbeats). */
  get stalenessMs(): number {
    return this.lastMessageAt === 0 ? Number.POSITIVE_INFINITY : Date.now() - this.lastMessageAt;
  }

  ready(timeoutMs = this.options.syncTimeoutMs ?? 5000): Promise<RouteTable | undefined> {
    // Referenced on purpose: a process awaiting its first table stays alive until the bound.
    return this.waitForTable(timeoutMs, true);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.idleTimer);
    clearTimeout(this.retryTimer);
    this.req?.destroy();
    this.clearListeners();
  }

  private connect(): void {
    if (this.closed) return;
    const url = new URL('v1/watch', this.base);
    // Only what routing needs: no editing fields (a registry without views sends them anyway).
    url.searchParams.set('view', 'routing');
    if (this.everConnected) url.searchParams.set('since', String(this.status.revision));
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = request(url, { method: 'GET', headers, agent: false });
    this.req = req;
    req.on('socket', (s) => {
      s.unref();
      s.setNoDelay(true);
    });
    req.on('response', (res) => {
      if (this.req !== req) return res.destroy();
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (body.length < 2000) body += c;
        });
        res.on('end', () => this.failed(req, `registry answered ${res.statusCode}: ${body.slice(0, 300)}`));
        res.on('error', () => this.failed(req, `registry answered ${res.statusCode}`));
        return;
      }
      this.res = res;
      this.lastMessageAt = Date.now();
      res.setEncoding('utf8');
      let buf = '';
      res.on('data', (chunk: string) => {
        buf += chunk;
        let end = buf.indexOf('\n\n');
        if (end < 0) return;
        const frames: Frame[] = [];
        while (end >= 0) {
          const f = parseFrame(buf.slice(0, end));
          if (f) frames.push(f);
          buf = buf.slice(end + 2);
          end = buf.indexOf('\n\n');
        }
        this.lastMessageAt = Date.now();
        this.onFrames(frames);
      });
      res.on('end', () => this.failed(req, 'the registry closed the watch stream'));
      res.on('error', (err) => this.failed(req, `watch stream error: ${err.message}`));
    });
    req.on('error', (err) =>
      this.failed(req, `cannot reach the registry at ${this.base.origin}: ${err.message}`),
    );
    req.end();
  }

  private failed(req: ClientRequest, reason: string): void {
    if (this.req !== req || this.closed) return;
    this.req = undefined;
    this.res = undefined;
    req.destroy();
    this.status.connected = false;
    this.status.stale = true;
    this.status.error = reason;
    warnRateLimited(
      'registry-source',
      `branchline: ${reason}; keeping the last known route table and retrying`,
      {
        revision: this.status.revision,
      },
    );
    const delay = backoffDelay(this.reconnect, this.attempt);
    this.attempt++;
    this.retryTimer = setTimeout(() => {
      this.status.reconnects++;
      this.connect();
    }, delay);
    this.retryTimer.unref();
  }

  private checkIdle(): void {
    if (!this.req || !this.res) return;
    const limit = this.options.idleTimeoutMs ?? Math.max(3000, 3 * this.heartbeatInterval);
    if (Date.now() - this.lastMessageAt > limit)
      this.failed(this.req, `no heartbeat from the registry for ${limit} ms`);
  }

  private onFrames(frames: Frame[]): void {
    let changed = false;
    /** Only the horizon moved (heartbeats): the compiled rules stay as they are. */
    let advanced = false;
    for (const f of frames) {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(f.data);
      } catch {
        continue;
      }
      switch (f.event) {
        case 'snapshot':
          this.sandboxes.clear();
          this.groups.clear();
          for (const s of (data.sandboxes as Doc[]) ?? [])
            this.sandboxes.set(s.id ?? s.name, s as SandboxSpec);
          for (const g of (data.groups as Doc[]) ?? []) this.groups.set(g.id ?? g.name, g as RouteGroupSpec);
          this.status.revision = Number(data.revision);
          this.fullRebuild = true;
          changed = true;
          break;
        case 'add':
        case 'replace':
        case 'remove':
        case 'forget': {
          const id = String(data.id);
          const after = f.event === 'forget' ? undefined : (data.object as SandboxSpec & RouteGroupSpec);
          if (data.kind === 'group') {
            if (after) this.groups.set(id, after);
            else this.groups.delete(id);
            this.groupsChanged = true;
          } else {
            this.changes.push([this.sandboxes.get(id), after]);
            if (after) this.sandboxes.set(id, after);
            else this.sandboxes.delete(id);
          }
          this.status.revision = Number(data.revision);
          changed = true;
          break;
        }
        case 'synced':
          this.status.synced = true;
          this.status.connected = true;
          this.status.stale = false;
          this.status.error = undefined;
          this.everConnected = true;
          this.attempt = 0;
          changed = true;
          break;
        case 'heartbeat':
          if (typeof data.interval === 'number') this.heartbeatInterval = data.interval;
          if (typeof data.completeUntil === 'number' && data.completeUntil > this.status.completeUntil) {
            this.status.completeUntil = data.completeUntil;
            advanced = true;
          }
          break;
      }
    }
    this.status.lastSyncAt = Date.now();
    if (!this.status.synced) return;
    const current = this.table;
    if (changed || !current) this.rebuild();
    else if (advanced) this.publish(current.withCompleteUntil(this.status.completeUntil));
  }

  /**
   * Publishes the table for the documents received so far: derived from the current one
   * (compiling only what changed) or, after a snapshot, compiled from scratch.
   */
  private rebuild(): void {
    let table: RouteTable;
    const spec = {
      revision: this.status.revision,
      completeUntil: this.status.completeUntil,
      sandboxes: [...this.sandboxes.values()],
      groups: [...this.groups.values()],
    };
    const current = this.table;
    const changes = this.changes;
    this.changes = [];
    try {
      table =
        current && !this.fullRebuild
          ? current.derive({ ...spec, changedSandboxes: changes, groupsChanged: this.groupsChanged })
          : new RouteTable(spec);
      this.fullRebuild = false;
      this.groupsChanged = false;
    } catch (err) {
      this.fullRebuild = true;
      logger().error(
        'branchline: the registry sent a route table that does not compile; keeping the last one',
        {
          err: String(err),
          revision: this.status.revision,
        },
      );
      return;
    }
    this.publish(table);
  }
}

function parseFrame(text: string): Frame | undefined {
  let event = 'message';
  let data = '';
  let id: string | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(line.charCodeAt(5) === 32 ? 6 : 5);
    else if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('id:')) id = line.slice(3).trim();
  }
  return data ? { event, data, id } : undefined;
}

/** A route source that follows the registry at `options.registry`. */
export function createRegistrySource(options: RegistrySourceOptions): RegistryRouteSource {
  return new RegistryRouteSource(options);
}
