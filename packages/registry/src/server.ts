// The registry: one object composing the store, the in-memory state, the watch fan-out
// (fanout.ts), expiry (ttl.ts), resource hooks (provisioning.ts), the GitHub webhook
// (webhooks.ts) and the HTTP API (router.ts). Writes go through `mutate`, which the store
// serialises across replicas; every committed change is applied here and sent to the watchers.

import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ResourceHook, ResourceState, SandboxDeletedListener } from '@branchline/core/transport';
import { ActivityLog } from './activity.js';
import { hashToken, readTokensFile, TokenAuth, type TokenEntry } from './auth.js';
import { parseDuration } from './duration.js';
import { EndpointAllowList } from './endpoint-allow-list.js';
import { WatchFanout } from './fanout.js';
import { parseAllowedOrigins } from './http-guards.js';
import { defaultLog, listFromEnv, notFound } from './http-io.js';
import { RegistryMetrics } from './metrics.js';
import { Mutex } from './mutex.js';
import { PostgresStore } from './postgres-store.js';
import { Provisioner } from './provisioning.js';
import { createRouter } from './router.js';
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
  labelValue,
  newId,
  RegistryError,
  RegistryState,
  sandboxStatus,
  tombstoneSandbox,
  unmatchedGroups,
} from './state.js';
import type { Store } from './store.js';
import { TtlPolicy } from './ttl.js';
import type { Change, GroupDoc, PendingChange, SandboxDoc } from './types.js';
import { type GithubSandboxTemplate, SandboxTemplate } from './webhook-template.js';
import { githubWebhook } from './webhooks.js';

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
  /**
   * What the GitHub webhook creates when a pull request is opened or reopened, and refreshes on a
   * push to it (`synchronize`): a JSON or YAML file's path, or the object. A sandbox create body
   * (`key`, `labels`, `overrides`, `resources`, `ttl`) plus `name`, whose string values may use
   * `${PR}`, `${REPO}`, `${OWNER}`, `${BRANCH}`, `${BRANCH_SLUG}` and `${SHA}`. Without it those
   * actions are ignored. See docs/registry.md#github-webhook.
   */
  githubSandboxTemplate?: string | GithubSandboxTemplate;
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
  private readonly hooks = new Map<string, ResourceHook>();
  private readonly deletedListeners: SandboxDeletedListener[] = [];
  private readonly fanout: WatchFanout;
  private readonly ttl: TtlPolicy;
  private readonly provisioner: Provisioner;
  private completeUntil: number | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly http: Server;
  private readonly route: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
  private opened = false;
  private closing = false;
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
  > & { githubWebhookSecret?: string };
  private readonly allowEndpoints: EndpointAllowList;
  private readonly sandboxTemplate: SandboxTemplate | undefined;
  readonly log: NonNullable<RegistryServerOptions['log']>;

  constructor(options: RegistryServerOptions = {}) {
    this.store = storeFromOption(options.store);
    const tokens = [
      ...(options.tokens ?? []),
      ...(options.tokensFile ? readTokensFile(options.tokensFile) : []),
    ];
    this.auth = new TokenAuth(tokens);
    for (const h of options.resourceHooks ?? []) this.addResourceHook(h);
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
      githubWebhookSecret: options.githubWebhookSecret,
    };
    this.ttl = new TtlPolicy(options.defaultTtlMs, options.maxTtlMs);
    this.sandboxTemplate =
      options.githubSandboxTemplate === undefined
        ? undefined
        : new SandboxTemplate(options.githubSandboxTemplate);
    this.allowEndpoints = new EndpointAllowList(
      options.allowEndpoints ?? listFromEnv('BRANCHLINE_REGISTRY_ALLOW_ENDPOINTS'),
    );
    const allowOrigins = parseAllowedOrigins(
      options.allowOrigins ?? listFromEnv('BRANCHLINE_REGISTRY_ALLOW_ORIGINS'),
    );
    this.log = options.log ?? defaultLog;
    this.fanout = new WatchFanout(this.metrics, this.opts);
    this.provisioner = new Provisioner({
      state: this.state,
      store: this.store,
      hooks: this.hooks,
      metrics: this.metrics,
      log: this.log,
      provisionClaimMs: this.opts.provisionClaimMs,
      shared: !(this.store instanceof SqliteStore),
      patchResource: (id, resource, patch) => this.patchResource(id, resource, patch),
      catchUp: () => this.catchUp(),
    });
    this.route = createRouter({
      state: this.state,
      store: this.store,
      metrics: this.metrics,
      activity: this.activity,
      auth: this.auth,
      readRequiresToken: options.readRequiresToken ?? this.auth.enabled,
      allowOrigins,
      maxBodyBytes: this.opts.maxBodyBytes,
      log: this.log,
      opened: () => this.opened,
      completeUntil: () => this.completeUntil,
      watcherCount: () => this.fanout.size,
      watch: (req, res, url) => this.watch(req, res, url),
      githubWebhook: (req, res) =>
        githubWebhook(req, res, {
          secret: this.opts.githubWebhookSecret,
          maxBodyBytes: this.opts.maxBodyBytes,
          store: this.store,
          state: this.state,
          deleteSandbox: async (name) => (await this.deleteSandbox(name, 'webhook', false)) !== undefined,
          template: this.sandboxTemplate,
          log: this.log,
          createSandboxIfAbsent: (name, body) => this.putSandbox(name, body, { ifAbsent: true }),
          refreshSandbox: (name, match, labels, ttl) => this.refreshSandbox(name, match, labels, ttl),
        }),
      putSandbox: (name, input) => this.putSandbox(name, input),
      deleteSandbox: (name, reason, wait) => this.deleteSandbox(name, reason, wait),
      putGroup: (name, input) => this.putGroup(name, input),
      deleteGroup: (name, reason) => this.deleteGroup(name, reason),
      heartbeat: (name, input) => this.heartbeat(name, input),
    });
    this.http = createServer((req, res) => this.route(req, res));
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
    return this.fanout.size;
  }

  /** The request handler, to mount the registry in another node:http server. */
  get handler(): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => this.route(req, res);
  }

  /** Opens the store (without serving HTTP); `listen` calls it. */
  async open(): Promise<void> {
    if (this.opened) return;
    this.opened = true;
    const loaded = await this.store.open(this.opts.resumeWindow);
    this.state.load(loaded.revision, loaded.sandboxes, loaded.groups);
    this.fanout.load(loaded.recent);
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
    every(this.opts.sweepIntervalMs, () => this.provisioner.sweep());
    every(60_000, () => this.store.pruneChanges(this.opts.resumeWindow));
    await this.tick();
    // Resources a crashed registry left half-provisioned are picked up again. Replicas sharing
    // a store claim a sandbox first (see Provisioner.startProvisioning), so one of them runs its
    // hooks; they look again now and then for provisioning whose replica died (its claim ran out).
    this.provisioner.resume();
    if (!(this.store instanceof SqliteStore))
      every(this.opts.retryIntervalMs, async () => this.provisioner.resume());
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
    this.fanout.endAll();
    await this.provisioner.stopAll();
    if (this.http.listening) {
      const closed = once(this.http, 'close');
      this.http.close();
      this.http.closeAllConnections();
      await closed;
    }
    await this.mutex.run(() => this.store.close());
  }

  // ---- changes ---------------------------------------------------------------------------

  /** Applies a committed change to the in-memory state and queues it for every watcher. */
  private applyCommitted(c: Change): void {
    if (!this.state.apply(c)) return;
    this.metrics.events++;
    this.fanout.push(c);
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
      sent = this.fanout.imminentWrite;
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

  /** Applies what other replicas committed since this one's revision. */
  private catchUp(): Promise<void> {
    return this.mutex.run(async () => {
      for (const c of await this.store.changesSince(this.state.revision)) this.applyCommitted(c);
    });
  }

  /** Heartbeat: learn how far every write has committed, catch up to it, tell the watchers. */
  private tick(): Promise<void> {
    return this.mutex.run(async () => {
      const h = await this.store.horizon();
      if (h.revision > this.state.revision)
        for (const c of await this.store.changesSince(this.state.revision)) this.applyCommitted(c);
      if (this.state.revision < h.revision) return;
      this.completeUntil = h.completeUntil;
      this.fanout.heartbeat(this.state.revision, this.completeUntil);
    });
  }

  /** `GET /v1/watch` (the router has checked the token). */
  private async watch(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const sinceText = url.searchParams.get('since') ?? req.headers['last-event-id'];
    // `view=routing`: the SDKs' view (see routingDoc); anything else gets whole documents.
    const routing = url.searchParams.get('view') === 'routing';
    const since = typeof sinceText === 'string' && /^\d+$/.test(sinceText) ? Number(sinceText) : undefined;
    // A client coming from a replica that is further along: catch up first rather than send it
    // an older snapshot (its completeUntil may already cover changes this replica lacks).
    if (since !== undefined && since > this.state.revision) await this.catchUp().catch(() => undefined);
    this.fanout.attach(
      req,
      res,
      { since, routing },
      {
        revision: this.state.revision,
        sandboxes: this.state.sandboxes.values(),
        groups: this.state.groups.values(),
        completeUntil: this.completeUntil,
      },
    );
  }

  // ---- lifecycle -------------------------------------------------------------------------

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

  /** Creates or replaces a sandbox; with `ifAbsent`, a live sandbox of that name is left as it is. */
  async putSandbox(
    name: string,
    input: unknown,
    options: { ifAbsent?: boolean } = {},
  ): Promise<{ sandbox: SandboxDoc; created: boolean; revision: number; sandboxToken?: string }> {
    checkName(name, 'sandbox');
    const body: SandboxBody = parseBody(sandboxBody, input);
    this.ttl.check(body);
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
      if (old && options.ifAbsent) return { changes: [], result: { sandbox: old, created: false } };
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
        expiresAt: this.ttl.expiry(body, time),
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
    this.provisioner.startProvisioning(name);
    return { ...result, revision, sandboxToken };
  }

  /**
   * The GitHub webhook's refresh of a pull request's sandbox: new labels merged in and a new
   * expiry (`ttl`, or the default TTL). Only a live sandbox labelled with that pull request (and
   * repository, when it has a `repo` label) is touched; undefined otherwise.
   */
  async refreshSandbox(
    name: string,
    match: { pr: string; repo: string },
    labels: Record<string, string>,
    ttl: string | number | undefined,
  ): Promise<SandboxDoc | undefined> {
    if (ttl !== undefined) this.ttl.check({ ttl });
    return this.mutate((time) => {
      const s = this.state.sandbox(name);
      const repo = s && labelValue(s.labels, 'repo');
      if (!s || labelValue(s.labels, 'pr') !== match.pr || (repo !== undefined && repo !== match.repo))
        return { changes: [], result: undefined };
      const doc: SandboxDoc = {
        ...s,
        labels: { ...s.labels, ...labels },
        expiresAt: this.ttl.expiry({ ttl }, time),
        updatedAt: time,
      };
      const changes: PendingChange[] = [{ type: 'replace', kind: 'sandbox', id: s.id, name, object: doc }];
      changes.push(...unmatchedGroups(this.state, [doc], time));
      return { changes, result: doc };
    });
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
    this.provisioner.abortProvisioning(tomb.id);
    for (const l of this.deletedListeners) {
      try {
        await l({ name: tomb.name, key: tomb.key, labels: tomb.labels, deletedAt: tomb.deletedAt! }, reason);
      } catch (err) {
        this.log('error', 'an onSandboxDeleted listener failed', { sandbox: name, err: String(err) });
      }
    }
    const job = this.provisioner.startDeprovisioning(tomb.id);
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
    this.ttl.check(body);
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
        expiresAt: this.ttl.expiry(body, time),
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
    if (body.ttl !== undefined) this.ttl.check({ ttl: body.ttl });
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
      else if (s.status === 'deleting' && this.provisioner.retryDue(s.id, now, this.opts.retryIntervalMs))
        this.provisioner.startDeprovisioning(s.id);
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
}

export function createRegistryServer(options: RegistryServerOptions = {}): RegistryServer {
  return new RegistryServer(options);
}
