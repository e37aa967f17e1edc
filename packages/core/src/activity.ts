import { type ClientRequest, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import { logger, renamedOption, warnRateLimited } from './log.js';
import { counters } from './metrics.js';

/**
 * What happened to traffic that belongs to a sandbox:
 * - `forwarded`: a baseline instance forwarded an incoming request to the sandbox;
 * - `routed`: an outgoing call (or published message) was sent to the sandbox's endpoint;
 * - `consumed`: the sandbox's consumer processed a message it owns.
 */
export type ActivityKind = 'forwarded' | 'consumed' | 'routed';

/** One counter of a report: `count` events of `kind` for `service` in `sandbox`, up to `at`. */
export interface ActivityEntry {
  sandbox: string;
  service: string;
  kind: ActivityKind;
  count: number;
  /** When the batch was taken (ms since the epoch, the reporting process's clock). */
  at: number;
}

export interface ActivityReporterOptions {
  /** Registry base URL. Default `BRANCHLINE_REGISTRY`; without one, reporting is off. */
  registry?: string;
  /** Bearer token with the report scope (or write, which implies it). Default `BRANCHLINE_TOKEN`. */
  token?: string;
  /** How often counts are sent. Default 5000 ms. */
  intervalMs?: number;
  /** Distinct (sandbox, service) pairs kept between two sends; more are dropped and counted. Default 1000. */
  maxPairs?: number;
  /** How long one report may take before it is abandoned. Default 5000 ms. */
  requestTimeoutMs?: number;
  /** @deprecated Use `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** What the reporter did since it was last configured (for health checks and tests). */
export interface ActivityReporterStats {
  /** A registry is configured and counts are being sent. */
  active: boolean;
  /** Counts sent and accepted by the registry. */
  sent: number;
  /** Counts dropped: the registry was unreachable or refused them, or too many pairs. */
  dropped: number;
  /** Reports that failed. */
  failures: number;
  /** Why the last report failed, if it did. */
  lastError?: string;
}

interface Counts {
  forwarded: number;
  consumed: number;
  routed: number;
}

const KINDS: readonly ActivityKind[] = ['forwarded', 'consumed', 'routed'];
const MAX_ENTRIES_PER_POST = 500;

let mode: 'unknown' | 'on' | 'off' = 'unknown';
let configured: ActivityReporterOptions | false | undefined;
let target: { url: URL; token?: string; intervalMs: number; maxPairs: number; timeoutMs: number } | undefined;
let pending = new Map<string, Map<string, Counts>>();
let pairs = 0;
let timer: NodeJS.Timeout | undefined;
let inflight: Promise<void> | undefined;
const stats: ActivityReporterStats = { active: false, sent: 0, dropped: 0, failures: 0 };

/**
 * Counts one routing event for the dashboard. Costs two Map lookups and an increment; does
 * nothing when no registry is configured, when `sandbox` or `service` is undefined (baseline
 * traffic is not reported), or after `configureActivityReporter(false)`. Never throws.
 */
export function recordActivity(
  sandbox: string | undefined,
  service: string | undefined,
  kind: ActivityKind,
  count = 1,
): void {
  if (mode === 'off' || sandbox === undefined || service === undefined) return;
  if (mode === 'unknown' && !start()) return;
  if (kind !== 'forwarded' && kind !== 'consumed' && kind !== 'routed') return;
  let bySvc = pending.get(sandbox);
  let c = bySvc?.get(service);
  if (c === undefined) {
    if (pairs >= target!.maxPairs) {
      stats.dropped += count;
      return;
    }
    if (bySvc === undefined) {
      bySvc = new Map();
      pending.set(sandbox, bySvc);
    }
    c = { forwarded: 0, consumed: 0, routed: 0 };
    bySvc.set(service, c);
    pairs++;
  }
  c[kind] += count;
}

/**
 * Configures the reporter in code (code wins over `BRANCHLINE_REGISTRY`/`BRANCHLINE_TOKEN`);
 * `false` turns it off. Counts not sent yet are dropped. Validates now: a bad option throws a
 * TypeError naming it.
 */
export function configureActivityReporter(options: ActivityReporterOptions | false | undefined): void {
  if (options) {
    if (options.registry !== undefined) parseRegistry(options.registry, 'option registry', true);
    for (const k of ['intervalMs', 'maxPairs', 'requestTimeoutMs', 'timeoutMs'] as const) {
      const v = options[k];
      if (v !== undefined && !(Number.isFinite(v) && v > 0))
        throw new TypeError(`branchline: activity reporter option ${k}=${v} must be a positive number`);
    }
  }
  stop();
  configured = options;
}

/** Sends what was counted so far, now. Resolves when sent or dropped; never rejects. */
export async function flushActivity(): Promise<void> {
  while (inflight) await inflight;
  await flush();
}

export function activityReporterStats(): Readonly<ActivityReporterStats> {
  return { ...stats };
}

function stop(): void {
  if (timer) clearInterval(timer);
  timer = undefined;
  pending = new Map();
  pairs = 0;
  target = undefined;
  mode = 'unknown';
  stats.active = false;
  stats.sent = 0;
  stats.dropped = 0;
  stats.failures = 0;
  stats.lastError = undefined;
}

function parseRegistry(value: string, where: string, strict: boolean): URL | undefined {
  try {
    const u = new URL(value.endsWith('/') ? value : `${value}/`);
    if (u.protocol === 'http:' || u.protocol === 'https:') return u;
  } catch {
    // reported below
  }
  const msg = `branchline: ${where}=${JSON.stringify(value)} must be an http(s) URL such as http://branchline-registry:7070; activity reporting is off`;
  if (strict) throw new TypeError(msg);
  warnRateLimited('activity-config', msg);
  return undefined;
}

/** Decides once whether reporting is on; starts the timer when it is. */
function start(): boolean {
  const o = configured === false ? undefined : (configured ?? {});
  const env = process.env;
  const registry = o?.registry ?? (env.BRANCHLINE_REGISTRY?.trim() || undefined);
  const url =
    o && registry
      ? parseRegistry(registry, o.registry ? 'registry' : 'BRANCHLINE_REGISTRY', false)
      : undefined;
  if (!o || !url) {
    mode = 'off';
    return false;
  }
  target = {
    url: new URL('v1/activity', url),
    token: o.token ?? (env.BRANCHLINE_TOKEN?.trim() || undefined),
    intervalMs: o.intervalMs ?? 5000,
    maxPairs: o.maxPairs ?? 1000,
    timeoutMs:
      renamedOption('activity reporter', o.requestTimeoutMs, o.timeoutMs, 'timeoutMs', 'requestTimeoutMs') ??
      5000,
  };
  // The timer is created in the root context so that reports never carry the routing key of
  // the request that happened to count first.
  timer = context.with(ROOT_CONTEXT, () =>
    setInterval(() => {
      if (!inflight) void flush();
    }, target!.intervalMs),
  );
  timer.unref();
  mode = 'on';
  stats.active = true;
  return true;
}

function flush(): Promise<void> {
  if (mode !== 'on' || pairs === 0 || !target) return Promise.resolve();
  const batch = pending;
  pending = new Map();
  pairs = 0;
  const at = Date.now();
  const entries: ActivityEntry[] = [];
  for (const [sandbox, bySvc] of batch)
    for (const [service, c] of bySvc)
      for (const kind of KINDS) if (c[kind] > 0) entries.push({ sandbox, service, kind, count: c[kind], at });
  const t = target;
  const run = async () => {
    for (let i = 0; i < entries.length; i += MAX_ENTRIES_PER_POST)
      await context.with(ROOT_CONTEXT, () => post(t, entries.slice(i, i + MAX_ENTRIES_PER_POST)));
  };
  const p = run()
    .catch(() => undefined)
    .finally(() => {
      if (inflight === p) inflight = undefined;
    });
  inflight = p;
  return p;
}

/** `code` groups failures for rate limiting: one warning a minute per kind of failure. */
function failed(entries: ActivityEntry[], reason: string, code: string): void {
  let n = 0;
  for (const e of entries) n += e.count;
  stats.dropped += n;
  stats.failures++;
  stats.lastError = reason;
  warnRateLimited(
    `activity-report-${code}`,
    `branchline: ${reason}; dropped ${n} activity counts (the dashboard misses them, routing is not affected)`,
    undefined,
    60_000,
  );
}

/** One POST; resolves in every case. */
function post(t: NonNullable<typeof target>, entries: ActivityEntry[]): Promise<void> {
  return new Promise<void>((resolve) => {
    let settled = false;
    const done = (error?: string, code = 'network') => {
      if (settled) return;
      settled = true;
      if (error === undefined) {
        for (const e of entries) stats.sent += e.count;
      } else failed(entries, error, code);
      resolve();
    };
    let req: ClientRequest;
    try {
      const body = JSON.stringify({ entries });
      const headers: Record<string, string | number> = {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      };
      if (t.token) headers.authorization = `Bearer ${t.token}`;
      const request = t.url.protocol === 'https:' ? httpsRequest : httpRequest;
      req = request(t.url, { method: 'POST', headers, agent: false, timeout: t.timeoutMs });
      req.on('socket', (s) => s.unref());
      req.on('timeout', () => {
        req.destroy();
        done(`the registry at ${t.url.origin} did not answer an activity report within ${t.timeoutMs} ms`);
      });
      req.on('error', (err) =>
        done(`cannot send activity to the registry at ${t.url.origin}: ${err.message}`),
      );
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (text.length < 1000) text += c;
        });
        res.on('error', () => done(`the registry's answer to an activity report broke off (${status})`));
        res.on('end', () => {
          if (status >= 200 && status < 300) return done();
          const hint =
            status === 401 || status === 403
              ? ': give BRANCHLINE_TOKEN a token with the report scope (for example "read,report")'
              : status === 404
                ? ': this registry does not accept activity reports (upgrade @branchline/registry)'
                : '';
          done(
            `the registry refused an activity report (${status} ${text.slice(0, 200)})${hint}`,
            String(status),
          );
        });
      });
      req.end(body);
    } catch (err) {
      logger().debug('branchline: activity report could not be built', { err: String(err) });
      done(`an activity report could not be sent: ${(err as Error)?.message ?? err}`, 'internal');
    }
  });
}

/** A request or call was forwarded to `sandbox`'s `service`: counted, and reported to the dashboard. */
export function noteForwarded(sandbox: string, service: string): void {
  counters.forwarded++;
  recordActivity(sandbox, service, 'forwarded');
}

/** An outgoing call was sent to `sandbox`'s version of `service` (origin routing). */
export function noteRouted(sandbox: string, service: string): void {
  counters.outgoingRouted++;
  recordActivity(sandbox, service, 'routed');
}

/** `count` messages were processed by this consumer (`sandbox` undefined for baseline). */
export function noteConsumed(sandbox: string | undefined, service: string | undefined, count = 1): void {
  counters.messagesProcessed += count;
  recordActivity(sandbox, service, 'consumed', count);
}
