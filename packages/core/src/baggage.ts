/**
 * W3C Baggage (https://www.w3.org/TR/baggage/) codec, bounded and total: no input makes these
 * functions throw, and every loop is a single pass over the string.
 */

/** Largest baggage header we read or write, in bytes (W3C limit). */
export const MAX_BAGGAGE_BYTES = 8192;
/** Most list members we read or write. */
export const MAX_BAGGAGE_MEMBERS = 180;

export interface BaggageMember {
  key: string;
  /** Decoded value. */
  value: string;
  /** Raw property text after the value (without the leading `;`), kept verbatim on re-serialize. */
  properties?: string;
}

export type BaggageParse =
  | { ok: true; members: BaggageMember[] }
  | { ok: false; reason: 'oversize' | 'too-many-members' | 'malformed'; at?: number };

// tchar from RFC 9110: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA
const TOKEN = new Uint8Array(128);
// baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
const OCTET = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) TOKEN[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TOKEN[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TOKEN[c] = 1;
for (const ch of "!#$%&'*+-.^_`|~") TOKEN[ch.charCodeAt(0)] = 1;
for (let c = 0x21; c <= 0x7e; c++) {
  if (c !== 0x22 && c !== 0x2c && c !== 0x3b && c !== 0x5c) OCTET[c] = 1;
}

const SP = 0x20;
const TAB = 0x09;
const COMMA = 0x2c;
const SEMI = 0x3b;
const EQ = 0x3d;
const PCT = 0x25;

function isOws(c: number): boolean {
  return c === SP || c === TAB;
}

function byteLength(s: string): number {
  // Fast path: ASCII strings (all valid baggage) have length === bytes.
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s);
  return s.length;
}

function decodeValue(raw: string): string | undefined {
  if (raw.indexOf('%') === -1) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

/**
 * Scans one list member starting at `i` (after OWS). Calls back with key/value bounds.
 * Returns the index just past the member (at a comma or end), or -1 if it is malformed.
 */
interface Cursor {
  memberStart: number;
  keyStart: number;
  keyEnd: number;
  valStart: number;
  valEnd: number;
  propStart: number;
  propEnd: number;
}

function newCursor(): Cursor {
  return { memberStart: 0, keyStart: 0, keyEnd: 0, valStart: 0, valEnd: 0, propStart: -1, propEnd: -1 };
}

function scanMember(s: string, i: number, cur: Cursor): number {
  const n = s.length;
  cur.keyStart = i;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c < 128 && TOKEN[c] === 1) i++;
    else break;
  }
  cur.keyEnd = i;
  if (cur.keyEnd === cur.keyStart) return -1;
  while (i < n && isOws(s.charCodeAt(i))) i++;
  if (i >= n || s.charCodeAt(i) !== EQ) return -1;
  i++;
  while (i < n && isOws(s.charCodeAt(i))) i++;
  cur.valStart = i;
  while (i < n) {
    const c = s.charCodeAt(i);
    if (c < 128 && OCTET[c] === 1) i++;
    else break;
  }
  cur.valEnd = i;
  while (i < n && isOws(s.charCodeAt(i))) i++;
  cur.propStart = cur.propEnd = -1;
  if (i < n && s.charCodeAt(i) === SEMI) {
    cur.propStart = i + 1;
    // Properties: key [= value] separated by ';'. Validate character classes only.
    i++;
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c === COMMA) break;
      if (c < 128 && (OCTET[c] === 1 || c === SEMI || isOws(c))) i++;
      else return -1;
    }
    let end = i;
    while (end > cur.propStart && isOws(s.charCodeAt(end - 1))) end--;
    cur.propEnd = end;
  }
  if (i < n && s.charCodeAt(i) !== COMMA) return -1;
  return i;
}

const END = -2;
const MALFORMED = -1;

/**
 * The one member loop every function here uses: skips OWS and empty members from `i`, scans the
 * next member into `cur` (its start in `cur.memberStart`), and returns the index just past it (a
 * comma or the end), `END` when no member is left, or `MALFORMED`.
 */
function stepMember(s: string, i: number, cur: Cursor): number {
  const n = s.length;
  for (;;) {
    while (i < n && isOws(s.charCodeAt(i))) i++;
    if (i >= n) return END;
    if (s.charCodeAt(i) !== COMMA) break;
    i++;
  }
  cur.memberStart = i;
  return scanMember(s, i, cur);
}

function checkSize(header: string): BaggageParse | undefined {
  if (header.length > MAX_BAGGAGE_BYTES || byteLength(header) > MAX_BAGGAGE_BYTES) {
    return { ok: false, reason: 'oversize' };
  }
  return undefined;
}

/** Parses a whole baggage header. Empty list members (`a=1,,b=2`) are tolerated and dropped. */
export function parseBaggage(header: string): BaggageParse {
  const size = checkSize(header);
  if (size) return size;
  const members: BaggageMember[] = [];
  const cur: Cursor = newCursor();
  for (let i = 0; ; ) {
    const next = stepMember(header, i, cur);
    if (next === END) break;
    if (next === MALFORMED) return { ok: false, reason: 'malformed', at: cur.memberStart };
    const value = decodeValue(header.slice(cur.valStart, cur.valEnd));
    if (value === undefined) return { ok: false, reason: 'malformed', at: cur.valStart };
    const m: BaggageMember = { key: header.slice(cur.keyStart, cur.keyEnd), value };
    if (cur.propStart >= 0 && cur.propEnd > cur.propStart)
      m.properties = header.slice(cur.propStart, cur.propEnd).trimStart();
    members.push(m);
    if (members.length > MAX_BAGGAGE_MEMBERS) return { ok: false, reason: 'too-many-members' };
    i = next + 1;
  }
  return { ok: true, members };
}

export type MemberLookup =
  | { found: true; value: string }
  | { found: false; error?: 'oversize' | 'too-many-members' | 'malformed' | 'ambiguous' };

const NOT_FOUND: MemberLookup = { found: false };
const sharedCursor: Cursor = newCursor();

function keyEquals(s: string, start: number, end: number, name: string): boolean {
  if (end - start !== name.length) return false;
  return s.startsWith(name, start);
}

/**
 * Finds one member's value without building the member list: the whole header is still
 * validated (a malformed header yields no value rather than a guess), but nothing else is
 * allocated. A member that appears twice with different values is `ambiguous`.
 */
export function findBaggageMember(header: string, name: string): MemberLookup {
  if (header.length === 0) return NOT_FOUND;
  if (checkSize(header)) return { found: false, error: 'oversize' };
  const cur = sharedCursor;
  let count = 0;
  let value: string | undefined;
  for (let i = 0; ; ) {
    const next = stepMember(header, i, cur);
    if (next === END) break;
    if (next === MALFORMED) return { found: false, error: 'malformed' };
    if (++count > MAX_BAGGAGE_MEMBERS) return { found: false, error: 'too-many-members' };
    if (keyEquals(header, cur.keyStart, cur.keyEnd, name)) {
      const v = decodeValue(header.slice(cur.valStart, cur.valEnd));
      if (v === undefined) return { found: false, error: 'malformed' };
      if (value !== undefined && value !== v) return { found: false, error: 'ambiguous' };
      value = v;
    }
    i = next + 1;
  }
  return value === undefined ? NOT_FOUND : { found: true, value };
}

/** Percent-encodes what is not a baggage-octet (and `%` itself). */
export function encodeBaggageValue(value: string): string {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128 || OCTET[c] !== 1 || c === PCT) return encodeSlow(value);
  }
  return value;
}

function encodeSlow(value: string): string {
  let out = '';
  for (const ch of value) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c < 128 && OCTET[c] === 1 && c !== PCT) out += ch;
    else
      out += encodeURIComponent(ch).replace(
        /[!'()*]/g,
        (x) => `%${x.charCodeAt(0).toString(16).toUpperCase()}`,
      );
  }
  return out;
}

export function serializeBaggage(members: readonly BaggageMember[]): string {
  let out = '';
  for (const m of members) {
    if (out) out += ',';
    out += `${m.key}=${encodeBaggageValue(m.value)}`;
    if (m.properties) out += `;${m.properties}`;
  }
  return out;
}

export type MergeResult =
  | { ok: true; header: string; changed: boolean }
  | { ok: false; header: string | undefined; reason: 'oversize' | 'too-many-members' | 'malformed' };

/**
 * Puts `name=value` into an existing baggage header: replaces that member in place if it is
 * there, appends it otherwise. Every other member is kept byte for byte and in order. An
 * existing header that cannot be parsed, or a result over the limits, leaves the header as it
 * was (`ok: false`) — we never drop someone else's baggage to make room for ours.
 */
export function mergeBaggageMember(existing: string | undefined, name: string, value: string): MergeResult {
  const encoded = `${name}=${encodeBaggageValue(value)}`;
  if (existing === undefined || existing.length === 0) return { ok: true, header: encoded, changed: true };
  const size = checkSize(existing);
  if (size) return { ok: false, header: existing, reason: 'oversize' };
  const cur: Cursor = newCursor();
  let count = 0;
  let out = '';
  let last = 0;
  let replaced = false;
  for (let i = 0; ; ) {
    const next = stepMember(existing, i, cur);
    if (next === END) break;
    if (next === MALFORMED) return { ok: false, header: existing, reason: 'malformed' };
    count++;
    if (keyEquals(existing, cur.keyStart, cur.keyEnd, name)) {
      const start = cur.memberStart;
      if (!replaced) {
        // Replace the value in place; keep the member's properties as they were.
        out += existing.slice(last, start) + encoded;
        last = cur.propStart >= 0 ? cur.propStart - 1 : cur.valEnd;
        replaced = true;
      } else {
        // A second copy of our member: drop it together with the comma before it.
        let cut = start;
        while (cut > last && (isOws(existing.charCodeAt(cut - 1)) || existing.charCodeAt(cut - 1) === COMMA))
          cut--;
        out += existing.slice(last, cut);
        last = next;
      }
    }
    i = next + 1;
  }
  if (count > MAX_BAGGAGE_MEMBERS) return { ok: false, header: existing, reason: 'too-many-members' };
  let header: string;
  if (replaced) header = out + existing.slice(last);
  else {
    if (count + 1 > MAX_BAGGAGE_MEMBERS) return { ok: false, header: existing, reason: 'too-many-members' };
    header = `${existing},${encoded}`;
  }
  if (byteLength(header) > MAX_BAGGAGE_BYTES) return { ok: false, header: existing, reason: 'oversize' };
  return { ok: true, header, changed: header !== existing };
}
