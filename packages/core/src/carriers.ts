/**
 * Small named getter/setter objects for every carrier Branchline reads or writes. They follow
 * OpenTelemetry's TextMapGetter/TextMapSetter shape, so they also work with `propagation.extract`.
 */

export interface CarrierGetter<C> {
  keys(carrier: C): string[];
  get(carrier: C, key: string): string | string[] | undefined;
}

export interface CarrierSetter<C> {
  set(carrier: C, key: string, value: string): void;
}

type HeaderValue = string | string[] | number | undefined;

/** Node `IncomingHttpHeaders` / `OutgoingHttpHeaders`: keys are already lower case. */
export const nodeHeadersGetter: CarrierGetter<Record<string, HeaderValue>> = {
  keys: (c) => Object.keys(c),
  get(c, key) {
    const v = c[key];
    return typeof v === 'number' ? String(v) : v;
  },
};

/** Converts a header value that may be a Buffer (Kafka, AMQP) or a number to a string. */
export function headerValueToString(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8');
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  return undefined;
}

function lookupCaseInsensitive(c: Record<string, unknown>, key: string): unknown {
  const exact = c[key];
  if (exact !== undefined) return exact;
  for (const k of Object.keys(c)) if (k.length === key.length && k.toLowerCase() === key) return c[k];
  return undefined;
}

/**
 * Kafka message headers and AMQP `headers` tables: case-insensitive, and values may be
 * `Buffer`, string, or an array of either (kafkajs gives arrays for repeated headers).
 */
export const bufferTextMapGetter: CarrierGetter<Record<string, unknown> | undefined> = {
  keys: (c) => (c ? Object.keys(c) : []),
  get(c, key) {
    if (!c) return undefined;
    const v = lookupCaseInsensitive(c, key);
    if (Array.isArray(v)) {
      const out: string[] = [];
      for (const x of v) {
        const s = headerValueToString(x);
        if (s !== undefined) out.push(s);
      }
      return out.length ? out : undefined;
    }
    return headerValueToString(v);
  },
};

/** A plain object of headers whose key case is unknown (user-built fetch headers, message headers). */
export const recordSetter: CarrierSetter<Record<string, unknown>> = {
  set(c, key, value) {
    for (const k of Object.keys(c)) if (k !== key && k.toLowerCase() === key) delete c[k];
    c[key] = value;
  },
};

/**
 * Joins repeated header lines the way HTTP does (list headers are comma-separated). With
 * `maxLength`, reading stops once the result is longer than that: at most `maxLength + 1`
 * characters come back (enough for a parser to see that the value is over its limit), and
 * lines past that point are never touched, however many there are.
 */
export function joinHeaderValue(v: string | string[] | undefined, maxLength?: number): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string') {
    return maxLength !== undefined && v.length > maxLength + 1 ? v.slice(0, maxLength + 1) : v;
  }
  if (v.length === 0) return undefined;
  if (maxLength === undefined) return v.length === 1 ? v[0] : v.join(',');
  const cap = maxLength + 1;
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const line = v[i]!;
    const room = cap - out.length - (i > 0 ? 1 : 0);
    if (room < 0) break;
    if (i > 0) out += ',';
    if (line.length > room) {
      out += line.slice(0, room);
      break;
    }
    out += line;
  }
  return out;
}
