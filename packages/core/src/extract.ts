import { encodeBaggageValue, findBaggageMember, mergeBaggageMember } from './baggage.js';
import { type CarrierGetter, type CarrierSetter, joinHeaderValue } from './carriers.js';
import { isValidRoutingKey } from './key.js';
import { warnRateLimited } from './log.js';
import { counters } from './metrics.js';

export const DEFAULT_BAGGAGE_KEY = 'branchline';
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

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Builds a reader. Precedence: `baggage`, `uberctx-`, `ot-baggage-`, `tracestate`, the custom
 * header, then the Signadot preset. The first source that is present decides: if its value is
 * not a valid key the result is "no key" (counted), not a fall-through to a weaker source.
 */
export function createKeyReader(options: KeyReaderOptions = {}): KeyReader {
  const baggageKey = options.baggageKey ?? DEFAULT_BAGGAGE_KEY;
  if (!TOKEN_RE.test(baggageKey)) {
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
    if (!TOKEN_RE.test(options.header)) {
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
    const raw = joinHeaderValue(getter.get(carrier, s.header));
    return raw === undefined ? undefined : parseSource(s, raw);
  }

  function parseSource(s: Source, raw: string): string | undefined | null {
    if (s.kind === 'baggage') {
      const r = findBaggageMember(raw, s.member);
      if (r.found) return r.value;
      if (r.error) {
        if (r.error === 'oversize' || r.error === 'too-many-members') counters.oversizeBaggage++;
        else counters.malformedBaggage++;
        warnRateLimited(
          `baggage-${r.error}`,
          `branchline: ignored a ${r.error} baggage header; the request is treated as carrying no routing key`,
          {
            bytes: raw.length,
          },
        );
        return null;
      }
      return undefined;
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
        const raw = joinHeaderValue(getter.get(carrier, 'baggage'));
        if (raw === undefined) return undefined;
        // Callers tend to send the same header on every request: the last one that carried a
        // valid key is answered by a string compare. Invalid or malformed headers are parsed
        // (and counted) every time.
        if (raw === lastRaw) return lastKey;
        const v = parseSource(sources[0]!, raw);
        const key = v == null ? undefined : validate(v);
        if (key !== undefined) {
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

/** Value of `member` in a W3C tracestate header (`k1=v1,k2=v2`), or undefined. */
export function tracestateMember(header: string, member: string): string | undefined {
  if (header.length > 512 * 32) return undefined;
  let i = 0;
  const n = header.length;
  while (i < n) {
    let j = header.indexOf(',', i);
    if (j === -1) j = n;
    const eq = header.indexOf('=', i);
    if (eq !== -1 && eq < j && header.slice(i, eq).trim() === member) return header.slice(eq + 1, j).trim();
    i = j + 1;
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
  const existing = joinHeaderValue(getter.get(carrier, 'baggage'));
  if (existing === undefined || existing.length === 0) {
    // The common case, a carrier with no baggage yet: `member=key`, built once per (member, key).
    if (key !== lastInjectedKey || baggageKey !== lastInjectedMember) {
      lastInjectedHeader = `${baggageKey}=${encodeBaggageValue(key)}`;
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
