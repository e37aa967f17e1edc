import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { type BackoffOptions, backoffDelay, type ResolvedBackoff, resolveBackoff } from './backoff.js';
import { logger, renamedOption } from './log.js';
import { isValidSandboxName, isValidServiceName, SANDBOX_NAME_RULE, SERVICE_NAME_RULE } from './rules.js';

/**
 * Self-registration: a sandbox workload tells the registry where it serves, keeps that
 * announcement alive with a lease, and withdraws it when it stops. Every option can come from
 * the environment, so `announceWorkload({ http: 'http://10.0.3.9:8080' })` (or no argument
 * at all, with `BRANCHLINE_ANNOUNCE_HTTP`) is the whole integration. It never throws and never
 * crashes the application: a registry that is away is retried with backoff and logged.
 */
export interface WorkloadAnnouncementOptions {
  /** `BRANCHLINE_SERVICE`: the service this process serves. */
  service?: string;
  /** `BRANCHLINE_SANDBOX`: the sandbox it belongs to. Unset = a baseline process: nothing is announced. */
  sandbox?: string;
  /** `BRANCHLINE_REGISTRY`: registry base URL. */
  registry?: string;
  /** `BRANCHLINE_TOKEN`: the sandbox token (printed once when the sandbox is created), an announce token, or a write token. */
  token?: string;
  /**
   * `BRANCHLINE_TOKEN_FILE`: a file holding the token (a mounted Secret). Read before every
   * heartbeat, so a rotated token is picked up without a restart. Wins over `BRANCHLINE_TOKEN`.
   */
  tokenFile?: string;
  /** `BRANCHLINE_ANNOUNCE_HTTP` (comma-separated): HTTP endpoint(s) of this process, e.g. `http://10.0.3.9:8080`. */
  http?: string | string[];
  /** `BRANCHLINE_ANNOUNCE_GRPC` (comma-separated): gRPC target(s), e.g. `10.0.3.9:50051`. */
  grpc?: string | string[];
  /** How long the registry keeps the endpoint without another heartbeat. Default 15000 ms. */
  leaseMs?: number;
  /** Time between heartbeats. Default a third of the lease. */
  intervalMs?: number;
  /**
   * Retry delays after a failed heartbeat (with jitter). Default
   * `{ initialMs: 250, maxMs: intervalMs, factor: 2 }`.
   */
  backoff?: BackoffOptions;
  /** @deprecated Use `backoff.initialMs`. */
  initialBackoffMs?: number;
  /** Bound of one request (heartbeat or withdrawal). Default 5000 ms, and at most the interval. */
  requestTimeoutMs?: number;
  /**
   * Signals on which the announcement is withdrawn. When nothing else in the process listens to
   * the signal, the process is then ended by it, as it would have been without Branchline.
   * `false` = none (call `stop()` yourself). Default `['SIGTERM', 'SIGINT']`.
   */
  withdrawOnSignals?: NodeJS.Signals[] | false;
  /** Where the options not given in code are read from. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** Where an announcement stands, for health checks and logs. */
export interface WorkloadAnnouncementStatus {
  /**
   * `inactive`: nothing to announce (a baseline process, or a configuration error in `error`);
   * `announcing`: no heartbeat accepted yet; `announced`: the last heartbeat was accepted;
   * `retrying`: the last heartbeat failed (see `error`); `stopped`: withdrawn.
   */
  state: 'inactive' | 'announcing' | 'announced' | 'retrying' | 'stopped';
  sandbox?: string;
  service?: string;
  http: string[];
  grpc: string[];
  /** When the registry last accepted a heartbeat (ms since the epoch). */
  lastAnnouncedAt?: number;
  /** Failed heartbeats since the last accepted one. */
  failures: number;
  /** Why the last heartbeat failed, or why the announcement is inactive. */
  error?: string;
}

export interface WorkloadAnnouncement {
  readonly status: WorkloadAnnouncementStatus;
  /**
   * Resolves `true` once the registry has accepted the announcement, `false` if that did not
   * happen within `timeoutMs` (default 5000) or there is nothing to announce. Never rejects.
   */
  announced(timeoutMs?: number): Promise<boolean>;
  /** Withdraws the endpoints (bounded by the request timeout) and stops heartbeating. Idempotent; never rejects. */
  stop(): Promise<void>;
}

const ENV = {
  service: 'BRANCHLINE_SERVICE',
  sandbox: 'BRANCHLINE_SANDBOX',
  registry: 'BRANCHLINE_REGISTRY',
  token: 'BRANCHLINE_TOKEN',
  tokenFile: 'BRANCHLINE_TOKEN_FILE',
  http: 'BRANCHLINE_ANNOUNCE_HTTP',
  grpc: 'BRANCHLINE_ANNOUNCE_GRPC',
} as const;

/** A failure that keeps recurring for the same reason is logged again this often (always at debug). */
const REPEAT_LOG_MS = 30_000;

interface Settings {
  sandbox: string;
  service: string;
  heartbeatUrl: URL;
  token?: string;
  tokenFile?: string;
  http: string[];
  grpc: string[];
  leaseMs: number;
  intervalMs: number;
  backoff: ResolvedBackoff;
  requestTimeoutMs: number;
  signals: NodeJS.Signals[];
}

/**
 * Announces this sandbox workload's endpoint(s) to the registry and keeps them announced until
 * `stop()` or a termination signal; see `WorkloadAnnouncementOptions`. In a baseline process
 * (no `BRANCHLINE_SANDBOX`) it does nothing, so the same code runs in both.
 *
 * ```js
 * const announcement = announceWorkload({ http: `http://${process.env.POD_IP}:8080` });
 * await announcement.announced(); // optional: wait until it routes
 * ```
 */
export function announceWorkload(options: WorkloadAnnouncementOptions = {}): WorkloadAnnouncement {
  const resolved = resolveSettings(options);
  if ('inactive' in resolved) {
    if (resolved.error) logger().error(resolved.error, { code: 'announce-config' });
    else logger().debug(`branchline: ${resolved.inactive}; nothing to announce`);
    return new InactiveAnnouncement(resolved.error ?? resolved.inactive, resolved.service);
  }
  return new SelfRegistration(resolved);
}

type Resolved = Settings | { inactive: string; error?: string; service?: string };

function pick(code: string | undefined, env: NodeJS.ProcessEnv, name: string): string | undefined {
  if (code !== undefined) return code.trim() === '' ? undefined : code.trim();
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function pickList(code: string | string[] | undefined, env: NodeJS.ProcessEnv, name: string): string[] {
  if (code !== undefined) return (Array.isArray(code) ? code : [code]).map((s) => s.trim()).filter(Boolean);
  return (env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function resolveSettings(o: WorkloadAnnouncementOptions): Resolved {
  const env = o.env ?? process.env;
  const where = (field: keyof typeof ENV) => (o[field] !== undefined ? `option ${field}` : ENV[field]);
  const sandbox = pick(o.sandbox, env, ENV.sandbox);
  const service = pick(o.service, env, ENV.service);
  if (sandbox === undefined)
    return { inactive: 'not a sandbox workload (BRANCHLINE_SANDBOX is unset)', service };
  const bad = (error: string) => ({
    inactive: 'misconfigured',
    error: `branchline announce: ${error}`,
    service,
  });
  if (!isValidSandboxName(sandbox))
    return bad(
      `${where('sandbox')}=${JSON.stringify(sandbox)} is not a sandbox name (use ${SANDBOX_NAME_RULE}); nothing is announced`,
    );
  if (service === undefined)
    return bad(`sandbox ${sandbox}: set BRANCHLINE_SERVICE (or option service) to announce this workload`);
  if (!isValidServiceName(service))
    return bad(
      `${where('service')}=${JSON.stringify(service)} is not a service name (use ${SERVICE_NAME_RULE}); nothing is announced`,
    );
  const registry = pick(o.registry, env, ENV.registry);
  if (registry === undefined)
    return bad(
      `sandbox ${sandbox}: BRANCHLINE_REGISTRY is unset, so service ${service} cannot be announced; set it to the registry URL, e.g. http://branchline-registry.branchline:7070`,
    );
  let base: URL;
  try {
    base = new URL(registry.endsWith('/') ? registry : `${registry}/`);
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    return bad(
      `${where('registry')}=${JSON.stringify(registry)} must be an http(s) URL such as http://branchline-registry:7070`,
    );
  }
  const http = pickList(o.http, env, ENV.http);
  const grpc = pickList(o.grpc, env, ENV.grpc);
  if (http.length === 0 && grpc.length === 0)
    return bad(
      `sandbox ${sandbox}: no endpoint to announce for service ${service}; pass { http: 'http://<pod-ip>:<port>' } or { grpc: '<pod-ip>:<port>' }, or set BRANCHLINE_ANNOUNCE_HTTP / BRANCHLINE_ANNOUNCE_GRPC`,
    );
  for (const h of http) {
    let u: URL | undefined;
    try {
      u = new URL(h);
    } catch {
      u = undefined;
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:'))
      return bad(
        `${where('http')} has ${JSON.stringify(h)}, which is not an absolute http(s) URL such as http://10.0.3.9:8080`,
      );
  }
  for (const g of grpc)
    if (/\s/.test(g))
      return bad(
        `${where('grpc')} has ${JSON.stringify(g)}, which is not a gRPC target such as 10.0.3.9:50051`,
      );
  const leaseMs = o.leaseMs ?? 15_000;
  const intervalMs = o.intervalMs ?? Math.max(100, Math.floor(leaseMs / 3));
  for (const [name, v] of [
    ['leaseMs', leaseMs],
    ['intervalMs', intervalMs],
  ] as const)
    if (!Number.isFinite(v) || v <= 0)
      return bad(`option ${name}=${JSON.stringify(v)} must be a positive number`);
  if (intervalMs >= leaseMs)
    return bad(
      `option intervalMs=${intervalMs} must be shorter than leaseMs=${leaseMs} (a third of it is usual), or the announcement lapses between heartbeats`,
    );
  let backoff: ResolvedBackoff;
  try {
    const initialMs = renamedOption(
      'announceWorkload',
      o.backoff?.initialMs,
      o.initialBackoffMs,
      'initialBackoffMs',
      'backoff.initialMs',
    );
    backoff = resolveBackoff({ ...o.backoff, initialMs }, 'backoff', {
      initialMs: 250,
      maxMs: intervalMs,
      factor: 2,
    });
  } catch (err) {
    return bad(`${(err as Error).message.replace(/^branchline: /, '')}; nothing is announced`);
  }
  const signals = o.withdrawOnSignals === false ? [] : (o.withdrawOnSignals ?? ['SIGTERM', 'SIGINT']);
  return {
    sandbox,
    service,
    heartbeatUrl: new URL(`v1/sandboxes/${encodeURIComponent(sandbox)}/heartbeat`, base),
    token: pick(o.token, env, ENV.token),
    tokenFile: pick(o.tokenFile, env, ENV.tokenFile),
    http,
    grpc,
    leaseMs,
    intervalMs,
    backoff,
    requestTimeoutMs: Math.min(o.requestTimeoutMs ?? 5000, intervalMs),
    signals,
  };
}

class InactiveAnnouncement implements WorkloadAnnouncement {
  readonly status: WorkloadAnnouncementStatus;
  constructor(reason: string, service: string | undefined) {
    this.status = { state: 'inactive', service, http: [], grpc: [], failures: 0, error: reason };
  }
  announced(): Promise<boolean> {
    return Promise.resolve(false);
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
}

/** A failed heartbeat: what to log and whether retrying can help without a change elsewhere. */
class AnnounceError extends Error {
  constructor(
    message: string,
    readonly httpStatus?: number,
  ) {
    super(message);
  }
}

class SelfRegistration implements WorkloadAnnouncement {
  readonly status: WorkloadAnnouncementStatus;
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<unknown> | undefined;
  private stopping: Promise<void> | undefined;
  private lastWarnAt = 0;
  private lastLogged: string | undefined;
  private readonly waiters = new Set<(ok: boolean) => void>();
  private sent = false;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    void this.stop().then(() => {
      // Nobody else handles it: end the process by the signal, as Node would have without us.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  };

  constructor(private readonly s: Settings) {
    this.status = {
      state: 'announcing',
      sandbox: s.sandbox,
      service: s.service,
      http: s.http,
      grpc: s.grpc,
      failures: 0,
    };
    for (const sig of s.signals) process.on(sig, this.onSignal);
    logger().info('branchline: announcing this workload to the registry', this.fields());
    this.beat();
  }

  announced(timeoutMs = 5000): Promise<boolean> {
    if (this.status.state === 'announced') return Promise.resolve(true);
    if (this.status.state === 'stopped') return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(done);
    });
  }

  stop(): Promise<void> {
    this.stopping ??= this.withdraw();
    return this.stopping;
  }

  private fields(): Record<string, unknown> {
    return {
      sandbox: this.s.sandbox,
      service: this.s.service,
      registry: this.s.heartbeatUrl.origin,
      ...(this.s.http.length ? { http: this.s.http } : {}),
      ...(this.s.grpc.length ? { grpc: this.s.grpc } : {}),
    };
  }

  private async withdraw(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.status.state = 'stopped';
    for (const w of [...this.waiters]) w(false);
    // From here a second signal ends the process at once (Node's default), as users expect.
    for (const s of this.s.signals) process.off(s, this.onSignal);
    // A heartbeat still in flight could land after the withdrawal and announce again.
    await this.inFlight?.catch(() => undefined);
    if (!this.sent) return;
    try {
      await this.send(false, true);
      logger().info('branchline: withdrew this workload from the registry', this.fields());
    } catch (err) {
      logger().warn(
        `branchline: could not withdraw this workload (${(err as Error).message}); the registry drops it when its lease of ${this.s.leaseMs} ms runs out`,
        this.fields(),
      );
    }
  }

  private beat(): void {
    if (this.status.state === 'stopped') return;
    this.sent = true;
    const attempt = this.send(true, false).then(
      () => this.succeeded(),
      (err: AnnounceError) => this.failed(err),
    );
    this.inFlight = attempt;
  }

  private schedule(ms: number): void {
    if (this.status.state === 'stopped') return;
    this.timer = setTimeout(() => this.beat(), ms);
    this.timer.unref();
  }

  private succeeded(): void {
    if (this.status.state === 'stopped') return;
    const failures = this.status.failures;
    const first = this.status.lastAnnouncedAt === undefined;
    this.status.state = 'announced';
    this.status.failures = 0;
    this.status.error = undefined;
    this.status.lastAnnouncedAt = Date.now();
    if (first)
      logger().info(
        `branchline: the registry routes to this workload now${failures ? ` (after ${failures} failed attempts)` : ''}`,
        this.fields(),
      );
    else if (failures > 0)
      logger().info(`branchline: announced again after ${failures} failed heartbeat(s)`, this.fields());
    for (const w of [...this.waiters]) w(true);
    this.schedule(this.s.intervalMs);
  }

  private failed(err: AnnounceError): void {
    if (this.status.state === 'stopped') return;
    this.status.state = 'retrying';
    this.status.failures++;
    this.status.error = err.message;
    const n = this.status.failures;
    const delay = Math.round(backoffDelay(this.s.backoff, n - 1));
    const now = Date.now();
    const fields = {
      ...this.fields(),
      failures: n,
      retryInMs: delay,
      ...(err.httpStatus ? { status: err.httpStatus } : {}),
    };
    // Logged when it starts, when the reason changes, and every 30 s while it lasts.
    if (n === 1 || err.message !== this.lastLogged || now - this.lastWarnAt >= REPEAT_LOG_MS) {
      this.lastWarnAt = now;
      this.lastLogged = err.message;
      const still = n === 1 ? '' : ` (still, after ${n} attempts)`;
      const log = err.httpStatus && err.httpStatus < 500 ? logger().error : logger().warn;
      log(`branchline: could not announce this workload${still}: ${err.message}; retrying`, fields);
    } else logger().debug(`branchline: heartbeat failed: ${err.message}`, fields);
    this.schedule(delay);
  }

  private token(): string | undefined {
    if (this.s.tokenFile === undefined) return this.s.token;
    let text: string;
    try {
      text = readFileSync(this.s.tokenFile, 'utf8');
    } catch (err) {
      throw new AnnounceError(
        `cannot read the token file BRANCHLINE_TOKEN_FILE=${JSON.stringify(this.s.tokenFile)} (${(err as NodeJS.ErrnoException).code ?? err}); mount the token there or set BRANCHLINE_TOKEN`,
      );
    }
    const token = text.trim();
    if (!token)
      throw new AnnounceError(
        `the token file ${JSON.stringify(this.s.tokenFile)} is empty; put the sandbox token (or a write token) in it`,
      );
    return token;
  }

  /** One heartbeat (`ready`) or withdrawal; rejects with an AnnounceError that says what to do. */
  private send(ready: boolean, keepAlive: boolean): Promise<void> {
    let token: string | undefined;
    try {
      token = this.token();
    } catch (err) {
      return Promise.reject(err);
    }
    const body = JSON.stringify({
      service: this.s.service,
      ...(this.s.http.length ? { http: this.s.http } : {}),
      ...(this.s.grpc.length ? { grpc: this.s.grpc } : {}),
      ready,
      ttl: `${this.s.leaseMs}ms`,
    });
    const url = this.s.heartbeatUrl;
    const headers: Record<string, string | number> = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    };
    if (token) headers.authorization = `Bearer ${token}`;
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<void>((resolve, reject) => {
      const req = request(url, {
        method: 'POST',
        headers,
        agent: false,
        timeout: this.s.requestTimeoutMs,
      });
      // Heartbeats never keep the process alive; a withdrawal does, until it is answered.
      if (!keepAlive) req.on('socket', (sock) => sock.unref());
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.s.requestTimeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException) =>
        reject(
          new AnnounceError(
            `cannot reach the registry at ${url.origin} (${err.code ?? err.message}); check BRANCHLINE_REGISTRY and that the registry is running`,
          ),
        ),
      );
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (text.length < 4096) text += d;
        });
        res.on('error', (err) =>
          reject(new AnnounceError(`the registry's answer broke off (${err.message})`)),
        );
        res.on('end', () => {
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300) return resolve();
          reject(new AnnounceError(explainRefusal(code, text, this.s), code));
        });
      });
      req.end(body);
    });
  }
}

/** The registry's refusal as an actionable sentence. */
function explainRefusal(code: number, body: string, s: Settings): string {
  let message = body.trim().slice(0, 300);
  try {
    const j = JSON.parse(body) as { message?: unknown };
    if (typeof j.message === 'string') message = j.message;
  } catch {
    // not JSON: keep the text
  }
  const said = message ? `: ${message}` : '';
  const tokenFrom = s.tokenFile ? `the token in ${s.tokenFile}` : s.token ? 'BRANCHLINE_TOKEN' : 'no token';
  if (code === 401 || code === 403)
    return `the registry refused ${tokenFrom} (${code}${said}); give the sandbox token printed by "branchline sandbox create ${s.sandbox}" (or a token with the announce or write scope) in BRANCHLINE_TOKEN or BRANCHLINE_TOKEN_FILE`;
  if (code === 404)
    return `the registry has no sandbox ${s.sandbox} (404); create it first (branchline sandbox create ${s.sandbox}) — this workload keeps trying`;
  if (code === 400 || code === 413)
    return `the registry rejected the announcement (${code}${said}); fix the endpoint option or BRANCHLINE_ANNOUNCE_HTTP / BRANCHLINE_ANNOUNCE_GRPC`;
  return `the registry answered ${code}${said}`;
}
