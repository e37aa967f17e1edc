/**
 * W3C Baggage (https://www.w3.org/TR/baggage/) codec, bounded and total: no input makes these
 * functions throw, every loop is a single pass, and a header is read no further than its first
 * 8192 characters.
 *
 * Reading keeps every well-formed member and drops the others, as the OpenTelemetry
 * propagators of JS, Go and Java do: one bad member someone else wrote must not cost a request
 * its routing key. What was dropped is reported, so the caller can count it.
 */

/** Largest baggage header we read or write, in bytes (W3C limit). */
export const MAX_BAGGAGE_BYTES = 8192;
/** Most list members we read or write. */
export const MAX_BAGGAGE_MEMBERS = 180;

export interface BaggageMember {
  /** Decoded key. */
  key: string;
  /** Decoded value. */
  value: string;
  /** Property text after the value (without the leading `;`), kept verbatim on re-serialize. */
  properties?: string;
}

/** What reading a header left out. */
export interface BaggageDrops {
  /** Members that do not follow the grammar, or whose percent-encoding does not decode. */
  malformed: number;
  /** Well-formed members after the 180th. */
  excess: number;
  /**
   * The header is longer than 8192 bytes: whatever does not end within them (a member cut by
   * the boundary and everything after it) was not read.
   */
  truncated: boolean;
}

export interface BaggageParse extends BaggageDrops {
  /** The well-formed members, in order (a key may occur more than once). */
  members: BaggageMember[];
}

// Character classes, 0 = not in the class, 1 = in it, 2 = in it and written as is (all but `%`).
// tchar from RFC 9110: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA
const TOKEN = new Uint8Array(128);
// baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
const OCTET = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 2;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 2;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 2;
for (const ch of "!#$&'*+-.^_`|~") TOKEN[ch.charCodeAt(0)] = 2;
TOKEN[0x25] = 1;
for (let c = 0x21; c <= 0x7e; c++) {
  if (c !== 0x22 && c !== 0x2c && c !== 0x3b && c !== 0x5c) OCTET[c] = 2;
}
OCTET[0x25] = 1;

const SP = 0x20;
const TAB = 0x09;
const COMMA = 0x2c;
const SEMI = 0x3b;
const EQ = 0x3d;
const PCT = 0x25;

function isOws(c: number): boolean {
  return c === SP || c === TAB;
}

function isToken(c: number): boolean {
  return c < 128 && TOKEN[c] !== 0;
}

function isOctet(c: number): boolean {
  return c < 128 && OCTET[c] !== 0;
}

function byteLength(s: string): number {
  // Fast path: ASCII strings (all valid baggage) have length === bytes.
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s);
  return s.length;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/**
 * Whether `decodeURIComponent(s.slice(start, end))` succeeds: every `%` starts two hex digits,
 * and the bytes they spell are well-formed UTF-8 (no overlong forms, surrogates or code points
 * past U+10FFFF). Checked without allocating, so members we do not want cost no garbage.
 */
function percentDecodes(s: string, start: number, end: number): boolean {
  let need = 0; // continuation bytes still expected
  let lo = 0x80; // allowed range of the next continuation byte
  let hi = 0xbf;
  for (let i = start; i < end; i++) {
    if (s.charCodeAt(i) !== PCT) {
      if (need !== 0) return false;
      continue;
    }
    if (i + 2 >= end) return false;
    const h = hexDigit(s.charCodeAt(i + 1));
    const l = hexDigit(s.charCodeAt(i + 2));
    if (h < 0 || l < 0) return false;
    const b = (h << 4) | l;
    i += 2;
    if (need !== 0) {
      if (b < lo || b > hi) return false;
      need--;
      lo = 0x80;
      hi = 0xbf;
      continue;
    }
    if (b < 0x80) continue;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      else if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      else if (b === 0xf4) hi = 0x8f;
    } else return false;
  }
  return need === 0;
}

function decoded(s: string, start: number, end: number, hasPercent: boolean): string {
  const raw = s.slice(start, end);
  // percentDecodes() has already accepted the text: decodeURIComponent cannot throw here.
  return hasPercent ? decodeURIComponent(raw) : raw;
}

/** Where one list member's parts are, filled in by `stepMember`. */
interface Cursor {
  memberStart: number;
  keyStart: number;
  keyEnd: number;
  keyPct: boolean;
  valStart: number;
  valEnd: number;
  valPct: boolean;
  /** Property text bounds, or -1 when the member has none (or only malformed ones, dropped). */
  propStart: number;
  propEnd: number;
  /** The member follows the grammar and its key and value decode. */
  ok: boolean;
}

function newCursor(): Cursor {
  return {
    memberStart: 0,
    keyStart: 0,
    keyEnd: 0,
    keyPct: false,
    valStart: 0,
    valEnd: 0,
    valPct: false,
    propStart: -1,
    propEnd: -1,
    ok: false,
  };
}

function skipOws(s: string, i: number, end: number): number {
  while (i < end && isOws(s.charCodeAt(i))) i++;
  return i;
}

function skipToComma(s: string, i: number, end: number): number {
  while (i < end && s.charCodeAt(i) !== COMMA) i++;
  return i;
}

/**
 * Scans properties from `i` (just after a member's `;`) up to the next comma: `key [= value]`
 * separated by `;`, with optional whitespace around each part. Sets `cur.propStart/propEnd`
 * (both -1 when a property breaks the grammar: the properties are dropped, the member is kept,
 * as OpenTelemetry keeps it) and returns the index of the comma or `end`.
 */
function scanProperties(s: string, i: number, end: number, cur: Cursor): number {
  i = skipOws(s, i, end);
  cur.propStart = i;
  let last = i; // just past the last non-whitespace character of the properties
  for (;;) {
    const keyStart = i;
    while (i < end && isToken(s.charCodeAt(i))) i++;
    if (i === keyStart) break;
    last = i;
    i = skipOws(s, i, end);
    if (i < end && s.charCodeAt(i) === EQ) {
      last = i + 1;
      i = skipOws(s, i + 1, end);
      const valueStart = i;
      while (i < end && isOctet(s.charCodeAt(i))) i++;
      if (i > valueStart) last = i;
      i = skipOws(s, i, end);
    }
    if (i >= end || s.charCodeAt(i) === COMMA) {
      cur.propEnd = last;
      return i;
    }
    if (s.charCodeAt(i) !== SEMI) break;
    i = skipOws(s, i + 1, end);
  }
  cur.propStart = cur.propEnd = -1;
  return skipToComma(s, i, end);
}

/** Scans one member from `i` (not OWS, not a comma) into `cur`; returns the index of the comma or `end`. */
function scanMember(s: string, i: number, end: number, cur: Cursor): number {
  cur.ok = false;
  cur.propStart = cur.propEnd = -1;
  cur.keyStart = i;
  let pct = false;
  for (; i < end; i++) {
    const c = s.charCodeAt(i);
    if (!isToken(c)) break;
    if (c === PCT) pct = true;
  }
  cur.keyEnd = i;
  cur.keyPct = pct;
  if (i === cur.keyStart) return skipToComma(s, i, end);
  i = skipOws(s, i, end);
  if (i >= end || s.charCodeAt(i) !== EQ) return skipToComma(s, i, end);
  i = skipOws(s, i + 1, end);
  cur.valStart = i;
  pct = false;
  for (; i < end; i++) {
    const c = s.charCodeAt(i);
    if (!isOctet(c)) break;
    if (c === PCT) pct = true;
  }
  cur.valEnd = i;
  cur.valPct = pct;
  i = skipOws(s, i, end);
  if (i < end && s.charCodeAt(i) === SEMI) i = scanProperties(s, i + 1, end, cur);
  else if (i < end && s.charCodeAt(i) !== COMMA) return skipToComma(s, i, end);
  cur.ok =
    (!cur.keyPct || percentDecodes(s, cur.keyStart, cur.keyEnd)) &&
    (!cur.valPct || percentDecodes(s, cur.valStart, cur.valEnd));
  return i;
}

const END = -1;

/**
 * The one member loop every function here uses: skips OWS and empty members from `i`, scans
 * the next member into `cur` (`cur.ok` says whether it is well-formed) and returns the index
 * just past it (a comma or `end`), or `END` when no member is left within `end`. `end` is the
 * read window: `min(length, MAX_BAGGAGE_BYTES)`. In a longer header a member counts only if a
 * comma follows it by the boundary; the one cut by it ends the scan.
 */
function stepMember(s: string, i: number, end: number, cur: Cursor): number {
  for (;;) {
    i = skipOws(s, i, end);
    if (i >= end) return END;
    if (s.charCodeAt(i) !== COMMA) break;
    i++;
  }
  cur.memberStart = i;
  const next = scanMember(s, i, end, cur);
  if (next === end && end < s.length && s.charCodeAt(end) !== COMMA) return END;
  return next;
}

function windowOf(s: string): number {
  return Math.min(s.length, MAX_BAGGAGE_BYTES);
}

/** Whether the member under `cur` has the key `name` (keys are compared decoded). */
function keyIs(s: string, cur: Cursor, name: string): boolean {
  if (!cur.keyPct) return cur.keyEnd - cur.keyStart === name.length && s.startsWith(name, cur.keyStart);
  if (!percentDecodes(s, cur.keyStart, cur.keyEnd)) return false;
  return decodeURIComponent(s.slice(cur.keyStart, cur.keyEnd)) === name;
}

/**
 * Parses a baggage header into its well-formed members. Malformed members, members past the
 * 180th and whatever lies past the first 8192 bytes are dropped and reported; empty list
 * members (`a=1,,b=2`) are not members and are skipped silently.
 */
export function parseBaggage(header: string): BaggageParse {
  const members: BaggageMember[] = [];
  let malformed = 0;
  let excess = 0;
  const end = windowOf(header);
  const cur = newCursor();
  for (let i = 0; ; ) {
    const next = stepMember(header, i, end, cur);
    if (next === END) break;
    i = next + 1;
    if (!cur.ok) malformed++;
    else if (members.length >= MAX_BAGGAGE_MEMBERS) excess++;
    else {
      const m: BaggageMember = {
        key: decoded(header, cur.keyStart, cur.keyEnd, cur.keyPct),
        value: decoded(header, cur.valStart, cur.valEnd, cur.valPct),
      };
      if (cur.propStart >= 0) m.properties = header.slice(cur.propStart, cur.propEnd);
      members.push(m);
    }
  }
  return { members, malformed, excess, truncated: end < header.length };
}

export type MemberLookup =
  | { found: true; value: string; dropped?: BaggageDrops }
  | {
      found: false;
      /**
       * `malformed`: the only members with this key were malformed (dropped). `ambiguous`: the
       * key occurs twice with different values. Either way there is no value, and no guess.
       */
      error?: 'malformed' | 'ambiguous';
      dropped?: BaggageDrops;
    };

const NOT_FOUND: MemberLookup = Object.freeze({ found: false });
const sharedCursor: Cursor = newCursor();

/**
 * One member's value, as `parseBaggage` would give it, without building the member list:
 * the same scan over the same window, so the two always agree (a property test holds them to
 * it). A key that occurs twice with different values is `ambiguous`. `dropped` is set when
 * the header had members that were left out, for the caller to count; a header with nothing
 * to report and no such member allocates nothing.
 */
export function findBaggageMember(header: string, name: string): MemberLookup {
  if (header.length === 0) return NOT_FOUND;
  const end = windowOf(header);
  const cur = sharedCursor;
  let count = 0;
  let malformed = 0;
  let excess = 0;
  let namedMalformed = false;
  let valStart = -1;
  let valEnd = -1;
  let valPct = false;
  let value: string | undefined;
  let ambiguous = false;
  for (let i = 0; ; ) {
    const next = stepMember(header, i, end, cur);
    if (next === END) break;
    i = next + 1;
    if (!cur.ok) {
      malformed++;
      if (!namedMalformed && cur.keyEnd > cur.keyStart && keyIs(header, cur, name)) namedMalformed = true;
      continue;
    }
    if (count >= MAX_BAGGAGE_MEMBERS) {
      excess++;
      continue;
    }
    count++;
    if (ambiguous || !keyIs(header, cur, name)) continue;
    if (valStart < 0) {
      valStart = cur.valStart;
      valEnd = cur.valEnd;
      valPct = cur.valPct;
      continue;
    }
    // The same key again: equal raw text is the same value; otherwise compare decoded.
    const len = cur.valEnd - cur.valStart;
    if (len === valEnd - valStart && header.startsWith(header.slice(valStart, valEnd), cur.valStart))
      continue;
    value ??= decoded(header, valStart, valEnd, valPct);
    if (decoded(header, cur.valStart, cur.valEnd, cur.valPct) !== value) ambiguous = true;
  }
  const truncated = end < header.length;
  const dropped = malformed > 0 || excess > 0 || truncated ? { malformed, excess, truncated } : undefined;
  if (ambiguous)
    return dropped ? { found: false, error: 'ambiguous', dropped } : { found: false, error: 'ambiguous' };
  if (valStart >= 0) {
    value ??= decoded(header, valStart, valEnd, valPct);
    return dropped ? { found: true, value, dropped } : { found: true, value };
  }
  if (namedMalformed)
    return dropped ? { found: false, error: 'malformed', dropped } : { found: false, error: 'malformed' };
  return dropped ? { found: false, dropped } : NOT_FOUND;
}

const HEX = '0123456789ABCDEF';

function percentByte(b: number): string {
  return `%${HEX[b >> 4]}${HEX[b & 15]}`;
}

/** Percent-encodes `s` from `from` on: the UTF-8 bytes of every character `table` does not mark 2. */
function encodeFrom(s: string, from: number, table: Uint8Array): string {
  let out = s.slice(0, from);
  const n = s.length;
  for (let i = from; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 128) {
      out += table[c] === 2 ? s[i] : percentByte(c);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    // A lone surrogate has no UTF-8 form: write U+FFFD, as TextEncoder does, instead of throwing.
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x800) out += percentByte(0xc0 | (c >> 6)) + percentByte(0x80 | (c & 63));
    else if (c < 0x10000)
      out +=
        percentByte(0xe0 | (c >> 12)) + percentByte(0x80 | ((c >> 6) & 63)) + percentByte(0x80 | (c & 63));
    else
      out +=
        percentByte(0xf0 | (c >> 18)) +
        percentByte(0x80 | ((c >> 12) & 63)) +
        percentByte(0x80 | ((c >> 6) & 63)) +
        percentByte(0x80 | (c & 63));
  }
  return out;
}

/** Percent-encodes what is not a baggage-octet (and `%` itself). Never throws. */
export function encodeBaggageValue(value: string): string {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128 || OCTET[c] !== 2) return encodeFrom(value, i, OCTET);
  }
  return value;
}

/**
 * Percent-encodes what is not a token character (and `%` itself), so that any key an
 * application puts in its baggage can be written. Keys are decoded on reading, as
 * OpenTelemetry JS does; a plain token key (`branchline`) is written as it is.
 */
export function encodeBaggageKey(key: string): string {
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c >= 128 || TOKEN[c] !== 2) return encodeFrom(key, i, TOKEN);
  }
  return key;
}

/** `text` as member properties (`p1;p2=v`) without surrounding whitespace, or undefined if it is not. */
function cleanProperties(text: string): string | undefined {
  const cur = sharedCursor;
  const n = text.length;
  if (scanProperties(text, 0, n, cur) !== n || cur.propStart < 0) return undefined;
  return cur.propStart === 0 && cur.propEnd === n ? text : text.slice(cur.propStart, cur.propEnd);
}

export interface SerializedBaggage {
  header: string;
  /**
   * Members left out: an empty key, or a member that would take the header past 8192 bytes
   * or 180 members.
   */
  dropped: number;
  /** Members written without their properties, which did not follow the grammar. */
  propertiesDropped: number;
}

/**
 * Writes members as a header the reader accepts in full: keys and values percent-encoded,
 * properties kept when well-formed, and at most 8192 bytes and 180 members. Members that do
 * not fit are left out (later ones that do fit are still written); the member named `keep`, if
 * any, is given its room first, so the routing key survives a crowded header.
 */
export function writeBaggage(members: readonly BaggageMember[], keep?: string): SerializedBaggage {
  const out: SerializedBaggage = { header: '', dropped: 0, propertiesDropped: 0 };
  let keepAt = -1; // index of the `keep` member
  let reserveFor = -1; // the same, when it can fit: members before it leave it room
  let keepText = '';
  if (keep !== undefined) {
    for (let i = 0; i < members.length; i++) {
      if (members[i]!.key !== keep) continue;
      keepAt = i;
      keepText = memberText(members[i]!, out);
      if (keepText.length > 0 && keepText.length <= MAX_BAGGAGE_BYTES) reserveFor = i;
      break;
    }
  }
  let header = '';
  let count = 0;
  for (let i = 0; i < members.length; i++) {
    const text = i === keepAt ? keepText : memberText(members[i]!, out);
    if (text.length === 0) {
      out.dropped++;
      continue;
    }
    const pending = i < reserveFor;
    const bytes = header.length + (count > 0 ? 1 : 0) + text.length + (pending ? 1 + keepText.length : 0);
    if (bytes > MAX_BAGGAGE_BYTES || count + 1 + (pending ? 1 : 0) > MAX_BAGGAGE_MEMBERS) {
      out.dropped++;
      continue;
    }
    header += count > 0 ? `,${text}` : text;
    count++;
  }
  out.header = header;
  return out;
}

/** One member as written: `key=value[;properties]`, or '' when the key is empty. */
function memberText(m: BaggageMember, out: SerializedBaggage): string {
  const key = encodeBaggageKey(m.key);
  if (key.length === 0) return '';
  const text = `${key}=${encodeBaggageValue(m.value)}`;
  if (m.properties === undefined || m.properties.length === 0) return text;
  const properties = cleanProperties(m.properties);
  if (properties !== undefined) return `${text};${properties}`;
  out.propertiesDropped++;
  return text;
}

/** `writeBaggage(members).header`: the members as a header within the limits. */
export function serializeBaggage(members: readonly BaggageMember[]): string {
  return writeBaggage(members).header;
}

export type MergeResult =
  | { ok: true; header: string; changed: boolean }
  | { ok: false; header: string | undefined; reason: 'oversize' | 'too-many-members' };

/**
 * Puts `name=value` into an existing baggage header: replaces that member in place if it is
 * there, appends it otherwise. Every other member, malformed ones included, is kept byte for
 * byte and in order. A header over the limits, or a result that would be, is left as it was
 * (`ok: false`) — we never drop someone else's baggage to make room for ours.
 */
export function mergeBaggageMember(existing: string | undefined, name: string, value: string): MergeResult {
  const encoded = `${encodeBaggageKey(name)}=${encodeBaggageValue(value)}`;
  if (existing === undefined || existing.length === 0) return { ok: true, header: encoded, changed: true };
  if (existing.length > MAX_BAGGAGE_BYTES) return { ok: false, header: existing, reason: 'oversize' };
  const end = existing.length;
  const cur: Cursor = newCursor();
  let count = 0;
  let out = '';
  let last = 0;
  let replaced = false;
  for (let i = 0; ; ) {
    const next = stepMember(existing, i, end, cur);
    if (next === END) break;
    i = next + 1;
    if (!cur.ok) continue;
    if (!keyIs(existing, cur, name)) {
      count++;
      continue;
    }
    const start = cur.memberStart;
    if (!replaced) {
      // Replace key and value in place; keep the member's properties as they were.
      out += existing.slice(last, start) + encoded;
      last = cur.valEnd;
      replaced = true;
      count++;
    } else {
      // A second copy of our member: drop it together with the comma before it.
      let cut = start;
      while (cut > last && (isOws(existing.charCodeAt(cut - 1)) || existing.charCodeAt(cut - 1) === COMMA))
        cut--;
      out += existing.slice(last, cut);
      last = next;
    }
  }
  let header: string;
  if (replaced) header = out + existing.slice(last);
  else {
    count++;
    header = `${existing},${encoded}`;
  }
  if (count > MAX_BAGGAGE_MEMBERS) return { ok: false, header: existing, reason: 'too-many-members' };
  if (byteLength(header) > MAX_BAGGAGE_BYTES) return { ok: false, header: existing, reason: 'oversize' };
  return { ok: true, header, changed: header !== existing };
}
