import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  type ResourceContext,
  type ResourceHook,
  type ResourceProgress,
  type ResourceState,
  RouteTable,
  type SandboxDeletedListener,
} from '@branchline/core/transport';
import { ActivityLog } from './activity.js';
import {
  hashToken,
  readTokensFile,
  type Scope,
  TokenAuth,
  type TokenEntry,
  tokenMatchesHash,
  verifyGithubSignature,
} from './auth.js';
import { renderDashboard } from './dashboard.js';
import { formatDuration, parseDuration } from './duration.js';
import { EndpointAllowList } from './endpoint-allow-list.js';
import {
  ClientGoneError,
  checkBrowserWrite,
  checkJsonBody,
  isJsonType,
  isWrite,
  parseAllowedOrigins,
  pathSegments,
} from './http-guards.js';
import { RegistryMetrics } from './metrics.js';
import { Mutex } from './mutex.js';
import { PostgresStore } from './postgres-store.js';
import {
  checkName,
  groupBody,
  type HeartbeatBody,
  heartbeatBody,
  parseBody,
  type SandboxBody,
  sandboxBody,
} from './schemas.js';
import { SqliteStore } from './sqlite-store.js';
import {
  advanceHistory,
  effectiveOverrides,
  endpointArrays,
  generateKey,
  groupMatches,
  labelValue,
  newId,
  RegistryError,
  RegistryState,
  sandboxStatus,
  tombstoneSandbox,
  unmatchedGroups,
} from './state.js';
import type { Store } from './store.js';
import type { Change, GroupDoc, PendingChange, SandboxDoc } from './types.js';

export interface RegistryServerOptions {
  /**
   * Where state lives: a SQLite file path (default `./branchline-registry.db`), `:memory:`, a
   * `postgres://` / `postgresql://` URL (several replicas may share it), or a Store.
   */
  store?: string | Store;
  /** Bearer tokens. With none configured the registry is open (a warning is logged). */
  tokens?: TokenEntry[];
  /** A tokens file (JSON array or `TOKEN SCOPES [NAME]` lines); merged with `tokens`. */
  tokensFile?: string;
  /** Reads (GET, watch) need a token with the read scope. Default: true when tokens are configured. */
  readRequiresToken?: boolean;
  /** Secret of the GitHub webhook; without it `POST /v1/webhooks/github` answers 401. */
  githubWebhookSecret?: string;
  resourceHooks?: ResourceHook[];
  /** How often watchers get a heartbeat carrying `completeUntil`. Default 500 ms. */
  heartbeatIntervalMs?: number;
  /**
   * Least time between two writes to the watchers. A change after a quiet spell goes out at
   * once; changes that follow sooner wait (at most this long) and share the next write, one
   * system call per watcher instead of one per change. 0: every event-loop turn. Default 20 ms.
   */
  watchFlushIntervalMs?: number;
  /** How often expired sandboxes, groups and endpoint leases are reaped. Default 250 ms. */
  reapIntervalMs?: number;
  /** How long deleted sandboxes and groups stay as tombstones. Default 6 h. */
  tombstoneRetentionMs?: number;
  /** TTL of a sandbox or group created without one. Default 24 h; `null` = no expiry (needs `maxTtlMs: null`). */
  defaultTtlMs?: number | null;
  /**
   * Longest TTL a request may ask for (`ttl`, `expiresAt`, a heartbeat's `ttl`); longer ones get
   * 400. Default 30 days; `null` = no maximum (then `expiresAt: null` means never).
   */
  maxTtlMs?: number | null;
  /**
   * Where endpoints may point: networks (`10.0.0.0/8`), addresses, host names and `*.suffix`
   * patterns. Declared and announced endpoints outside them get 400. Default: anywhere
   * (`BRANCHLINE_REGISTRY_ALLOW_ENDPOINTS`, comma-separated).
   */
  allowEndpoints?: string[];
  /**
   * Origins of web pages allowed to call the API (they get CORS headers) and to write
   * (`https://tools.example.com`); other browser writes get 403. Default: none
   * (`BRANCHLINE_REGISTRY_ALLOW_ORIGINS`, comma-separated).
   */
  allowOrigins?: string[];
  /** How long an endpoint announced by a heartbeat lasts without the next one. Default 15 s. */
  announceTtlMs?: number;
  /** Largest request body. Default 256 KiB. */
  maxBodyBytes?: number;
  /** Changes kept for watchers resuming by revision. Default 10,000. */
  resumeWindow?: number;
  /** How long DELETE waits for resource hooks before answering 202. Default 10 s. */
  deleteWaitMs?: number;
  /** How often resource hooks' `sweep` runs. Default 60 s. */
  sweepIntervalMs?: number;
  /** Retry interval for failed deprovisioning. Default 5 s. */
  retryIntervalMs?: number;
  /**
   * How long a replica's claim on provisioning a sandbox's resources lasts without renewal
   * (renewed every third of it while the hooks run). After a crash, another replica (or the
   * restarted one) resumes the provisioning once the claim ran out. Default 15 s.
   */
  provisionClaimMs?: number;
  /** Log lines (JSON) go here. Default: stderr. */
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

interface Watcher {
  res: ServerResponse;
  /** Events go straight to the socket: the response is close-delimited, so no chunk framing. */
  socket: Socket;
  /** `?view=routing`: documents carry only what routing needs (see `routingDoc`). */
  routing: boolean;
}

/** A change as both views of the watch stream write it, encoded once each. */
interface ChangeFrame {
  change: Change;
  text: string;
  routing: string;
}

interface Job {
  abort: AbortController;
  done: Promise<void>;
}

// `connection: close` makes the body close-delimited instead of chunked, so a broadcast is one
// socket write per watcher with no per-write framing.
const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  connection: 'close',
  'x-accel-buffering': 'no',
};

/** The answer to a CORS preflight from an allowed origin (see `allowOrigins`). */
const CORS_PREFLIGHT_HEADERS = {
  'access-control-allow-methods': 'GET, PUT, POST, DELETE',
  'access-control-allow-headers': 'authorization, content-type, last-event-id',
  'access-control-max-age': '600',
};

/** How many processed GitHub delivery ids the store remembers, to refuse replays. */
const DELIVERY_MEMORY = 10_000;
/** GitHub's delivery ids are GUIDs; this also admits other senders' ids of the same alphabet. */
const DELIVERY_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
/** A sandbox created up to this long after a pull request's closed_at is still deleted by it. */
const CLOSED_AT_MARGIN_MS = 5 * 60_000;

/** The next write to the watchers waits at least this many times the last one's duration. */
const FANOUT_GAP_FACTOR = 4;
/** ...but never longer than this (ms), whatever the fan-out costs. */
const MAX_FLUSH_GAP_MS = 50;

/**
 * A sandbox as the SDKs' route tables need it (`GET /v1/watch?view=routing`): the editing
 * fields (`declared`, `announced`, `status`, `updatedAt`, `deleteReason`) stay out, which makes
 * each change about a third smaller to send and to parse in every watching service.
 */
function routingDoc(
  s: SandboxDoc,
): Omit<SandboxDoc, 'declared' | 'announced' | 'status' | 'updatedAt' | 'deleteReason'> {
  return {
    id: s.id,
    name: s.name,
    key: s.key,
    overrides: s.overrides,
    labels: s.labels,
    createdAt: s.createdAt,
    expiresAt: s.expiresAt,
    deletedAt: s.deletedAt,
    history: s.history,
    resources: s.resources,
  };
}

function sse(event: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function defaultLog(level: string, msg: string, fields?: Record<string, unknown>): void {
  process.stderr.write(
    `${JSON.stringify({ level, time: Date.now(), name: 'branchline-registry', msg, ...fields })}\n`,
  );
}

export function storeFromOption(store: string | Store | undefined): Store {
  if (store && typeof store !== 'string') return store;
  const s = store ?? process.env.BRANCHLINE_REGISTRY_STORE ?? './branchline-registry.db';
  if (/^postgres(ql)?:\/\//.test(s)) return new PostgresStore(s);
  return new SqliteStore(s.replace(/^sqlite:(\/\/)?/, ''));
}

/**
 * The Branchline control plane. `createRegistryServer(options)` builds it; `listen()` opens
 * the store and starts serving. See docs/registry.md for the API.
 */
export class RegistryServer {
  readonly store: Store;
  readonly metrics = new RegistryMetrics();
  /** Routing activity reported by the SDKs (`POST /v1/activity`), shown by the dashboard. */
  readonly activity = new ActivityLog();
  private readonly state = new RegistryState();
  private readonly mutex = new Mutex();
  private readonly auth: TokenAuth;
  private readonly readRequiresToken: boolean;
  private readonly hooks = new Map<string, ResourceHook>();
  private readonly deletedListeners: SandboxDeletedListener[] = [];
  private readonly watchers = new Set<Watcher>();
  private ring: ChangeFrame[] = [];
  /** Frames queued for the next write (see `broadcast`): as full watchers get them, and as routing watchers do. */
  private pendingFrames: string[] = [];
  private pendingRouting: string[] = [];
  /** The next write; `deferred` when it waits for the flush interval rather than this turn. */
  private flushing: { promise: Promise<void>; resolve: () => void; deferred: boolean } | undefined;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  /** Least time until the next write to the watchers (see `flush`). */
  private flushGapMs = 0;
  private completeUntil: number | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly jobs = new Map<string, Job>();
  private readonly lastRetry = new Map<string, number>();
  private readonly http: Server;
  private opened = false;
  private closing = false;
  /** This process among the replicas, as the holder of provisioning claims. */
  private readonly instance = randomBytes(9).toString('base64url');
  private catchUpQueued = false;
  private readonly opts: Required<
    Pick<
      RegistryServerOptions,
      | 'heartbeatIntervalMs'
      | 'watchFlushIntervalMs'
      | 'reapIntervalMs'
      | 'tombstoneRetentionMs'
      | 'announceTtlMs'
      | 'maxBodyBytes'
      | 'resumeWindow'
      | 'deleteWaitMs'
      | 'sweepIntervalMs'
      | 'retryIntervalMs'
      | 'provisionClaimMs'
    >
  > & { defaultTtlMs: number | null; maxTtlMs: number | null; githubWebhookSecret?: string };
  private readonly allowEndpoints: EndpointAllowList;
  private readonly allowOrigins: Set<string>;
  readonly log: NonNullable<RegistryServerOptions['log']>;

  constructor(options: RegistryServerOptions = {}) {
    this.store = storeFromOption(options.store);
    const tokens = [
      ...(options.tokens ?? []),
      ...(options.tokensFile ? readTokensFile(options.tokensFile) : []),
    ];
    this.auth = new TokenAuth(tokens);
    this.readRequiresToken = options.readRequiresToken ?? this.auth.enabled;
    for (const h of options.resourceHooks ?? []) {
      if (!h || typeof h.type !== 'string')
        throw new TypeError('branchline registry: a resource hook needs a "type"');
      this.hooks.set(h.type, h);
    }
    const maxTtlMs = options.maxTtlMs === undefined ? 30 * 86_400_000 : options.maxTtlMs;
    this.opts = {
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 500,
      watchFlushIntervalMs: options.watchFlushIntervalMs ?? 20,
      reapIntervalMs: options.reapIntervalMs ?? 250,
      tombstoneRetentionMs: options.tombstoneRetentionMs ?? 6 * 3_600_000,
      announceTtlMs: options.announceTtlMs ?? 15_000,
      maxBodyBytes: options.maxBodyBytes ?? 256 * 1024,
      resumeWindow: options.resumeWindow ?? 10_000,
      deleteWaitMs: options.deleteWaitMs ?? 10_000,
      sweepIntervalMs: options.sweepIntervalMs ?? 60_000,
      retryIntervalMs: options.retryIntervalMs ?? 5000,
      provisionClaimMs: options.provisionClaimMs ?? 15_000,
      // Left unset, the default TTL is 24 h or the maximum, whichever is shorter.
      defaultTtlMs:
        options.defaultTtlMs === undefined
          ? Math.min(24 * 3_600_000, maxTtlMs ?? Number.POSITIVE_INFINITY)
          : options.defaultTtlMs,
      maxTtlMs,
      githubWebhookSecret: options.githubWebhookSecret,
    };
    checkTtlOptions(this.opts.defaultTtlMs, this.opts.maxTtlMs);
    this.allowEndpoints = new EndpointAllowList(
      options.allowEndpoints ?? listFromEnv('BRANCHLINE_REGISTRY_ALLOW_ENDPOINTS'),
    );
    this.allowOrigins = parseAllowedOrigins(
      options.allowOrigins ?? listFromEnv('BRANCHLINE_REGISTRY_ALLOW_ORIGINS'),
    );
    this.log = options.log ?? defaultLog;
    this.http = createServer((req, res) => this.handle(req, res));
    this.http.keepAliveTimeout = 65_000;
  }

  /** Registers a resource hook after construction (plugins loaded by `branchline registry --plugin`). */
  addResourceHook(hook: ResourceHook): void {
    if (!hook || typeof hook.type !== 'string')
      throw new TypeError('branchline registry: a resource hook needs a "type"');
    this.hooks.set(hook.type, hook);
  }

  /** Registers a listener for sandbox deletions (transport cleanup that is not a declared resource). */
  onSandboxDeleted(listener: SandboxDeletedListener): () => void {
    this.deletedListeners.push(listener);
    return () => {
      const i = this.deletedListeners.indexOf(listener);
      if (i >= 0) this.deletedListeners.splice(i, 1);
    };
  }

  get revision(): number {
    return this.state.revision;
  }

  get watcherCount(): number {
    return this.watchers.size;
  }

  /** The request handler, to mount the registry in another node:http server. */
  get handler(): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => this.handle(req, res);
  }

  /** Opens the store (without serving HTTP); `listen` calls it. */
  async open(): Promise<void> {
    if (this.opened) return;
    this.opened = true;
    const loaded = await this.store.open(this.opts.resumeWindow);
    this.state.load(loaded.revision, loaded.sandboxes, loaded.groups);
    this.ring = loaded.recent.map((change) => this.changeFrame(change));
    this.store.onRemoteCommit((rev) => {
      if (rev > this.state.revision) this.queueCatchUp();
    });
    if (!this.auth.enabled)
      this.log(
        'warn',
        'no tokens configured: the registry accepts writes from anyone (see docs/registry.md#tokens)',
      );
    const every = (ms: number, fn: () => Promise<void>) => {
      let busy = false;
      const t = setInterval(() => {
        if (busy || this.closing) return;
        busy = true;
        fn()
          .catch((err) => this.log('error', 'registry background task failed', { err: String(err) }))
          .finally(() => {
            busy = false;
          });
      }, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.opts.heartbeatIntervalMs, () => this.tick());
    every(this.opts.reapIntervalMs, () => this.reap());
    every(this.opts.sweepIntervalMs, () => this.sweep());
    every(60_000, () => this.store.pruneChanges(this.opts.resumeWindow));
    await this.tick();
    // Resources a crashed registry left half-provisioned are picked up again. Replicas sharing
    // a store claim a sandbox first (see startProvisioning), so one of them runs its hooks; they
    // look again now and then for provisioning whose replica died (its claim ran out).
    this.resumeProvisioning();
    if (!(this.store instanceof SqliteStore))
      every(this.opts.retryIntervalMs, async () => this.resumeProvisioning());
  }

  private resumeProvisioning(): void {
    for (const s of this.state.sandboxes.values())
      if (s.deletedAt == null && unfinished(s).some(([, r]) => this.hooks.has(r.type)))
        this.startProvisioning(s.name);
  }

  async listen(port = 7070, host = '127.0.0.1'): Promise<string> {
    await this.open();
    this.http.listen(port, host);
    await once(this.http, 'listening');
    return this.url;
  }

  get url(): string {
    const a = this.http.address() as AddressInfo | null;
    if (!a) throw new Error('branchline registry: not listening yet');
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}`;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    for (const t of this.timers) clearInterval(t);
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
    for (const j of this.jobs.values()) j.abort.abort();
    await Promise.allSettled([...this.jobs.values()].map((j) => j.done));
    if (this.http.listening) {
      const closed = once(this.http, 'close');
      this.http.close();
      this.http.closeAllConnections();
      await closed;
    }
    await this.mutex.run(() => this.store.close());
  }

  // ---- changes ---------------------------------------------------------------------------

  private changeFrame(c: Change): ChangeFrame {
    const text = sse(
      c.type,
      { revision: c.revision, time: c.time, kind: c.kind, id: c.id, name: c.name, object: c.object },
      c.revision,
    );
    const object = c.kind === 'sandbox' && c.object ? routingDoc(c.object as SandboxDoc) : c.object;
    return {
      change: c,
      text,
      routing: sse(c.type, { revision: c.revision, kind: c.kind, id: c.id, object }, c.revision),
    };
  }

  /** Applies a committed change to the in-memory state and queues it for every watcher. */
  private applyCommitted(c: Change): void {
    if (!this.state.apply(c)) return;
    this.metrics.events++;
    const frame = this.changeFrame(c);
    this.ring.push(frame);
    if (this.ring.length > this.opts.resumeWindow * 1.25)
      this.ring = this.ring.slice(-this.opts.resumeWindow);
    this.broadcast(frame.text, frame.routing);
  }

  /**
   * Queues a frame for every watcher. Frames queued in the same event-loop turn (several writes
   * answered together, a change and a heartbeat), or within `watchFlushIntervalMs` of the last
   * write, go out as one socket write per watcher: the fan-out's cost is the write system call
   * per socket, not the bytes, so a busy registry batches more and spends less per change.
   * Resolves once the frame has been written.
   */
  private broadcast(text: string, routing = text): Promise<void> {
    this.pendingFrames.push(text);
    this.pendingRouting.push(routing);
    if (!this.flushing) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      const wait = this.lastFlushAt + this.flushGapMs - performance.now();
      this.flushing = { promise, resolve, deferred: wait > 0 };
      if (wait > 0) setTimeout(() => this.flush(), wait);
      else setImmediate(() => this.flush());
    }
    return this.flushing.promise;
  }

  /** Writes the queued frames to every watcher now. */
  private flush(): void {
    const f = this.flushing;
    this.flushing = undefined;
    if (this.pendingFrames.length > 0) {
      this.lastFlushAt = performance.now();
      // Encode once per view, on first use: a string written to each of N sockets would be
      // encoded N times.
      const pendingFull = this.pendingFrames;
      const pendingRouting = this.pendingRouting;
      let full: Buffer | undefined;
      let routing: Buffer | undefined;
      this.pendingFrames = [];
      this.pendingRouting = [];
      const t0 = performance.now();
      for (const w of this.watchers) {
        // A watcher that cannot keep up is dropped; it reconnects and resumes from its revision.
        if (w.socket.writableLength > 8 * 1024 * 1024) {
          w.socket.destroy();
          this.watchers.delete(w);
          continue;
        }
        if (w.routing) {
          routing ??= Buffer.from(pendingRouting.join(''));
          w.socket.write(routing);
        } else {
          full ??= Buffer.from(pendingFull.join(''));
          w.socket.write(full);
        }
      }
      // The next write waits at least FANOUT_GAP_FACTOR times as long as this one took: with
      // many watchers the fan-out then takes a bounded share of the registry's CPU (and of its
      // watchers', one read per write) however fast changes arrive, at the price of batching
      // more of them per write. Never longer than MAX_FLUSH_GAP_MS.
      const took = performance.now() - t0;
      this.metrics.fanOutSeconds += took / 1000;
      this.metrics.fanOuts++;
      const base = this.opts.watchFlushIntervalMs;
      this.flushGapMs = base === 0 ? 0 : Math.max(base, Math.min(MAX_FLUSH_GAP_MS, took * FANOUT_GAP_FACTOR));
    }
    f?.resolve();
  }

  /** One write: the store serialises it across replicas; changes apply after the commit. */
  private mutate<T>(decide: (time: number) => { changes: PendingChange[]; result: T }): Promise<T> {
    return this.mutateAt(decide).then((r) => r.result);
  }

  /**
   * Like `mutate`, also returning the revision of this write's last change (or the current one).
   * A change written this turn is answered once it has been written to every watcher (it is on
   * its way to every SDK); one that waits for the flush interval is answered at once, so a
   * client writing one change after another is not slowed to one per interval.
   */
  private async mutateAt<T>(
    decide: (time: number) => { changes: PendingChange[]; result: T },
  ): Promise<{ result: T; revision: number }> {
    let sent: Promise<void> | undefined;
    const r = await this.mutex.run(async () => {
      const { committed, result } = await this.store.write(this.state.revision, ({ time, missed }) => {
        for (const c of missed) this.applyCommitted(c);
        return decide(time);
      });
      for (const c of committed) this.applyCommitted(c);
      if (this.flushing && !this.flushing.deferred) sent = this.flushing.promise;
      return { result, revision: committed.at(-1)?.revision ?? this.state.revision };
    });
    await sent;
    return r;
  }

  private queueCatchUp(): void {
    if (this.catchUpQueued) return;
    this.catchUpQueued = true;
    this.mutex
      .run(async () => {
        this.catchUpQueued = false;
        for (const c of await this.store.changesSince(this.state.revision)) this.applyCommitted(c);
      })
      .catch((err) => this.log('warn', 'catching up with the store failed', { err: String(err) }));
  }

  /** Heartbeat: learn how far every write has committed, catch up to it, tell the watchers. */
  private tick(): Promise<void> {
    return this.mutex.run(async () => {
      const h = await this.store.horizon();
      if (h.revision > this.state.revision)
        for (const c of await this.store.changesSince(this.state.revision)) this.applyCommitted(c);
      if (this.state.revision < h.revision) return;
      this.completeUntil = h.completeUntil;
      this.broadcast(this.heartbeatText());
    });
  }

  private heartbeatText(): string {
    return sse('heartbeat', {
      revision: this.state.revision,
      completeUntil: this.completeUntil,
      time: Date.now(),
      interval: this.opts.heartbeatIntervalMs,
    });
  }

  // ---- lifecycle -------------------------------------------------------------------------

  /** Refuses (400) a `ttl` or `expiresAt` past the maximum, naming the field and the maximum. */
  private checkExpiry(body: { ttl?: string | number; expiresAt?: number | null }): void {
    const max = this.opts.maxTtlMs;
    if (max === null) return;
    if (body.ttl !== undefined && !(parseDuration(body.ttl)! <= max)) throw overMaximum('ttl', max, body.ttl);
    if (body.expiresAt === null || (body.expiresAt !== undefined && body.expiresAt > Date.now() + max))
      throw overMaximum('expiresAt', max, body.expiresAt);
  }

  /** Refuses (400) endpoints outside `allowEndpoints`, naming the field. */
  private checkEndpoints(path: string, ep: { http?: string | string[]; grpc?: string | string[] }): void {
    if (!this.allowEndpoints.enabled) return;
    for (const transport of ['http', 'grpc'] as const) {
      const v = ep[transport];
      if (v === undefined) continue;
      const list = Array.isArray(v) ? v : [v];
      list.forEach((e, i) => {
        const why =
          transport === 'http' ? this.allowEndpoints.checkHttp(e) : this.allowEndpoints.checkGrpc(e);
        if (why === undefined) return;
        const field = `${path}${path ? '.' : ''}${transport}${Array.isArray(v) ? `.${i}` : ''}`;
        const message = `${JSON.stringify(e)} is not allowed here: ${why} (allowed: ${this.allowEndpoints.entries.join(', ')}; see --allow-endpoints)`;
        throw new RegistryError(400, 'endpoint_not_allowed', `${field}: ${message}`, {
          issues: [{ path: field, message }],
        });
      });
    }
  }

  private ttlToExpiry(
    body: { ttl?: string | number; expiresAt?: number | null },
    time: number,
  ): number | null {
    if (body.expiresAt !== undefined) return body.expiresAt;
    if (body.ttl !== undefined) return time + parseDuration(body.ttl)!;
    return this.opts.defaultTtlMs === null ? null : time + this.opts.defaultTtlMs;
  }

  async putSandbox(
    name: string,
    input: unknown,
  ): Promise<{ sandbox: SandboxDoc; created: boolean; revision: number; sandboxToken?: string }> {
    checkName(name, 'sandbox');
    const body: SandboxBody = parseBody(sandboxBody, input);
    this.checkExpiry(body);
    for (const [svc, ep] of Object.entries(body.overrides)) this.checkEndpoints(`overrides.${svc}`, ep);
    if (body.name !== undefined && body.name !== name)
      throw new RegistryError(
        400,
        'invalid_request',
        `name: the body says ${JSON.stringify(body.name)} but the URL says ${JSON.stringify(name)}`,
      );
    for (const [rname, r] of Object.entries(body.resources)) {
      const hook = this.hooks.get(r.type);
      if (!hook)
        throw new RegistryError(
          400,
          'unknown_resource_type',
          `resources.${rname}.type: no resource hook handles ${JSON.stringify(r.type)} (registered: ${[...this.hooks.keys()].join(', ') || 'none'}); start the registry with that package's hook`,
        );
      try {
        hook.validate?.(r.spec);
      } catch (err) {
        throw new RegistryError(400, 'invalid_request', `resources.${rname}.spec: ${(err as Error).message}`);
      }
    }
    const token = `bls_${randomBytes(24).toString('base64url')}`;
    const { result, revision } = await this.mutateAt((time) => {
      const old = this.state.sandbox(name);
      if (old && body.key !== undefined && body.key !== old.key)
        throw new RegistryError(
          409,
          'key_change',
          `sandbox ${name} has key ${old.key}; a key cannot change: delete the sandbox and create it again`,
        );
      const key = old?.key ?? body.key ?? generateKey(this.state, name);
      const holder = this.state.keyOwner(key);
      if (holder && holder !== `sandbox ${name}`)
        throw new RegistryError(
          409,
          'key_taken',
          `key ${JSON.stringify(key)} is already used by ${holder}; pick another --key`,
        );
      for (const [rname, prior] of Object.entries(old?.resources ?? {})) {
        const next = body.resources[rname];
        if (!next || next.type !== prior.type || JSON.stringify(next.spec) !== JSON.stringify(prior.spec))
          throw new RegistryError(
            409,
            'resource_change',
            `resources.${rname}: a live sandbox's resources cannot be removed or changed (they hold data); delete the sandbox and create it again`,
          );
      }
      const announced = old?.announced ?? {};
      const overrides = effectiveOverrides(body.overrides, announced);
      const resources: Record<string, ResourceState> = {};
      for (const [rname, r] of Object.entries(body.resources)) {
        const prior = old?.resources[rname];
        resources[rname] =
          prior && prior.type === r.type && JSON.stringify(prior.spec) === JSON.stringify(r.spec)
            ? prior
            : { type: r.type, spec: r.spec, status: this.hooks.get(r.type)?.provision ? 'pending' : 'ready' };
      }
      const doc: SandboxDoc = {
        id: old?.id ?? newId(),
        name,
        key,
        overrides,
        declared: body.overrides,
        announced,
        labels: body.labels,
        createdAt: old?.createdAt ?? time,
        expiresAt: this.ttlToExpiry(body, time),
        deletedAt: null,
        history: advanceHistory(old?.history ?? {}, old?.overrides ?? {}, overrides, time),
        resources,
        status: sandboxStatus(resources, false),
        updatedAt: time,
      };
      const changes: PendingChange[] = [
        { type: old ? 'replace' : 'add', kind: 'sandbox', id: doc.id, name, object: doc },
      ];
      changes.push(...unmatchedGroups(this.state, [doc], time));
      return { changes, result: { sandbox: doc, created: !old } };
    });
    let sandboxToken: string | undefined;
    if (result.created) {
      await this.store.putSecret(result.sandbox.id, { tokenHash: hashToken(token) });
      sandboxToken = token;
    }
    this.startProvisioning(name);
    return { ...result, revision, sandboxToken };
  }

  /** Tombstones the sandbox (it stops routing now), then removes its resources. */
  async deleteSandbox(
    name: string,
    reason: 'api' | 'expired' | 'webhook',
    wait = true,
  ): Promise<{ sandbox: SandboxDoc; done: boolean } | undefined> {
    const tomb = await this.mutate((time) => {
      const s = this.state.sandbox(name);
      if (!s) return { changes: [], result: undefined };
      if (reason === 'expired' && (s.expiresAt == null || s.expiresAt > Date.now()))
        return { changes: [], result: undefined };
      const t = tombstoneSandbox(s, time, reason);
      const changes: PendingChange[] = [{ type: 'remove', kind: 'sandbox', id: s.id, name, object: t }];
      changes.push(...unmatchedGroups(this.state, [t], time));
      return { changes, result: t };
    });
    if (!tomb) return undefined;
    this.log('info', 'sandbox deleted', { sandbox: name, reason });
    this.jobs.get(`p:${tomb.id}`)?.abort.abort();
    for (const l of this.deletedListeners) {
      try {
        await l({ name: tomb.name, key: tomb.key, labels: tomb.labels, deletedAt: tomb.deletedAt! }, reason);
      } catch (err) {
        this.log('error', 'an onSandboxDeleted listener failed', { sandbox: name, err: String(err) });
      }
    }
    const job = this.startDeprovisioning(tomb.id);
    let done = !job;
    if (job && wait) {
      let timer: NodeJS.Timeout | undefined;
      done = await Promise.race([
        job.then(() => true),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(false), this.opts.deleteWaitMs);
        }),
      ]);
      clearTimeout(timer);
    }
    return {
      sandbox: this.state.sandboxes.get(tomb.id) ?? tomb,
      done: done && this.state.sandboxes.get(tomb.id)?.status === 'deleted',
    };
  }

  async putGroup(name: string, input: unknown): Promise<{ group: GroupDoc; created: boolean }> {
    checkName(name, 'route group');
    const body = parseBody(groupBody, input);
    this.checkExpiry(body);
    return this.mutate((time) => {
      const old = this.state.group(name);
      if (old && body.key !== undefined && body.key !== old.key)
        throw new RegistryError(
          409,
          'key_change',
          `route group ${name} has key ${old.key}; delete and recreate it to change the key`,
        );
      const key = old?.key ?? body.key ?? generateKey(this.state, name);
      const holder = this.state.keyOwner(key);
      if (holder && holder !== `group ${name}`)
        throw new RegistryError(
          409,
          'key_taken',
          `key ${JSON.stringify(key)} is already used by ${holder}; pick another key`,
        );
      const doc: GroupDoc = {
        id: old?.id ?? newId(),
        name,
        key,
        match: { labels: body.match.labels, mode: body.match.mode },
        createdAt: old?.createdAt ?? time,
        expiresAt: this.ttlToExpiry(body, time),
        deletedAt: null,
        expireWhenUnmatched: body.expireWhenUnmatched,
        updatedAt: time,
      };
      return {
        changes: [{ type: old ? 'replace' : 'add', kind: 'group', id: doc.id, name, object: doc }],
        result: { group: doc, created: !old },
      };
    });
  }

  async deleteGroup(name: string, reason: 'api' | 'expired'): Promise<GroupDoc | undefined> {
    return this.mutate((time) => {
      const g = this.state.group(name);
      if (!g) return { changes: [], result: undefined };
      if (reason === 'expired' && (g.expiresAt == null || g.expiresAt > Date.now()))
        return { changes: [], result: undefined };
      const t: GroupDoc = { ...g, deletedAt: time, deleteReason: reason, updatedAt: time };
      return { changes: [{ type: 'remove', kind: 'group', id: g.id, name, object: t }], result: t };
    });
  }

  /** A workload announces (ready) or withdraws (not ready) its endpoint for a service. */
  async heartbeat(name: string, input: unknown): Promise<SandboxDoc> {
    const body: HeartbeatBody = parseBody(heartbeatBody, input);
    if (body.ttl !== undefined) this.checkExpiry({ ttl: body.ttl });
    this.checkEndpoints('', { http: body.http, grpc: body.grpc });
    if (body.endpoint) this.checkEndpoints('endpoint', body.endpoint);
    const eps = endpointArrays(body.endpoint);
    eps.http.push(...endpointArrays({ http: body.http }).http);
    eps.grpc.push(...endpointArrays({ grpc: body.grpc }).grpc);
    const sandbox = this.state.sandbox(name);
    if (!sandbox) throw notFound('sandbox', name);
    const lease = body.ttl !== undefined ? parseDuration(body.ttl)! : this.opts.announceTtlMs;
    const list = [
      ...eps.http.map((e) => ({ transport: 'http' as const, endpoint: e.replace(/\/$/, '') })),
      ...eps.grpc.map((e) => ({ transport: 'grpc' as const, endpoint: e })),
    ];
    for (const l of list) {
      const key = { sandboxId: sandbox.id, service: body.service, ...l };
      if (body.ready) await this.store.touchLease({ ...key, expiresAt: Date.now() + lease });
      else await this.store.dropLease(key);
    }
    return this.updateAnnounced(name, body.service, list, body.ready);
  }

  private updateAnnounced(
    name: string,
    service: string,
    list: { transport: 'http' | 'grpc'; endpoint: string }[],
    add: boolean,
    sandboxId?: string,
  ): Promise<SandboxDoc> {
    return this.mutate((time) => {
      const s = this.state.sandbox(name);
      if (!s || (sandboxId && s.id !== sandboxId)) {
        if (sandboxId) return { changes: [], result: s as SandboxDoc };
        throw notFound('sandbox', name);
      }
      const cur = s.announced[service] ?? { http: [], grpc: [] };
      const next = { http: [...cur.http], grpc: [...cur.grpc] };
      for (const { transport, endpoint } of list) {
        const arr = next[transport];
        const i = arr.indexOf(endpoint);
        if (add && i < 0) arr.push(endpoint);
        if (!add && i >= 0) arr.splice(i, 1);
      }
      if (next.http.length === cur.http.length && next.grpc.length === cur.grpc.length)
        return { changes: [], result: s };
      const announced = { ...s.announced };
      if (next.http.length || next.grpc.length) announced[service] = next;
      else delete announced[service];
      const overrides = effectiveOverrides(s.declared, announced);
      const doc: SandboxDoc = {
        ...s,
        announced,
        overrides,
        history: advanceHistory(s.history, s.overrides, overrides, time),
        updatedAt: time,
      };
      return { changes: [{ type: 'replace', kind: 'sandbox', id: s.id, name, object: doc }], result: doc };
    });
  }

  /** Updates one resource's state on a live sandbox or a tombstone. */
  private patchResource(id: string, resource: string, patch: Partial<ResourceState> | null): Promise<void> {
    return this.mutate((time) => {
      const s = this.state.sandboxes.get(id);
      if (!s || !s.resources[resource]) return { changes: [], result: undefined };
      const resources = { ...s.resources };
      if (patch === null) delete resources[resource];
      else resources[resource] = { ...resources[resource]!, ...patch };
      const doc: SandboxDoc = {
        ...s,
        resources,
        status: sandboxStatus(resources, s.deletedAt != null),
        updatedAt: time,
      };
      return {
        changes: [{ type: 'replace', kind: 'sandbox', id, name: s.name, object: doc }],
        result: undefined,
      };
    });
  }

  private context(s: SandboxDoc, rname: string, signal: AbortSignal): ResourceContext {
    const r = s.resources[rname]!;
    let last = 0;
    let pending: ResourceProgress | undefined;
    let timer: NodeJS.Timeout | undefined;
    const flush = () => {
      timer = undefined;
      last = Date.now();
      const p = pending;
      pending = undefined;
      if (p) this.patchResource(s.id, rname, { progress: p }).catch(() => undefined);
    };
    return {
      sandbox: { name: s.name, key: s.key, labels: s.labels },
      resource: { name: rname, type: r.type, spec: r.spec },
      signal,
      // Progress is stored at most every 200 ms so a chatty hook cannot flood watchers.
      report: (progress) => {
        pending = { ...progress };
        if (timer) return;
        const wait = Math.max(0, 200 - (Date.now() - last));
        timer = setTimeout(flush, wait);
      },
    };
  }

  private startProvisioning(name: string): void {
    const s = this.state.sandbox(name);
    if (!s || !unfinished(s).length || this.jobs.has(`p:${s.id}`)) return;
    const abort = new AbortController();
    const claim = `provision:${s.id}`;
    const ttl = this.opts.provisionClaimMs;
    let renew: NodeJS.Timeout | undefined;
    const done = (async () => {
      // One replica runs a sandbox's hooks; a crashed one's claim runs out and another resumes.
      if (!(await this.store.claim(claim, this.instance, ttl))) return;
      renew = setInterval(() => {
        this.store
          .claim(claim, this.instance, ttl)
          .then((held) => {
            if (!held) abort.abort();
          })
          .catch(() => undefined);
      }, ttl / 3);
      renew.unref();
      // The replica that had the claim may have finished some resources before it stopped.
      if (!(this.store instanceof SqliteStore)) await this.catchUp();
      const cur = this.state.sandboxes.get(s.id);
      const todo = cur && cur.deletedAt == null ? unfinished(cur) : [];
      for (const [rname, r] of todo) {
        if (abort.signal.aborted) return;
        const hook = this.hooks.get(r.type);
        // Resumed by a replica started without this type's hook: leave it to one that has it.
        if (!hook) continue;
        if (!hook.provision) {
          await this.patchResource(s.id, rname, { status: 'ready' });
          continue;
        }
        await this.patchResource(s.id, rname, { status: 'provisioning', error: undefined });
        try {
          const cur = this.state.sandboxes.get(s.id) ?? s;
          const outputs = await hook.provision(this.context(cur, rname, abort.signal));
          if (outputs) {
            const secret = (await this.store.getSecret(s.id)) ?? {};
            secret.outputs = { ...secret.outputs, [rname]: outputs };
            await this.store.putSecret(s.id, secret);
          }
          if (!abort.signal.aborted) await this.patchResource(s.id, rname, { status: 'ready' });
        } catch (err) {
          this.metrics.hookFailures++;
          this.log('error', 'provisioning a resource failed', {
            sandbox: s.name,
            resource: rname,
            err: String(err),
          });
          if (!abort.signal.aborted)
            await this.patchResource(s.id, rname, {
              status: 'failed',
              error: String((err as Error)?.message ?? err),
            });
        }
      }
    })()
      .catch((err) => this.log('error', 'provisioning stopped', { sandbox: s.name, err: String(err) }))
      .finally(() => {
        clearInterval(renew);
        this.jobs.delete(`p:${s.id}`);
        if (renew) this.store.releaseClaim(claim, this.instance).catch(() => undefined);
      });
    this.jobs.set(`p:${s.id}`, { abort, done });
  }

  /** Applies what other replicas committed since this one's revision. */
  private catchUp(): Promise<void> {
    return this.mutex.run(async () => {
      for (const c of await this.store.changesSince(this.state.revision)) this.applyCommitted(c);
    });
  }

  /** Runs every remaining resource's deprovision hook for a tombstone; resolves when all ran. */
  private startDeprovisioning(id: string): Promise<void> | undefined {
    const key = `d:${id}`;
    const running = this.jobs.get(key);
    if (running) return running.done;
    const s = this.state.sandboxes.get(id);
    if (!s || s.deletedAt == null || !Object.keys(s.resources).length) return undefined;
    const abort = new AbortController();
    this.lastRetry.set(id, Date.now());
    const done = (async () => {
      await this.jobs.get(`p:${id}`)?.done;
      const secret = await this.store.getSecret(id);
      for (const [rname, r] of Object.entries(s.resources)) {
        const hook = this.hooks.get(r.type);
        try {
          if (hook?.deprovision) {
            await this.patchResource(id, rname, { status: 'deleting', error: undefined });
            const cur = this.state.sandboxes.get(id) ?? s;
            await hook.deprovision({
              ...this.context(cur, rname, abort.signal),
              outputs: secret?.outputs?.[rname],
            });
          }
          await this.patchResource(id, rname, null);
        } catch (err) {
          this.metrics.hookFailures++;
          this.log('error', 'removing a resource failed; will retry', {
            sandbox: s.name,
            resource: rname,
            err: String(err),
          });
          await this.patchResource(id, rname, {
            status: 'failed',
            error: String((err as Error)?.message ?? err),
          });
        }
      }
    })()
      .catch((err) => this.log('error', 'deprovisioning stopped', { sandbox: s.name, err: String(err) }))
      .finally(() => this.jobs.delete(key));
    this.jobs.set(key, { abort, done });
    return done;
  }

  /** Deletes what expired, drops announcements whose heartbeats stopped, forgets old tombstones. */
  private async reap(): Promise<void> {
    const now = Date.now();
    for (const s of this.state.liveSandboxes())
      if (s.expiresAt != null && s.expiresAt <= now) await this.deleteSandbox(s.name, 'expired', false);
    for (const g of this.state.liveGroups())
      if (g.expiresAt != null && g.expiresAt <= now) await this.deleteGroup(g.name, 'expired');
    for (const l of await this.store.expiredLeases(now)) {
      await this.store.dropLease(l);
      const s = this.state.sandboxes.get(l.sandboxId);
      if (s && s.deletedAt == null)
        await this.updateAnnounced(
          s.name,
          l.service,
          [{ transport: l.transport, endpoint: l.endpoint }],
          false,
          s.id,
        );
    }
    const forget: PendingChange[] = [];
    for (const s of this.state.sandboxes.values()) {
      if (s.deletedAt == null) continue;
      if (s.status === 'deleted' && s.deletedAt + this.opts.tombstoneRetentionMs <= now)
        forget.push({ type: 'forget', kind: 'sandbox', id: s.id, name: s.name });
      else if (s.status === 'deleting' && now - (this.lastRetry.get(s.id) ?? 0) >= this.opts.retryIntervalMs)
        this.startDeprovisioning(s.id);
    }
    for (const g of this.state.groups.values())
      if (g.deletedAt != null && g.deletedAt + this.opts.tombstoneRetentionMs <= now)
        forget.push({ type: 'forget', kind: 'group', id: g.id, name: g.name });
    if (forget.length)
      await this.mutate(() => ({
        changes: forget.filter((f) =>
          (f.kind === 'sandbox' ? this.state.sandboxes : this.state.groups).has(f.id),
        ),
        result: undefined,
      }));
  }

  private async sweep(): Promise<void> {
    const live = this.state.liveSandboxes().map((s) => s.name);
    for (const h of this.hooks.values()) {
      if (!h.sweep) continue;
      try {
        await h.sweep(live);
      } catch (err) {
        this.metrics.hookFailures++;
        this.log('error', 'a resource sweep failed', { type: h.type, err: String(err) });
      }
    }
  }

  // ---- HTTP ------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let route = 'unknown';
    res.once('finish', () => {
      if (route !== 'watch')
        this.metrics.observe(
          req.method ?? 'GET',
          route,
          res.statusCode,
          Number(process.hrtime.bigint() - started) / 1e9,
        );
    });
    try {
      const { url, parts } = pathSegments(req.url ?? '/');
      const method = req.method ?? 'GET';
      if (!this.opened)
        throw new RegistryError(503, 'starting', 'the registry is still opening its store; retry shortly');
      // Pages on an allowed origin may call the API from the browser: CORS for them only.
      const origin = req.headers.origin;
      if (origin !== undefined && this.allowOrigins.has(origin)) {
        res.setHeader('access-control-allow-origin', origin);
        res.setHeader('vary', 'origin');
        if (method === 'OPTIONS') {
          route = 'preflight';
          res.writeHead(204, CORS_PREFLIGHT_HEADERS);
          res.end();
          return;
        }
      }
      if (isWrite(method)) checkBrowserWrite(req, this.allowOrigins, this.auth.enabled);
      if (parts.length === 0 && method === 'GET') {
        route = 'dashboard';
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(
          renderDashboard({
            revision: this.state.revision,
            sandboxes: this.state.liveSandboxCount,
            groups: this.state.liveGroupCount,
          }),
        );
        return;
      }
      if (parts[0] === 'healthz') {
        route = 'healthz';
        return send(res, 200, {
          status: 'ok',
          revision: this.state.revision,
          store: this.store.description,
          watchers: this.watchers.size,
        });
      }
      if (parts[0] === 'metrics') {
        route = 'metrics';
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end(
          this.metrics.render({
            sandboxes: this.state.liveSandboxCount,
            tombstones: this.state.sandboxes.size - this.state.liveSandboxCount,
            groups: this.state.liveGroupCount,
            watchers: this.watchers.size,
            revision: this.state.revision,
          }),
        );
        return;
      }
      if (parts[0] !== 'v1')
        throw new RegistryError(
          404,
          'not_found',
          `no route ${method} ${url.pathname}; the API lives under /v1`,
        );
      const [, resource, name, sub, subname] = parts;
      if (resource === 'webhooks' && name === 'github' && method === 'POST') {
        route = 'webhook';
        return await this.githubWebhook(req, res);
      }
      if (resource === 'watch' && method === 'GET') {
        route = 'watch';
        this.authorize(req, 'read');
        return await this.watch(req, res, url);
      }
      if (resource === 'activity' && name === undefined && (method === 'GET' || method === 'POST')) {
        route = 'activity';
        this.authorize(req, method === 'POST' ? 'report' : 'read');
        if (method === 'POST')
          return send(res, 202, this.activity.report(await readJson(req, this.opts.maxBodyBytes)));
        return send(
          res,
          200,
          this.activity.snapshot(Date.now(), url.searchParams.get('sandbox') ?? undefined),
        );
      }
      if (resource === 'rules' && method === 'GET') {
        route = 'rules';
        this.authorize(req, 'read');
        return send(res, 200, this.rules(url.searchParams));
      }
      if (resource === 'sandboxes') {
        route = name === undefined ? 'sandboxes' : sub === undefined ? 'sandbox' : `sandbox/${sub}`;
        if (name === undefined && method === 'GET') {
          this.authorize(req, 'read');
          return send(res, 200, {
            revision: this.state.revision,
            sandboxes: this.listSandboxes(url.searchParams),
          });
        }
        if (name !== undefined && sub === undefined) {
          if (method === 'GET') {
            this.authorize(req, 'read');
            const s =
              this.state.sandbox(name) ??
              (url.searchParams.get('deleted') ? this.tombstone(name) : undefined);
            if (!s) throw notFound('sandbox', name);
            return send(res, 200, s);
          }
          if (method === 'PUT') {
            this.authorize(req, 'write');
            const r = await this.putSandbox(name, await readJson(req, this.opts.maxBodyBytes));
            return send(res, r.created ? 201 : 200, {
              ...r.sandbox,
              ...(r.sandboxToken ? { sandboxToken: r.sandboxToken } : {}),
              header: `baggage: branchline=${r.sandbox.key}`,
              revision: r.revision,
            });
          }
          if (method === 'DELETE') {
            this.authorize(req, 'write');
            const r = await this.deleteSandbox(name, 'api', url.searchParams.get('wait') !== 'false');
            if (!r) throw notFound('sandbox', name);
            const failed = Object.entries(r.sandbox.resources)
              .filter(([, x]) => x.status === 'failed')
              .map(([n, x]) => ({ resource: n, error: x.error }));
            return send(res, r.done ? 200 : 202, { deleted: r.sandbox, done: r.done, failed });
          }
        }
        if (name !== undefined && sub === 'heartbeat' && method === 'POST') {
          await this.authorizeSandbox(req, name);
          return send(res, 200, await this.heartbeat(name, await readJson(req, this.opts.maxBodyBytes)));
        }
        if (name !== undefined && sub === 'resources' && subname !== undefined && method === 'GET') {
          const s = await this.authorizeSandbox(req, name);
          const r = s.resources[subname];
          if (!r) throw notFound('resource', subname);
          const secret = await this.store.getSecret(s.id);
          return send(res, 200, { name: subname, ...r, outputs: secret?.outputs?.[subname] ?? null });
        }
      }
      if (resource === 'routegroups') {
        route = name === undefined ? 'routegroups' : 'routegroup';
        if (name === undefined && method === 'GET') {
          this.authorize(req, 'read');
          const deleted = url.searchParams.get('deleted') === 'true';
          const groups = deleted ? [...this.state.groups.values()] : this.state.liveGroups();
          return send(res, 200, {
            revision: this.state.revision,
            groups: groups.map((g) => this.withMembers(g)),
          });
        }
        if (name !== undefined && sub === undefined) {
          if (method === 'GET') {
            this.authorize(req, 'read');
            const g = this.state.group(name);
            if (!g) throw notFound('route group', name);
            return send(res, 200, this.withMembers(g));
          }
          if (method === 'PUT') {
            this.authorize(req, 'write');
            const r = await this.putGroup(name, await readJson(req, this.opts.maxBodyBytes));
            return send(res, r.created ? 201 : 200, {
              ...this.withMembers(r.group),
              header: `baggage: branchline=${r.group.key}`,
            });
          }
          if (method === 'DELETE') {
            this.authorize(req, 'write');
            const g = await this.deleteGroup(name, 'api');
            if (!g) throw notFound('route group', name);
            return send(res, 200, { deleted: g });
          }
        }
      }
      throw new RegistryError(
        404,
        'not_found',
        `no route ${method} ${url.pathname} (see docs/registry.md for the API)`,
      );
    } catch (err) {
      if (err instanceof ClientGoneError) {
        this.log('info', 'client disconnected before its request body was complete', {
          method: req.method,
          url: req.url,
        });
        res.destroy();
        return;
      }
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof RegistryError)
        return send(res, err.status, { error: err.code, message: err.message, ...err.details });
      this.log('error', 'request failed', {
        method: req.method,
        url: req.url,
        err: String((err as Error)?.stack ?? err),
      });
      return send(res, 503, {
        error: 'unavailable',
        message: `the registry could not complete the request: ${(err as Error)?.message ?? err}`,
      });
    }
  }

  private tombstone(name: string): SandboxDoc | undefined {
    let best: SandboxDoc | undefined;
    for (const s of this.state.sandboxes.values())
      if (s.name === name && (!best || (s.deletedAt ?? 0) > (best.deletedAt ?? 0))) best = s;
    return best;
  }

  private withMembers(g: GroupDoc): GroupDoc & { members: string[]; conflicts: unknown[] } {
    const members = this.state
      .liveSandboxes()
      .filter((s) => groupMatches(g, s))
      .sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
    const table = new RouteTable({ sandboxes: members, groups: [g] });
    return { ...g, members: members.map((s) => s.name), conflicts: [...table.conflicts] };
  }

  private listSandboxes(q: URLSearchParams): SandboxDoc[] {
    let list = q.get('deleted') === 'true' ? [...this.state.sandboxes.values()] : this.state.liveSandboxes();
    for (const l of q.getAll('label')) {
      const i = l.indexOf('=');
      const [k, v] = i < 0 ? [l, undefined] : [l.slice(0, i), l.slice(i + 1)];
      list = list.filter((s) =>
        v === undefined ? Object.hasOwn(s.labels, k) : labelValue(s.labels, k) === v,
      );
    }
    return list.sort((a, b) => a.createdAt - b.createdAt || (a.name < b.name ? -1 : 1));
  }

  private rules(q: URLSearchParams): unknown {
    const table = new RouteTable(this.state.tableSpec(this.completeUntil));
    const service = q.get('service');
    const key = q.get('key');
    const sandbox = q.get('sandbox');
    const rules = table
      .rules()
      .filter(
        (r) =>
          (!service || r.service === service) &&
          (!key || r.key === key) &&
          (!sandbox || r.sandbox === sandbox),
      )
      .sort((a, b) => (a.service + a.key < b.service + b.key ? -1 : 1));
    return { revision: this.state.revision, rules, conflicts: table.conflicts };
  }

  private async watch(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const sinceText = url.searchParams.get('since') ?? req.headers['last-event-id'];
    // `view=routing`: the SDKs' view (see routingDoc); anything else gets whole documents.
    const routing = url.searchParams.get('view') === 'routing';
    const since = typeof sinceText === 'string' && /^\d+$/.test(sinceText) ? Number(sinceText) : undefined;
    // A client coming from a replica that is further along: catch up first rather than send it
    // an older snapshot (its completeUntil may already cover changes this replica lacks).
    if (since !== undefined && since > this.state.revision)
      await this.mutex
        .run(async () => {
          for (const c of await this.store.changesSince(this.state.revision)) this.applyCommitted(c);
        })
        .catch(() => undefined);
    // Changes already applied but not yet written would reach this watcher twice (in its
    // snapshot or resume, then in the next flush): write them to the others first.
    this.flush();
    // Close-delimited body: events are written to the socket as is (see SSE_HEADERS).
    res.useChunkedEncodingByDefault = false;
    res.writeHead(200, SSE_HEADERS);
    res.socket?.setNoDelay(true);
    res.socket?.setKeepAlive(true, 10_000);
    let out = 'retry: 1000\n\n';
    const first = this.ring[0]?.change.revision;
    const cur = this.state.revision;
    const canResume =
      since !== undefined && since <= cur && (since === cur || (first !== undefined && first <= since + 1));
    if (canResume) {
      for (const e of this.ring) if (e.change.revision > since!) out += routing ? e.routing : e.text;
    } else {
      if (since !== undefined) this.metrics.watchRestarts++;
      out += sse(
        'snapshot',
        {
          revision: cur,
          sandboxes: routing
            ? [...this.state.sandboxes.values()].map(routingDoc)
            : [...this.state.sandboxes.values()],
          groups: [...this.state.groups.values()],
        },
        cur,
      );
    }
    out += sse('synced', { revision: cur, resumed: canResume });
    if (this.completeUntil !== undefined) out += this.heartbeatText();
    res.write(out);
    const socket = res.socket;
    if (!socket || socket.destroyed) return;
    const w: Watcher = { res, socket, routing };
    this.watchers.add(w);
    const drop = () => this.watchers.delete(w);
    res.once('close', drop);
    req.once('close', drop);
  }

  private authorize(req: IncomingMessage, scope: Scope): void {
    if (!this.auth.enabled) return;
    if (scope === 'read' && !this.readRequiresToken) return;
    const header = req.headers.authorization;
    const who = this.auth.identify(header);
    if (!who)
      throw new RegistryError(
        401,
        'unauthorized',
        header
          ? 'the bearer token is not valid for this registry; check BRANCHLINE_TOKEN'
          : 'this request needs a token: send "Authorization: Bearer <token>" (BRANCHLINE_TOKEN)',
      );
    if (!who.scopes.has(scope))
      throw new RegistryError(
        403,
        'forbidden',
        `token "${who.name}" has scopes [${[...who.scopes].join(', ')}]; this request needs "${scope}"`,
      );
  }

  /** A write token, or the sandbox-scoped token returned when the sandbox was created. */
  private async authorizeSandbox(req: IncomingMessage, name: string): Promise<SandboxDoc> {
    const s = this.state.sandbox(name);
    if (!this.auth.enabled) {
      if (!s) throw notFound('sandbox', name);
      return s;
    }
    const token = /^Bearer\s+(\S+)/i.exec(req.headers.authorization ?? '')?.[1];
    if (token && s) {
      const secret = await this.store.getSecret(s.id);
      if (secret?.tokenHash && tokenMatchesHash(token, secret.tokenHash)) return s;
    }
    this.authorize(req, 'write');
    if (!s) throw notFound('sandbox', name);
    return s;
  }

  private async githubWebhook(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req, Math.max(this.opts.maxBodyBytes, 1024 * 1024));
    const secret = this.opts.githubWebhookSecret;
    if (!secret)
      throw new RegistryError(
        401,
        'unauthorized',
        'the GitHub webhook is disabled: start the registry with a webhook secret (--github-webhook-secret)',
      );
    const sig = req.headers['x-hub-signature-256'];
    if (!verifyGithubSignature(secret, raw, typeof sig === 'string' ? sig : undefined))
      throw new RegistryError(
        401,
        'unauthorized',
        'missing or wrong X-Hub-Signature-256 signature (expected "sha256=" and 64 hex digits: the HMAC-SHA256 of the body with the webhook secret)',
      );
    const type = req.headers['content-type'];
    if (type !== undefined && !isJsonType(type))
      throw new RegistryError(
        415,
        'unsupported_media_type',
        `the webhook body is ${JSON.stringify(type)}: set the webhook's content type to application/json in the repository's webhook settings`,
      );
    const delivery = req.headers['x-github-delivery'];
    if (typeof delivery !== 'string' || !DELIVERY_ID_RE.test(delivery))
      throw new RegistryError(
        400,
        'invalid_request',
        `the X-GitHub-Delivery header is ${delivery === undefined ? 'missing' : `not a delivery id: ${JSON.stringify(String(delivery).slice(0, 140))}`}; GitHub sends one with every delivery, and the registry needs it to refuse replays`,
      );
    let payload: unknown;
    try {
      payload = JSON.parse(raw.toString('utf8'));
    } catch {
      throw new RegistryError(400, 'invalid_json', 'the webhook body is not JSON');
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload))
      throw new RegistryError(
        400,
        'invalid_request',
        `the webhook body must be a JSON object (a GitHub event payload), got ${payload === null ? 'null' : Array.isArray(payload) ? 'an array' : typeof payload}`,
      );
    const p = payload as {
      action?: unknown;
      number?: unknown;
      pull_request?: { number?: unknown; merged?: unknown; closed_at?: unknown } | null;
      repository?: { full_name?: unknown } | null;
    };
    const event = req.headers['x-github-event'];
    if (event !== 'pull_request' || p.action !== 'closed')
      return send(res, 200, { ignored: true, event, action: p.action });
    const number = p.pull_request?.number ?? p.number;
    if (!Number.isSafeInteger(number) || (number as number) <= 0)
      throw new RegistryError(
        400,
        'invalid_request',
        `a closed pull_request event needs pull_request.number, a positive integer; got ${JSON.stringify(number) ?? 'none'}`,
      );
    const pr = String(number);
    const repo = typeof p.repository?.full_name === 'string' ? p.repository.full_name : undefined;
    // A replayed "closed" must not delete a sandbox the pull request got after it was closed
    // (reopened): only sandboxes created before closed_at (and a margin for clock skew) go.
    const closedAt =
      typeof p.pull_request?.closed_at === 'string' ? Date.parse(p.pull_request.closed_at) : NaN;
    const createdBefore = Number.isFinite(closedAt)
      ? closedAt + CLOSED_AT_MARGIN_MS
      : Number.POSITIVE_INFINITY;
    if (!(await this.store.recordDelivery(delivery, DELIVERY_MEMORY)))
      throw new RegistryError(
        409,
        'duplicate_delivery',
        `GitHub delivery ${delivery} was already processed; a repeat is refused (a replayed "closed" event could delete a newer sandbox of pull request ${pr})`,
      );
    const matching = this.state.liveSandboxes().filter((s) => {
      const sRepo = labelValue(s.labels, 'repo');
      return labelValue(s.labels, 'pr') === pr && (sRepo === undefined || sRepo === repo);
    });
    const kept = matching.filter((s) => s.createdAt > createdBefore).map((s) => s.name);
    const deleted: string[] = [];
    try {
      for (const s of matching)
        if (s.createdAt <= createdBefore && (await this.deleteSandbox(s.name, 'webhook', false)))
          deleted.push(s.name);
    } catch (err) {
      // Not processed after all: let GitHub's redelivery (same id) try again.
      await this.store.forgetDelivery(delivery).catch(() => undefined);
      throw err;
    }
    return send(res, 200, {
      deleted,
      kept,
      pr: Number(pr),
      repo,
      merged: p.pull_request?.merged === true,
    });
  }
}

/** Resources still to provision (a crash may have left them `provisioning`). */
function unfinished(s: SandboxDoc): [string, ResourceState][] {
  return Object.entries(s.resources).filter(([, r]) => r.status === 'pending' || r.status === 'provisioning');
}

function overMaximum(field: string, max: number, got: unknown): RegistryError {
  let shown = JSON.stringify(got);
  if (shown.length > 40) shown = `${shown.slice(0, 24)}… (${shown.length} characters)`;
  const message = `at most ${formatDuration(max)}${field === 'expiresAt' ? ' from now' : ''} (${max / 1000} seconds); got ${shown}`;
  return new RegistryError(400, 'invalid_request', `${field}: ${message}`, {
    issues: [{ path: field, message }],
  });
}

function checkTtlOptions(defaultTtlMs: number | null, maxTtlMs: number | null): void {
  if (maxTtlMs === null) return;
  if (!(Number.isFinite(maxTtlMs) && maxTtlMs > 0))
    throw new TypeError(
      `branchline registry: maxTtlMs must be a positive number of milliseconds or null, got ${maxTtlMs}`,
    );
  if (defaultTtlMs === null)
    throw new TypeError(
      `branchline registry: defaultTtlMs null (never expire) is over maxTtlMs (${formatDuration(maxTtlMs)}); set maxTtlMs: null too (--max-ttl none)`,
    );
  if (defaultTtlMs > maxTtlMs)
    throw new TypeError(
      `branchline registry: defaultTtlMs (${formatDuration(defaultTtlMs)}) is over maxTtlMs (${formatDuration(maxTtlMs)})`,
    );
}

/** A comma-separated list from an environment variable. */
function listFromEnv(name: string): string[] {
  return (process.env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function notFound(what: string, name: string): RegistryError {
  return new RegistryError(404, 'not_found', `no ${what} named ${JSON.stringify(name)}`);
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (req.destroyed && !req.complete) {
      reject(new ClientGoneError());
      return;
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      req.resume();
      reject(
        new RegistryError(413, 'body_too_large', `the body is ${declared} bytes; the limit is ${limit}`),
      );
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new RegistryError(413, 'body_too_large', `the body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    // A client that goes away mid-body is no failure of the registry (see ClientGoneError).
    req.once('error', (err) => reject(req.complete ? err : new ClientGoneError()));
    req.once('close', () => {
      if (!req.complete) reject(new ClientGoneError());
    });
  });
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const raw = await readBody(req, limit);
  checkJsonBody(req, raw);
  if (raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new RegistryError(400, 'invalid_json', `the body is not valid JSON: ${(err as Error).message}`);
  }
}

export function createRegistryServer(options: RegistryServerOptions = {}): RegistryServer {
  return new RegistryServer(options);
}
