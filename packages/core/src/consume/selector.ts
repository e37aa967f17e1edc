import { type Context, propagation, ROOT_CONTEXT } from '@opentelemetry/api';
import { noteConsumed } from '../activity.js';
import { bufferTextMapGetter, type CarrierGetter } from '../carriers.js';
import { loadConfig } from '../config.js';
import { activeContext, contextWithRoutingKey, hasOtelPropagator, runInContext } from '../context.js';
import { decideMessage } from '../decide.js';
import type { KeyReader } from '../extract.js';
import { logger } from '../log.js';
import { counters } from '../metrics.js';
import { type RouteSource, StaticRouteSource } from '../route-source.js';
import { RouteTable, type RouteTableSpec, type SandboxSpec } from '../routes.js';
import { type BranchlineRuntime, defaultRuntime } from '../runtime.js';
import {
  type BackoffOptions,
  backoffDelay,
  type DeprecatedBackoffOptions,
  resolveBackoff,
} from './backoff.js';
import { HoldAbandonedError, type HoldReason, HoldTimeoutError } from './errors.js';
import { checkDurationMs } from './options.js';
import {
  activationTime,
  type OwnersChange,
  type OwnersListener,
  overridingSandboxes,
  ownershipFromSpec,
  ownershipOf,
  type SandboxOwnership,
} from './ownership.js';

/**
 * The transport-neutral half of selective consumption: which consumer processes a message, how
 * a message waits while the route view cannot decide it, the handler's context, the counters,
 * and the sandboxes that come and go for the service. A transport adapter supplies the broker
 * half: where the key and the message's time are, the redelivery path, and per-sandbox
 * destinations. See docs/transport-sdk.md.
 */

export interface MessageSelectorOptions {
  /** This process's service; default the runtime's (`BRANCHLINE_SERVICE`). Required one way or the other. */
  service?: string;
  /** This process's sandbox; `null` forces baseline. Default the runtime's (`BRANCHLINE_SANDBOX`). */
  sandbox?: string | null;
  /** Where route tables come from (a source, a table, or a table document); default the runtime's. */
  routes?: RouteSource | RouteTable | RouteTableSpec;
  /** Runtime to take service, sandbox, routes and the key reader from; default `defaultRuntime()`. */
  runtime?: BranchlineRuntime;
  /** Longest time one message is held while the route view cannot decide it, ms. Default 30000. */
  holdTimeoutMs?: number;
  /** Backoff for the transport's retries (reconnects, cleanups); see `retryDelayMs`. */
  backoff?: BackoffOptions & DeprecatedBackoffOptions;
  /** The transport's name, for logs and errors (`kafkajs`, `amqplib`, `nats`, …). */
  transport?: string;
}

/** Who processes a message: this consumer, another one (`owner`), or nobody yet (hold). */
export type Selection =
  | { readonly action: 'process'; readonly owner: string | undefined }
  | { readonly action: 'skip'; readonly owner: string | undefined }
  | { readonly action: 'hold'; readonly reason: HoldReason };

export type HoldSelection = Selection & { action: 'hold' };
export type FinalSelection = Selection & { action: 'process' | 'skip' };

export interface HoldOptions {
  /** The `hold` selection that started the hold (its reason is reported if nothing changes). */
  first?: HoldSelection;
  /** Aborting it ends the hold with `HoldAbandonedError` (the consumer is stopping). */
  signal?: AbortSignal;
  /** Called about once a second while held (Kafka's heartbeat, a visibility-timeout extension). */
  heartbeat?: () => unknown;
  /**
   * After `holdTimeoutMs`: `'error'` (default) rejects with `HoldTimeoutError` so the transport
   * redelivers; `'decide-now'` decides with the current table (no table: baseline processes).
   */
  onTimeout?: 'error' | 'decide-now';
  /** Which message, for logs and the error: `orders[2]@1234`, a queue and message id, … */
  where?: string;
  /** Builds the timeout error instead of the default `HoldTimeoutError` (a transport's subclass). */
  timeoutError?: (reason: HoldReason, holdTimeoutMs: number) => Error;
}

/** Running totals of one selector. */
export interface SelectorStats {
  /** Messages handed to the handler. */
  processed: number;
  /** Messages another consumer owns. */
  skipped: number;
  /** Messages held because the route view could not decide them yet. */
  held: number;
  /** Holds that reached `holdTimeoutMs`. */
  holdTimeouts: number;
}

export interface MessageSelector {
  readonly service: string;
  /** Undefined for a baseline consumer. */
  readonly sandbox: string | undefined;
  readonly routes: RouteSource;
  readonly keys: KeyReader;
  readonly holdTimeoutMs: number;
  /** The resolved backoff (defaults filled in). */
  readonly backoff: Readonly<Required<BackoffOptions>>;
  readonly stats: SelectorStats;
  /** The current route table; undefined before the first sync. */
  readonly table: RouteTable | undefined;

  /** The routing key a message carries (W3C baggage and the runtime's aliases). */
  readKey<C>(carrier: C, getter: CarrierGetter<C>): string | undefined;
  /** The routing key in one `baggage` header value; repeated values are parsed once (bounded cache). */
  keyFromBaggage(value: string): string | undefined;
  /** Whether the key is read from `baggage` alone (so `keyFromBaggage` sees everything). */
  readonly baggageOnly: boolean;

  /**
   * Who processes a message with `key` whose time (registry time, ms) is `atMs`: decided by the
   * ownership history at that time, so consumers with different views agree. `hold` when the view
   * does not reach `atMs` yet (or there is no table). Without `atMs`, by the current table.
   */
  decide(key: string | undefined, atMs: number | undefined): Selection;
  /** Reads the key from the carrier and decides; the key is returned alongside. */
  decideCarrier<C>(
    carrier: C,
    getter: CarrierGetter<C>,
    atMs: number | undefined,
  ): { key: string | undefined; selection: Selection };
  /** The decision with what is known now (current table; no table: baseline processes). */
  decideNow(key: string | undefined): FinalSelection;
  /**
   * Holds a message until the view can decide it (re-deciding on each new table), at most
   * `holdTimeoutMs`; counts the hold. Rejects with `HoldTimeoutError` (or `HoldAbandonedError`
   * when `signal` aborts or the selector closes).
   */
  hold(key: string | undefined, atMs: number | undefined, options?: HoldOptions): Promise<FinalSelection>;
  /** Resolves true when the route view changes, false after `timeoutMs` (or on close). */
  waitForView(timeoutMs: number): Promise<boolean>;
  /** Resolves with the table once synced, or undefined after `timeoutMs` (default `holdTimeoutMs`). */
  ready(timeoutMs?: number): Promise<RouteTable | undefined>;

  /** The handler's context: `base` (default the active context) carrying `key`. */
  contextFor(key: string | undefined, base?: Context): Context;
  /**
   * The context a message's carrier restores through the application's OpenTelemetry propagator
   * (trace parent, baggage), or the root context when none is registered.
   */
  extractContext<C>(carrier: C, getter: CarrierGetter<C>): Context;
  /** Runs `fn` in `key`'s context (see `contextFor`); enters no context when there is nothing to enter. */
  run<R>(key: string | undefined, fn: () => R, base?: Context): R;
  /** Counts `count` processed messages (stats, metrics, dashboard activity). */
  noteProcessed(count?: number): void;
  /** Counts `count` skipped (or moved) messages. */
  noteSkipped(count?: number): void;

  /** Sandboxes that override this service now. */
  readonly owners: ReadonlySet<string>;
  /**
   * Calls `listener` now with the current state (`initial: true`, when there is a table) and then
   * whenever sandboxes start or stop overriding this service: a transport creates per-sandbox
   * destinations for `added` and drains or returns those of `removed`. Returns an unsubscribe.
   */
  onOwnersChanged(listener: OwnersListener): () => void;
  /** The ownership record of a sandbox that overrides this service now. */
  ownership(sandbox: string): SandboxOwnership | undefined;
  /**
   * When `sandbox` (default this consumer's) began owning this service's messages, registry time:
   * where a new sandbox destination starts reading.
   */
  activationTime(table?: RouteTable, sandbox?: string): number;
  /** The delay before retry `attempt` (0-based), from `backoff`, with jitter. */
  retryDelayMs(attempt: number): number;

  /** Ends every hold (`HoldAbandonedError`) and stops watching the route source. Reusable after. */
  close(): void;
}

const HOLD_NEVER: HoldSelection = Object.freeze({ action: 'hold', reason: 'never-synced' });
const HOLD_BEHIND: HoldSelection = Object.freeze({ action: 'hold', reason: 'view-behind-message' });
const PROCESS_BASELINE: FinalSelection = Object.freeze({ action: 'process', owner: undefined });
const SKIP_BASELINE: FinalSelection = Object.freeze({ action: 'skip', owner: undefined });

function isRouteSource(v: unknown): v is RouteSource {
  return typeof v === 'object' && v !== null && typeof (v as RouteSource).subscribe === 'function';
}

/** Builds the selector a transport's consumer decides with. Validates its options now. */
export function createMessageSelector(options: MessageSelectorOptions = {}): MessageSelector {
  if (typeof options !== 'object' || options === null)
    throw new TypeError('branchline: createMessageSelector needs an options object');
  const transport = options.transport ?? 'selective consumer';
  const runtime = options.runtime ?? defaultRuntime();
  const service = options.service ?? runtime.config.service;
  if (service === undefined || service === '')
    throw new TypeError(
      `branchline: a ${transport} consumer needs its service name: pass option service or set BRANCHLINE_SERVICE`,
    );
  const sandbox = options.sandbox === null ? undefined : (options.sandbox ?? runtime.config.sandbox);
  // Names given in code follow the same rules as the environment's.
  if (options.service !== undefined || typeof options.sandbox === 'string')
    loadConfig({ service, sandbox, baggageKey: runtime.config.baggageKey }, {});
  const holdTimeoutMs = options.holdTimeoutMs ?? 30_000;
  checkDurationMs('holdTimeoutMs', holdTimeoutMs);
  const backoff = resolveBackoff(options.backoff, `${transport} backoff`);
  const r = options.routes;
  const routes: RouteSource =
    r === undefined
      ? runtime.routes
      : isRouteSource(r)
        ? r
        : new StaticRouteSource(r instanceof RouteTable ? r : RouteTable.from(r));
  const keys = runtime.keys;
  const stats: SelectorStats = { processed: 0, skipped: 0, held: 0, holdTimeouts: 0 };

  // ---- keys ---------------------------------------------------------------------------------

  const baggageOnly = keys.sources.length === 1;
  const keyCache = new Map<string, string | undefined>();

  function keyFromBaggage(value: string): string | undefined {
    const hit = keyCache.get(value);
    if (hit !== undefined || keyCache.has(value)) return hit;
    const key = keys.read({ baggage: value }, bufferTextMapGetter);
    // An absent key is cached only when the member name does not occur at all, so an invalid
    // key is still counted (and warned about) each time it is seen.
    if (key !== undefined || value.indexOf(keys.baggageKey) === -1) {
      if (keyCache.size >= 1024) keyCache.clear();
      keyCache.set(value, key);
    }
    return key;
  }

  // ---- decisions ----------------------------------------------------------------------------

  function decide(key: string | undefined, atMs: number | undefined): Selection {
    if (key === undefined) return sandbox === undefined ? PROCESS_BASELINE : SKIP_BASELINE;
    const d = decideMessage({ table: routes.table, service: service!, sandbox, key, at: atMs });
    if (d.action === 'wait') return d.reason === 'never-synced' ? HOLD_NEVER : HOLD_BEHIND;
    return d;
  }

  function decideNow(key: string | undefined): FinalSelection {
    const table = routes.table;
    if (!table) return sandbox === undefined ? PROCESS_BASELINE : SKIP_BASELINE;
    return decideMessage({ table, service: service!, sandbox, key }) as FinalSelection;
  }

  // ---- the route view -----------------------------------------------------------------------

  // Wakes every hold when the route view changes (or the selector closes).
  let wake!: () => void;
  let changed = new Promise<void>((res) => {
    wake = res;
  });
  let closed = false;
  const signalChange = () => {
    const w = wake;
    changed = new Promise<void>((res) => {
      wake = res;
    });
    w();
  };

  let owners = new Map<string, SandboxSpec>();
  let ownerNames: ReadonlySet<string> = new Set();
  const listeners = new Set<OwnersListener>();
  let unsubscribe: (() => void) | undefined;

  function onTable(table: RouteTable): void {
    signalChange();
    const now = overridingSandboxes(table, service!);
    const before = owners;
    owners = now;
    const added: SandboxOwnership[] = [];
    const removed: SandboxOwnership[] = [];
    for (const [name, s] of now) if (!before.has(name)) added.push(ownershipFromSpec(s, service!));
    if (before.size > 0) {
      const until = Number.isFinite(table.completeUntil) ? table.completeUntil : Date.now();
      for (const [name, s] of before)
        if (!now.has(name))
          removed.push({ ...ownershipFromSpec(s, service!), until, deleted: !table.sandbox(name) });
    }
    if (added.length === 0 && removed.length === 0) return;
    ownerNames = new Set(now.keys());
    const change: OwnersChange = { added, removed, current: ownerNames, table, initial: false };
    for (const l of [...listeners]) notify(l, change);
  }

  function notify(l: OwnersListener, change: OwnersChange): void {
    try {
      l(change);
    } catch (err) {
      logger().error('branchline: an onOwnersChanged listener threw; ignoring it', {
        service,
        err: String(err),
      });
    }
  }

  function ensureSubscribed(): void {
    if (unsubscribe) return;
    closed = false;
    if (routes.table) onTable(routes.table);
    unsubscribe = routes.subscribe(onTable);
  }
  ensureSubscribed();

  async function hold(
    key: string | undefined,
    atMs: number | undefined,
    opts: HoldOptions = {},
  ): Promise<FinalSelection> {
    ensureSubscribed();
    let d = opts.first ?? decide(key, atMs);
    if (d.action !== 'hold') return d;
    let reason = d.reason;
    stats.held++;
    counters.messagesHeld++;
    const { signal, heartbeat } = opts;
    const where = opts.where ?? 'a message';
    const deadline = Date.now() + holdTimeoutMs;
    for (;;) {
      if (closed || signal?.aborted) throw new HoldAbandonedError(where);
      const left = deadline - Date.now();
      if (left <= 0) {
        stats.holdTimeouts++;
        if (opts.onTimeout === 'decide-now') {
          logger().warn('branchline: hold timed out; deciding with the current route table', {
            service,
            where,
            reason,
          });
          return decideNow(key);
        }
        throw (
          opts.timeoutError?.(reason, holdTimeoutMs) ?? new HoldTimeoutError(reason, holdTimeoutMs, where)
        );
      }
      await waitOnce(Math.min(left, 1000), signal);
      if (closed || signal?.aborted) throw new HoldAbandonedError(where);
      if (heartbeat) await heartbeat();
      d = decide(key, atMs);
      if (d.action !== 'hold') return d;
      reason = d.reason;
    }
  }

  function waitOnce(ms: number, signal?: AbortSignal): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const timeout = new Promise<boolean>((res) => {
      timer = setTimeout(() => res(false), ms);
      timer.unref?.();
      if (signal) {
        onAbort = () => res(false);
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
    return Promise.race([changed.then(() => true), timeout]).finally(() => {
      clearTimeout(timer);
      if (onAbort) signal!.removeEventListener('abort', onAbort);
    });
  }

  // ---- context and counters -----------------------------------------------------------------

  function contextFor(key: string | undefined, base: Context = activeContext()): Context {
    return contextWithRoutingKey(base, key);
  }

  return {
    service,
    sandbox,
    routes,
    keys,
    holdTimeoutMs,
    backoff,
    stats,
    baggageOnly,
    get table() {
      return routes.table;
    },
    get owners() {
      return ownerNames;
    },
    readKey: (carrier, getter) => keys.read(carrier, getter),
    keyFromBaggage,
    decide,
    decideCarrier(carrier, getter, atMs) {
      const key = keys.read(carrier, getter);
      return { key, selection: decide(key, atMs) };
    },
    decideNow,
    hold,
    waitForView(timeoutMs: number) {
      ensureSubscribed();
      return waitOnce(timeoutMs);
    },
    ready: (timeoutMs = holdTimeoutMs) => routes.ready(timeoutMs),
    contextFor,
    extractContext(carrier, getter) {
      return hasOtelPropagator() ? propagation.extract(ROOT_CONTEXT, carrier, getter) : ROOT_CONTEXT;
    },
    run(key, fn, base) {
      const active = activeContext();
      const ctx = contextWithRoutingKey(base ?? active, key);
      // Entering a context costs an AsyncLocalStorage frame: skip it when nothing would change.
      return ctx === active ? fn() : runInContext(ctx, fn);
    },
    noteProcessed(count = 1) {
      stats.processed += count;
      noteConsumed(sandbox, service, count);
    },
    noteSkipped(count = 1) {
      stats.skipped += count;
      counters.messagesSkipped += count;
    },
    onOwnersChanged(listener) {
      ensureSubscribed();
      listeners.add(listener);
      const table = routes.table;
      if (table) {
        const added = [...owners.values()].map((s) => ownershipFromSpec(s, service!));
        notify(listener, { added, removed: [], current: ownerNames, table, initial: true });
      }
      return () => {
        listeners.delete(listener);
      };
    },
    ownership(name) {
      const table = routes.table;
      return table ? ownershipOf(table, service!, name) : undefined;
    },
    activationTime(table = routes.table ?? RouteTable.empty, name = sandbox) {
      if (name === undefined) throw new TypeError('branchline: activationTime needs a sandbox name');
      return activationTime(table, service!, name);
    },
    retryDelayMs: (attempt) => backoffDelay(backoff, attempt),
    close() {
      closed = true;
      unsubscribe?.();
      unsubscribe = undefined;
      signalChange();
    },
  };
}
