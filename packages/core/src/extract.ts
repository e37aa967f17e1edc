import {
  type BaggageDrops,
  encodeBaggageKey,
  encodeBaggageValue,
  findBaggageMember,
  MAX_BAGGAGE_BYTES,
  type MemberLookup,
  mergeBaggageMember,
} from './baggage.js';
import { type CarrierGetter, type CarrierSetter, joinHeaderValue } from './carriers.js';
import { warnRateLimited } from './log.js';
import { counters } from './metrics.js';
import { HTTP_TOKEN_PATTERN, isValidRoutingKey } from './rules.js';

/**
 * The baggage member that carries the routing key unless `BRANCHLINE_BAGGAGE_KEY` (or the
 * `baggageKey` option) names another. The one place the name is spelled; `resolveBaggageKey`
 * (config.ts) is the one place the choice between them is made.
 */
export const DEFAULT_BAGGAGE_KEY = 'branchline';

/** The environment variable that renames the baggage member. */
export const BAGGAGE_KEY_ENV = 'BRANCHLINE_BAGGAGE_KEY';

/**
 * The baggage member that carries `key`, e.g. `branchline=pr-42`: what a person adds to a
 * request by hand, and what Branchline writes to a carrier that has no baggage yet.
 */
export function routingBaggage(key: string, baggageKey: string = DEFAULT_BAGGAGE_KEY): string {
  return `${encodeBaggageKey(baggageKey)}=${encodeBaggageValue(key)}`;
}
export const SIGNADOT_KEY = 'sd-routing-key';

/** Where, besides the W3C `baggage` header, a routing key may be read from. All off by default. */
export interface KeyAliases {
  /** Jaeger's `uberctx-<baggageKey>` header. */
  jaeger?: boolean;
  /** OpenTracing's `ot-baggage-<baggageKey>` header. */
  openTracing?: boolean;
  /** A member of the W3C `tracestate` header; `true` uses the baggage key as the member name. */
  tracestate?: boolean | string;
  /** A plain header that carries only the key, for example `x-branchline-key`. */
  header?: string;
  /** Signadot-compatible names: `sd-routing-key` in baggage, `uberctx-`, `ot-baggage-`, and a plain header. */
  signadot?: boolean;
}

export interface KeyReaderOptions extends KeyAliases {
  /** Baggage member name; default `branchline` (env `BRANCHLINE_BAGGAGE_KEY`). */
  baggageKey?: string;
}

type Source =
  | { kind: 'baggage'; header: 'baggage'; member: string }
  | { kind: 'tracestate'; header: 'tracestate'; member: string }
  | { kind: 'plain'; header: string; decode: boolean };

/** Reads a routing key from a carrier following one precedence order, computed once. */
export interface KeyReader {
  readonly baggageKey: string;
  /** The headers this reader looks at, in precedence order (for docs and debugging). */
  readonly sources: readonly string[];
  read<C>(carrier: C, getter: CarrierGetter<C>): string | undefined;
}

function sourceName(s: Source): string {
  return s.kind === 'plain' ? s.header : `${s.header}[${s.member}]`;
}

/**
 * Builds a reader. Precedence: `baggage`, `uberctx-`, `ot-baggage-`, `tracestate`, the custom
 * header, then the Signadot preset. The first source that is present decides: if its value is
 * not a valid key the result is "no key" (counted), not a fall-through to a weaker source.
 */
export function createKeyReader(options: KeyReaderOptions = {}): KeyReader {
  const baggageKey = options.baggageKey ?? DEFAULT_BAGGAGE_KEY;
  if (!HTTP_TOKEN_PATTERN.test(baggageKey)) {
    throw new TypeError(
      `branchline: baggageKey ${JSON.stringify(baggageKey)} is not a valid baggage member name (an HTTP token such as "branchline")`,
    );
  }
  const lower = baggageKey.toLowerCase();
  const sources: Source[] = [{ kind: 'baggage', header: 'baggage', member: baggageKey }];
  if (options.jaeger) sources.push({ kind: 'plain', header: `uberctx-${lower}`, decode: true });
  if (options.openTracing) sources.push({ kind: 'plain', header: `ot-baggage-${lower}`, decode: true });
  if (options.tracestate) {
    const member = typeof options.tracestate === 'string' ? options.tracestate : lower;
    sources.push({ kind: 'tracestate', header: 'tracestate', member });
  }
  if (options.header) {
    if (!HTTP_TOKEN_PATTERN.test(options.header)) {
      throw new TypeError(
        `branchline: header ${JSON.stringify(options.header)} is not a valid HTTP header name`,
      );
    }
    sources.push({ kind: 'plain', header: options.header.toLowerCase(), decode: false });
  }
  if (options.signadot) {
    sources.push({ kind: 'baggage', header: 'baggage', member: SIGNADOT_KEY });
    sources.push({ kind: 'plain', header: `uberctx-${SIGNADOT_KEY}`, decode: true });
    sources.push({ kind: 'plain', header: `ot-baggage-${SIGNADOT_KEY}`, decode: true });
    sources.push({ kind: 'plain', header: SIGNADOT_KEY, decode: false });
  }
  const onlyBaggage = sources.length === 1;
  let lastRaw: string | undefined;
  let lastKey: string | undefined;

  function readSource<C>(s: Source, carrier: C, getter: CarrierGetter<C>): string | undefined | null {
    const limit = s.kind === 'tracestate' ? MAX_TRACESTATE_LENGTH : MAX_BAGGAGE_BYTES;
    const raw = joinHeaderValue(getter.get(carrier, s.header), limit);
    return raw === undefined ? undefined : parseSource(s, raw);
  }

  function parseSource(s: Source, raw: string): string | undefined | null {
    if (s.kind === 'baggage') {
      // The Signadot member reads the same header again: its drops were counted already.
      return baggageValue(findBaggageMember(raw, s.member), raw, s.member, s === sources[0]);
    }
    if (s.kind === 'tracestate') return tracestateMember(raw, s.member);
    const v = raw.trim();
    if (!s.decode || v.indexOf('%') === -1) return v;
    try {
      return decodeURIComponent(v);
    } catch {
      return null;
    }
  }

  return {
    baggageKey,
    sources: sources.map(sourceName),
    read<C>(carrier: C, getter: CarrierGetter<C>): string | undefined {
      // Hot path: no aliases and no baggage header costs one lookup.
      if (onlyBaggage) {
        const raw = joinHeaderValue(getter.get(carrier, 'baggage'), MAX_BAGGAGE_BYTES);
        if (raw === undefined) return undefined;
        // Callers tend to send the same header on every request: the last one that carried a
        // valid key, and nothing that had to be dropped, is answered by a string compare.
        // Headers with invalid keys or dropped members are parsed (and counted) every time.
        if (raw === lastRaw) return lastKey;
        const r = findBaggageMember(raw, baggageKey);
        const v = baggageValue(r, raw, baggageKey, true);
        const key = v == null ? undefined : validate(v);
        if (key !== undefined && r.dropped === undefined) {
          lastRaw = raw;
          lastKey = key;
        }
        return key;
      }
      for (const s of sources) {
        const v = readSource(s, carrier, getter);
        if (v === null) return undefined;
        if (v !== undefined) return validate(v);
      }
      return undefined;
    },
  };
}

/**
 * The value a baggage lookup found, counting what the header dropped. `null` when our member was
 * there but unusable (malformed, or twice with different values): no key, and no fall-through to
 * a weaker source.
 */
function baggageValue(
  r: MemberLookup,
  raw: string,
  member: string,
  countDrops: boolean,
): string | undefined | null {
  if (countDrops && r.dropped !== undefined) noteBaggageDrops(r.dropped, raw.length);
  if (r.found) return r.value;
  if (r.error === undefined) return undefined;
  if (r.error === 'ambiguous') counters.malformedBaggage++;
  warnRateLimited(
    `baggage-${r.error}`,
    r.error === 'ambiguous'
      ? `branchline: the baggage member ${member} occurs twice with different values; the request is treated as carrying no routing key`
      : `branchline: the baggage member ${member} is malformed; the request is treated as carrying no routing key`,
    { bytes: raw.length },
  );
  return null;
}

function validate(v: string): string | undefined {
  const raw: string = v;
  if (isValidRoutingKey(raw)) return raw;
  counters.invalidKey++;
  warnRateLimited('invalid-key', 'branchline: ignored an invalid routing key; serving as baseline', {
    key: String(v).slice(0, 80),
    hint: 'keys look like DNS labels: lowercase letters, digits, inner hyphens, at most 63 characters',
  });
  return undefined;
}

/**
 * Counts and reports what reading a baggage header dropped: each dropped member in
 * `branchline_baggage_members_dropped_total`, and the header once in
 * `branchline_malformed_baggage_total` (malformed members) or
 * `branchline_oversize_baggage_total` (past 180 members or 8192 bytes).
 */
export function noteBaggageDrops(d: BaggageDrops, bytes: number): void {
  counters.baggageMembersDropped += d.malformed + d.excess;
  if (d.malformed > 0) counters.malformedBaggage++;
  if (d.excess > 0 || d.truncated) counters.oversizeBaggage++;
  warnRateLimited(
    'baggage-dropped',
    'branchline: dropped baggage members that were malformed or over the limits (180 members, 8192 bytes); the others were kept',
    { malformed: d.malformed, excess: d.excess, truncated: d.truncated, bytes },
  );
}

/** Longest tracestate header read (32 members of up to 512 characters); a longer one is ignored. */
export const MAX_TRACESTATE_LENGTH = 512 * 32;

const COMMA = 0x2c;
const EQ = 0x3d;

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** Value of `member` in a W3C tracestate header (`k1=v1,k2=v2`), or undefined. One pass, no regex. */
export function tracestateMember(header: string, member: string): string | undefined {
  const n = header.length;
  if (n > MAX_TRACESTATE_LENGTH) return undefined;
  for (let i = 0; i < n; i++) {
    while (i < n && isOws(header.charCodeAt(i))) i++;
    const keyStart = i;
    let c = 0;
    while (i < n) {
      c = header.charCodeAt(i);
      if (c === EQ || c === COMMA) break;
      i++;
    }
    if (i >= n || c !== EQ) continue;
    let keyEnd = i;
    while (keyEnd > keyStart && isOws(header.charCodeAt(keyEnd - 1))) keyEnd--;
    const valueStart = i + 1;
    while (i < n && header.charCodeAt(i) !== COMMA) i++;
    if (keyEnd - keyStart === member.length && header.startsWith(member, keyStart))
      return header.slice(valueStart, i).trim();
  }
  return undefined;
}

// The header injectRoutingKey last built for a carrier without baggage.
let lastInjectedKey: string | undefined;
let lastInjectedMember: string | undefined;
let lastInjectedHeader = '';

/**
 * Writes `baggageKey=key` into the carrier's baggage header, merged with what is there. A member
 * of that name the application already set is left alone; other members are never dropped;
 * the header is never duplicated. Returns false when the key could not be added (the existing
 * header was malformed or full), which is logged.
 */
export function injectRoutingKey<C>(
  carrier: C,
  getter: CarrierGetter<C>,
  setter: CarrierSetter<C>,
  key: string,
  baggageKey: string = DEFAULT_BAGGAGE_KEY,
): boolean {
  const existing = joinHeaderValue(getter.get(carrier, 'baggage'), MAX_BAGGAGE_BYTES);
  if (existing === undefined || existing.length === 0) {
    // The common case, a carrier with no baggage yet: `member=key`, built once per (member, key).
    if (key !== lastInjectedKey || baggageKey !== lastInjectedMember) {
      lastInjectedHeader = routingBaggage(key, baggageKey);
      lastInjectedKey = key;
      lastInjectedMember = baggageKey;
    }
    setter.set(carrier, 'baggage', lastInjectedHeader);
    return true;
  }
  if (findBaggageMember(existing, baggageKey).found) return true;
  const merged = mergeBaggageMember(existing, baggageKey, key);
  if (!merged.ok) {
    warnRateLimited(
      `inject-${merged.reason}`,
      `branchline: could not add the routing key to a ${merged.reason} baggage header; the call leaves without it`,
      {
        key,
      },
    );
    return false;
  }
  if (merged.changed) setter.set(carrier, 'baggage', merged.header);
  return true;
}
