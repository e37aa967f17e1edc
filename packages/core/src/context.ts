import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type BaggageEntry,
  baggageEntryMetadataFromString,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { type BaggageMember, MAX_BAGGAGE_BYTES, parseBaggage, writeBaggage } from './baggage.js';
import { joinHeaderValue } from './carriers.js';
import { DEFAULT_BAGGAGE_KEY, noteBaggageDrops } from './extract.js';
import { logger, warnRateLimited } from './log.js';
import { counters } from './metrics.js';
import { isValidRoutingKey } from './rules.js';

/**
 * The OpenTelemetry API keeps its registered globals on this symbol. Reading it tells us, in a
 * property load, whether the application registered a context manager or a propagator.
 */
const OTEL_GLOBAL = Symbol.for('opentelemetry.js.api.1');

function otelGlobal(): Record<string, unknown> | undefined {
  return (globalThis as Record<symbol, Record<string, unknown> | undefined>)[OTEL_GLOBAL];
}

/** Whether an OpenTelemetry context manager is registered (by the app, or by ensureOpenTelemetry). */
export function hasOtelContextManager(): boolean {
  return otelGlobal()?.context !== undefined;
}

/** Whether an OpenTelemetry propagator is registered. */
export function hasOtelPropagator(): boolean {
  return otelGlobal()?.propagation !== undefined;
}

/**
 * Without an OpenTelemetry context manager, Branchline keeps the context in its own
 * AsyncLocalStorage, so routing works in an app with no OpenTelemetry at all and we never
 * register a global the app might want to register later.
 */
const fallback = new AsyncLocalStorage<Context>();

let baggageKey = DEFAULT_BAGGAGE_KEY;

/** Sets the baggage member name used by getRoutingKey/withRoutingKey (env `BRANCHLINE_BAGGAGE_KEY`). */
export function setBaggageKey(name: string): void {
  baggageKey = name;
  rootKeyContexts.clear();
  lastRootKey = undefined;
}

export function getBaggageKey(): string {
  return baggageKey;
}

/** The active context: OpenTelemetry's when it manages context, Branchline's otherwise. */
export function activeContext(): Context {
  if (hasOtelContextManager()) return context.active();
  return fallback.getStore() ?? ROOT_CONTEXT;
}

/** Runs `fn` with `ctx` active, through OpenTelemetry when it manages context. */
export function runInContext<R>(ctx: Context, fn: () => R): R {
  if (hasOtelContextManager()) return context.with(ctx, fn);
  return fallback.run(ctx, fn);
}

// The last context asked about, and its answer. Contexts are immutable, so the same context
// (every call a caller makes inside one withRoutingKey, say) always carries the same key.
let lastContext: Context | undefined;
let lastContextMember = '';
let lastContextKey: string | undefined;

/** The routing key carried by `ctx` (default: the active context), or undefined. */
export function getRoutingKey(ctx: Context = activeContext()): string | undefined {
  if (ctx === lastContext && lastContextMember === baggageKey) return lastContextKey;
  const entry = propagation.getBaggage(ctx)?.getEntry(baggageKey);
  const key = entry !== undefined && isValidRoutingKey(entry.value) ? entry.value : undefined;
  lastContext = ctx;
  lastContextMember = baggageKey;
  lastContextKey = key;
  return key;
}

/** A copy of `ctx` whose baggage carries `key` (other entries kept). `undefined` removes it. */
export function contextWithRoutingKey(ctx: Context, key: string | undefined): Context {
  if (ctx === ROOT_CONTEXT && key !== undefined) return rootContextWithKey(key);
  return withKey(ctx, key);
}

// Transports receive requests and messages in the root context (unless OpenTelemetry manages
// context), and contexts are immutable: "root + key" is built once per key and shared by every
// transport. Bounded, since keys come from callers; the last one is a compare away.
const rootKeyContexts = new Map<string, Context>();
let lastRootKey: string | undefined;
let lastRootContext: Context = ROOT_CONTEXT;

function rootContextWithKey(key: string): Context {
  if (key === lastRootKey) return lastRootContext;
  let ctx = rootKeyContexts.get(key);
  if (ctx === undefined) {
    if (rootKeyContexts.size >= 1024) rootKeyContexts.clear();
    ctx = withKey(ROOT_CONTEXT, key);
    rootKeyContexts.set(key, ctx);
  }
  lastRootKey = key;
  lastRootContext = ctx;
  return ctx;
}

function withKey(ctx: Context, key: string | undefined): Context {
  const current = propagation.getBaggage(ctx);
  if (key === undefined) {
    return current?.getEntry(baggageKey) ? propagation.setBaggage(ctx, current.removeEntry(baggageKey)) : ctx;
  }
  if (current?.getEntry(baggageKey)?.value === key) return ctx;
  const bag = (current ?? propagation.createBaggage()).setEntry(baggageKey, { value: key });
  return propagation.setBaggage(ctx, bag);
}

/** Runs `fn` with `key` as the active routing key (also visible to OpenTelemetry baggage readers). */
export function withRoutingKey<R>(key: string | undefined, fn: () => R): R {
  return runInContext(contextWithRoutingKey(activeContext(), key), fn);
}

/**
 * A baggage propagator built on Branchline's bounded codec, for apps that register none. It
 * carries every baggage entry with its metadata, not only the routing key, and what it writes
 * it reads back unchanged (and so does OpenTelemetry's `W3CBaggagePropagator`).
 *
 * Reading keeps the well-formed members of a header and drops the rest, counted; a key that
 * occurs twice with different values is dropped too, the rule the key reader applies to the
 * routing key. Writing percent-encodes keys and values, drops metadata that is not valid
 * member properties, and stays within 8192 bytes and 180 members, giving the routing key its
 * room first.
 */
export class BranchlineBaggagePropagator implements TextMapPropagator {
  inject(ctx: Context, carrier: unknown, setter: TextMapSetter): void {
    const bag = propagation.getBaggage(ctx);
    if (!bag) return;
    const entries = bag.getAllEntries();
    if (entries.length === 0) return;
    const members: BaggageMember[] = [];
    for (const [key, entry] of entries) {
      const m: BaggageMember = {
        key,
        value: typeof entry.value === 'string' ? entry.value : String(entry.value),
      };
      const metadata = entry.metadata?.toString();
      if (metadata) m.properties = metadata;
      members.push(m);
    }
    const out = writeBaggage(members, baggageKey);
    if (out.dropped > 0 || out.propertiesDropped > 0) {
      counters.baggageMembersDropped += out.dropped;
      warnRateLimited(
        'baggage-inject-dropped',
        'branchline: wrote baggage without some entries (an empty key, or past 8192 bytes or 180 members) or without metadata that is not valid member properties',
        { dropped: out.dropped, metadataDropped: out.propertiesDropped },
      );
    }
    if (out.header.length > 0) setter.set(carrier, 'baggage', out.header);
  }

  extract(ctx: Context, carrier: unknown, getter: TextMapGetter): Context {
    const header = joinHeaderValue(getter.get(carrier, 'baggage'), MAX_BAGGAGE_BYTES);
    if (!header) return ctx;
    const parsed = parseBaggage(header);
    if (parsed.malformed > 0 || parsed.excess > 0 || parsed.truncated)
      noteBaggageDrops(parsed, header.length);
    if (parsed.members.length === 0) return ctx;
    // A plain object (createBaggage copies it; a null-prototype one costs ~1.7x as much), with
    // own-property checks so that keys like `toString` or `__proto__` are entries like any other.
    const entries: Record<string, BaggageEntry> = {};
    let conflicting: Set<string> | undefined;
    for (const m of parsed.members) {
      if (Object.hasOwn(entries, m.key)) {
        if (entries[m.key]!.value !== m.value) {
          conflicting ??= new Set();
          conflicting.add(m.key);
        }
        continue;
      }
      const entry: BaggageEntry =
        m.properties === undefined
          ? { value: m.value }
          : { value: m.value, metadata: baggageEntryMetadataFromString(m.properties) };
      if (m.key === '__proto__')
        Object.defineProperty(entries, m.key, {
          value: entry,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      else entries[m.key] = entry;
    }
    if (conflicting !== undefined) {
      counters.malformedBaggage++;
      for (const key of conflicting) delete entries[key];
      warnRateLimited(
        'baggage-ambiguous-entry',
        'branchline: a baggage key occurs twice with different values; that entry was dropped',
        { keys: [...conflicting].slice(0, 5).join(',') },
      );
    }
    return propagation.setBaggage(ctx, propagation.createBaggage(entries));
  }

  fields(): string[] {
    return ['baggage'];
  }
}

export interface EnsureResult {
  /** Branchline registered an AsyncLocalStorage context manager (none was registered). */
  contextManager: boolean;
  /** Branchline registered its baggage propagator (none was registered). */
  propagator: boolean;
}

/**
 * Registers an AsyncLocalStorage context manager and a baggage propagator, each only if the
 * application has none. Never called at import time and never replaces what the app set.
 * Call it after your own OpenTelemetry setup (if any); Branchline works without calling it.
 */
export function ensureOpenTelemetry(): EnsureResult {
  const result: EnsureResult = { contextManager: false, propagator: false };
  if (!hasOtelContextManager()) {
    result.contextManager = context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  }
  if (!hasOtelPropagator()) {
    result.propagator = propagation.setGlobalPropagator(new BranchlineBaggagePropagator());
  }
  if (result.contextManager || result.propagator) {
    logger().debug('branchline: registered OpenTelemetry defaults', { ...result });
  }
  return result;
}
