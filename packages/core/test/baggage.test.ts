import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BaggageMember,
  encodeBaggageKey,
  encodeBaggageValue,
  findBaggageMember,
  MAX_BAGGAGE_BYTES,
  MAX_BAGGAGE_MEMBERS,
  mergeBaggageMember,
  parseBaggage,
  serializeBaggage,
  writeBaggage,
} from '../src/baggage.js';
import { CountingString } from './counting-string.js';

const none = { malformed: 0, excess: 0, truncated: false };
const members = (n: number, prefix = 'm') => Array.from({ length: n }, (_, i) => `${prefix}${i}=v`).join(',');

describe('W3C baggage codec', () => {
  it('parses members, optional whitespace, properties and percent-encoding', () => {
    const r = parseBaggage(' a = 1 ; p1 ; p2=x , branchline=pr-42,c=hello%20world ');
    expect(r).toEqual({
      members: [
        { key: 'a', value: '1', properties: 'p1 ; p2=x' },
        { key: 'branchline', value: 'pr-42' },
        { key: 'c', value: 'hello world' },
      ],
      ...none,
    });
  });

  it('keeps the well-formed members of a header and drops only the malformed ones, counted', () => {
    expect(parseBaggage('a=1,"bad",branchline=pr-1,=oops,c=%zz,d=x y,e=%C3%A9,f')).toEqual({
      members: [
        { key: 'a', value: '1' },
        { key: 'branchline', value: 'pr-1' },
        { key: 'e', value: 'é' },
      ],
      malformed: 5,
      excess: 0,
      truncated: false,
    });
    // Repeated header lines arrive joined with commas: a bad line costs only its own members.
    expect(parseBaggage('branchline=pr-2,"garbage line;;').members).toEqual([
      { key: 'branchline', value: 'pr-2' },
    ]);
  });

  it('drops a percent-encoding that does not decode to UTF-8, as decodeURIComponent would refuse it', () => {
    for (const bad of ['%zz', '%', '%4', '%C3', '%C3a', '%C0%80', '%ED%A0%80', '%F4%90%80%80', '%FF'])
      expect(parseBaggage(`k=${bad},ok=1`), bad).toEqual({
        members: [{ key: 'ok', value: '1' }],
        malformed: 1,
        excess: 0,
        truncated: false,
      });
    expect(parseBaggage('k=%F0%9F%98%80%41').members).toEqual([{ key: 'k', value: '😀A' }]);
  });

  it('decodes percent-encoded keys, as OpenTelemetry JS writes them', () => {
    expect(parseBaggage('a%20b=1,%C3%A9=2').members).toEqual([
      { key: 'a b', value: '1' },
      { key: 'é', value: '2' },
    ]);
    expect(findBaggageMember('branchlin%65=pr-1', 'branchline')).toEqual({ found: true, value: 'pr-1' });
  });

  it('drops properties that break the grammar but keeps their member and its value', () => {
    expect(parseBaggage('branchline=pr-1;p="x",a=1;ok;k = v').members).toEqual([
      { key: 'branchline', value: 'pr-1' },
      { key: 'a', value: '1', properties: 'ok;k = v' },
    ]);
    expect(findBaggageMember('branchline=pr-1;p="x"', 'branchline')).toEqual({ found: true, value: 'pr-1' });
  });

  it('finds one member among malformed ones, and reports what was dropped', () => {
    expect(findBaggageMember('x=1,branchline=pr-7;ttl=3', 'branchline')).toEqual({
      found: true,
      value: 'pr-7',
    });
    expect(findBaggageMember('x=1', 'branchline')).toEqual({ found: false });
    expect(findBaggageMember('x=1,branchline=pr-7,=oops', 'branchline')).toEqual({
      found: true,
      value: 'pr-7',
      dropped: { malformed: 1, excess: 0, truncated: false },
    });
    expect(findBaggageMember('"bad",x=1', 'branchline')).toEqual({
      found: false,
      dropped: { malformed: 1, excess: 0, truncated: false },
    });
  });

  it('findBaggageMember finds a key only in a header parseBaggage reads it from', () => {
    for (const h of ['branchline=pr-1,x=%zz', 'x=%C3,branchline=pr-1']) {
      expect(findBaggageMember(h, 'branchline'), h).toMatchObject({ found: true, value: 'pr-1' });
      expect(parseBaggage(h), h).toMatchObject({ members: [{ key: 'branchline', value: 'pr-1' }] });
    }
  });

  it('says when our own member is the malformed one, so the reader does not guess elsewhere', () => {
    for (const h of ['branchline=pr-"7"', 'branchline=%zz', 'branchline=pr 7', 'branchline'])
      expect(findBaggageMember(h, 'branchline'), h).toEqual({
        found: false,
        error: 'malformed',
        dropped: { malformed: 1, excess: 0, truncated: false },
      });
  });

  it('treats the same member with two different values as ambiguous, and equal duplicates as one', () => {
    expect(findBaggageMember('branchline=a,branchline=b', 'branchline')).toEqual({
      found: false,
      error: 'ambiguous',
    });
    expect(findBaggageMember('branchline=a, branchline=a', 'branchline')).toEqual({
      found: true,
      value: 'a',
    });
    expect(findBaggageMember('branchline=a, branchline=%61', 'branchline')).toEqual({
      found: true,
      value: 'a',
    });
  });

  it('keeps the first 180 well-formed members and drops the rest, counted', () => {
    expect(findBaggageMember(`${members(179)},branchline=k`, 'branchline')).toEqual({
      found: true,
      value: 'k',
    });
    expect(findBaggageMember(`${members(180)},branchline=k`, 'branchline')).toEqual({
      found: false,
      dropped: { malformed: 0, excess: 1, truncated: false },
    });
    // Malformed members do not take a place among the 180.
    expect(findBaggageMember(`${members(179)},"x","y",branchline=k`, 'branchline')).toEqual({
      found: true,
      value: 'k',
      dropped: { malformed: 2, excess: 0, truncated: false },
    });
    const r = parseBaggage(members(200));
    expect(r.members).toHaveLength(MAX_BAGGAGE_MEMBERS);
    expect(r.members.at(-1)).toEqual({ key: 'm179', value: 'v' });
    expect(r.excess).toBe(20);
  });

  it('reads the first 8192 bytes of a longer header: members that end within them count', () => {
    const pad = (n: number) => `p=${'x'.repeat(n - 2)}`; // a member of exactly n characters
    expect(findBaggageMember(`branchline=k,${pad(9000)}`, 'branchline')).toEqual({
      found: true,
      value: 'k',
      dropped: { malformed: 0, excess: 0, truncated: true },
    });
    expect(findBaggageMember(`${pad(9000)},branchline=k`, 'branchline')).toEqual({
      found: false,
      dropped: { malformed: 0, excess: 0, truncated: true },
    });
    // `branchline=k` ends exactly at byte 8192 and a comma follows: it is complete.
    const edge = `${pad(MAX_BAGGAGE_BYTES - 13)},branchline=k`;
    expect(edge).toHaveLength(MAX_BAGGAGE_BYTES);
    expect(findBaggageMember(`${edge},more=1`, 'branchline')).toMatchObject({ found: true, value: 'k' });
    // One byte later it is cut by the boundary, and not read.
    expect(findBaggageMember(`${pad(MAX_BAGGAGE_BYTES - 12)},branchline=k,more=1`, 'branchline')).toEqual({
      found: false,
      dropped: { malformed: 0, excess: 0, truncated: true },
    });
    expect(findBaggageMember(`${pad(MAX_BAGGAGE_BYTES - 13)},branchline=k`, 'branchline')).toEqual({
      found: true,
      value: 'k',
    });
  });

  it('merges our member: appends, replaces in place, keeps properties, drops our own duplicates only', () => {
    expect(mergeBaggageMember(undefined, 'branchline', 'k')).toEqual({
      ok: true,
      header: 'branchline=k',
      changed: true,
    });
    expect(mergeBaggageMember('a=1, b=2', 'branchline', 'k')).toEqual({
      ok: true,
      header: 'a=1, b=2,branchline=k',
      changed: true,
    });
    expect(mergeBaggageMember('a=1,branchline=old;p=1,b=2', 'branchline', 'k')).toEqual({
      ok: true,
      header: 'a=1,branchline=k;p=1,b=2',
      changed: true,
    });
    expect(mergeBaggageMember('branchline=old,a=1,branchline=old2,b=2', 'branchline', 'k')).toEqual({
      ok: true,
      header: 'branchline=k,a=1,b=2',
      changed: true,
    });
    expect(mergeBaggageMember('a=1,branchline=k', 'branchline', 'k')).toEqual({
      ok: true,
      header: 'a=1,branchline=k',
      changed: false,
    });
  });

  it('adds our member next to malformed ones, which it leaves byte for byte', () => {
    const merged = mergeBaggageMember('a=1,,,"bad",branchline=pr 1', 'branchline', 'k');
    expect(merged).toEqual({ ok: true, header: 'a=1,,,"bad",branchline=pr 1,branchline=k', changed: true });
    expect(findBaggageMember(merged.header!, 'branchline')).toMatchObject({ found: true, value: 'k' });
  });

  it('leaves a full header untouched rather than dropping members', () => {
    expect(mergeBaggageMember(members(180), 'branchline', 'k')).toMatchObject({
      ok: false,
      reason: 'too-many-members',
    });
    const big = `p=${'x'.repeat(MAX_BAGGAGE_BYTES - 5)}`;
    expect(mergeBaggageMember(big, 'branchline', 'k')).toEqual({
      ok: false,
      header: big,
      reason: 'oversize',
    });
  });

  it('encodes keys and values so that any string can be written, lone surrogates included', () => {
    expect(encodeBaggageKey('branchline')).toBe('branchline');
    expect(encodeBaggageKey('a b=c;%é')).toBe('a%20b%3Dc%3B%25%C3%A9');
    expect(encodeBaggageValue('pr-42')).toBe('pr-42');
    expect(encodeBaggageValue('a b,"c";%😀')).toBe('a%20b%2C%22c%22%3B%25%F0%9F%98%80');
    expect(encodeBaggageValue('x\uD800y')).toBe('x%EF%BF%BDy');
    expect(encodeBaggageKey('\uDC00')).toBe('%EF%BF%BD');
  });

  it('writes at most 180 members and 8192 bytes, giving the routing key its room first', () => {
    const many: BaggageMember[] = Array.from({ length: 200 }, (_, i) => ({ key: `m${i}`, value: 'v' }));
    const w = writeBaggage([...many, { key: 'branchline', value: 'pr-1' }], 'branchline');
    expect(w.dropped).toBe(21);
    const back = parseBaggage(w.header);
    expect(back.members).toHaveLength(180);
    expect(back.members.at(-1)).toEqual({ key: 'branchline', value: 'pr-1' });
    expect(back).toMatchObject(none);

    const big: BaggageMember[] = Array.from({ length: 5 }, (_, i) => ({
      key: `b${i}`,
      value: 'x'.repeat(3000),
    }));
    const sized = writeBaggage(
      [...big, { key: 'branchline', value: 'pr-1' }, { key: 'small', value: '1' }],
      'branchline',
    );
    expect(sized.header.length).toBeLessThanOrEqual(MAX_BAGGAGE_BYTES);
    expect(parseBaggage(sized.header).members.map((m) => m.key)).toEqual(['b0', 'b1', 'branchline', 'small']);
    expect(sized.dropped).toBe(3);
  });

  it('writes well-formed properties and leaves out the others', () => {
    expect(
      writeBaggage([
        { key: 'a', value: '1', properties: 'ttl=3;secret' },
        { key: 'b', value: '2', properties: ' p = 1 ' },
        { key: 'c', value: '3', properties: 'x,y=1' },
        { key: '', value: 'no key' },
      ]),
    ).toEqual({ header: 'a=1;ttl=3;secret,b=2;p = 1,c=3', dropped: 1, propertiesDropped: 1 });
  });
});

const tokenChar = fc.constantFrom(
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+-.^_`|~".split(''),
);
const token = fc.string({ unit: tokenChar, minLength: 1, maxLength: 12 });
const octet = fc.constantFrom(..."abcXYZ019!#$&'()*+-./:<=>?@[]^_`{|}~".split(''));
const properties = fc
  .array(fc.tuple(token, fc.option(fc.string({ unit: octet, maxLength: 6 }), { nil: undefined })), {
    minLength: 1,
    maxLength: 3,
  })
  .map((ps) => ps.map(([k, v]) => (v === undefined ? k : `${k}=${v}`)).join(';'));
const anyText = fc.string({ unit: 'binary', maxLength: 20 });
const member: fc.Arbitrary<BaggageMember> = fc
  .record({
    key: fc.oneof(token, fc.string({ unit: 'binary', minLength: 1, maxLength: 10 })),
    value: anyText,
    properties: fc.option(properties, { nil: undefined }),
  })
  .map((m) => (m.properties === undefined ? { key: m.key, value: m.value } : (m as BaggageMember)));

// Pieces a header is built from: good members, broken ones, ours in every shape, and noise.
const fragment = fc.oneof(
  fc.constantFrom(
    'branchline=pr-1',
    'branchline=pr-2',
    ' branchline = pr-1 ',
    'branchline=pr%2D1',
    'branchlin%65=pr-1',
    'branchline=pr-1;p=1',
    'branchline=pr-1;"',
    'branchline=pr 1',
    'branchline',
    'branchline=%zz',
    'branchline=%C3',
    '"bad"',
    '=x',
    'x=%zz',
    'x=1',
    'y=a;b=c;d',
    ' ',
    '',
    'k=v ; p',
    'k=é',
  ),
  fc.string({ maxLength: 12 }),
  member.map((m) => serializeBaggage([m])),
);
const header = fc.oneof(
  { weight: 4, arbitrary: fc.array(fragment, { maxLength: 30 }).map((parts) => parts.join(',')) },
  // Near the 180-member limit.
  fc
    .tuple(fc.integer({ min: 170, max: 185 }), fc.array(fragment, { maxLength: 20 }))
    .map(([n, parts]) => [members(n), ...parts].join(',')),
  // Around the 8192-byte boundary.
  fc
    .tuple(fc.integer({ min: 8100, max: 8200 }), fc.array(fragment, { maxLength: 20 }))
    .map(([n, parts]) => [`p=${'x'.repeat(n)}`, ...parts].reverse().join(',')),
  fc
    .tuple(fc.integer({ min: 8150, max: 8192 }), fc.array(fragment, { maxLength: 20 }))
    .map(([n, parts]) => [`p=${'x'.repeat(n)}`, ...parts].join(',')),
);

describe('W3C baggage codec — properties', () => {
  it('never throws on arbitrary strings and bytes up to 16 KiB', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 16384 }),
          fc.string({ unit: 'binary', maxLength: 16384 }),
          fc.uint8Array({ maxLength: 16384 }).map((b) => Buffer.from(b).toString('latin1')),
          header,
        ),
        (s) => {
          parseBaggage(s);
          findBaggageMember(s, 'branchline');
          mergeBaggageMember(s, 'branchline', 'k');
          encodeBaggageKey(s);
          encodeBaggageValue(s);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('findBaggageMember gives the value parseBaggage gives, and reports the same drops', () => {
    fc.assert(
      fc.property(header, fc.constantFrom('branchline', 'x', 'k', 'p'), (h, name) => {
        const parsed = parseBaggage(h);
        const values = [...new Set(parsed.members.filter((m) => m.key === name).map((m) => m.value))];
        const r = findBaggageMember(h, name);
        if (values.length === 1) expect(r).toMatchObject({ found: true, value: values[0] });
        else if (values.length > 1) expect(r).toMatchObject({ found: false, error: 'ambiguous' });
        else expect(r.found === false && r.error !== 'ambiguous').toBe(true);
        const dropped = parsed.malformed > 0 || parsed.excess > 0 || parsed.truncated;
        expect(r.dropped).toEqual(
          dropped
            ? { malformed: parsed.malformed, excess: parsed.excess, truncated: parsed.truncated }
            : undefined,
        );
        expect(parsed.members.length).toBeLessThanOrEqual(MAX_BAGGAGE_MEMBERS);
      }),
      { numRuns: 500 },
    );
  });

  it('keeps a member exactly when decodeURIComponent accepts its value', () => {
    const pctPiece = fc.oneof(
      fc.integer({ min: 0, max: 255 }).map((b) => `%${b.toString(16).padStart(2, '0')}`),
      fc.constantFrom('%', '%4', '%g1', 'a', '-'),
    );
    fc.assert(
      fc.property(fc.array(pctPiece, { maxLength: 8 }), (pieces) => {
        const raw = pieces.join('');
        let expected: string | undefined;
        try {
          expected = decodeURIComponent(raw);
        } catch {
          expected = undefined;
        }
        const r = parseBaggage(`k=${raw}`);
        expect(r.members).toEqual(expected === undefined ? [] : [{ key: 'k', value: expected }]);
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips write → parse for any keys, values and well-formed properties', () => {
    fc.assert(
      fc.property(fc.uniqueArray(member, { selector: (m) => m.key, maxLength: 20 }), (ms) => {
        const w = writeBaggage(ms);
        expect(w).toMatchObject({ dropped: 0, propertiesDropped: 0 });
        const toWellFormed = (s: string) => s.toWellFormed();
        expect(parseBaggage(w.header)).toEqual({
          members: ms.map((m) => ({ ...m, key: toWellFormed(m.key), value: toWellFormed(m.value) })),
          ...none,
        });
      }),
    );
  });

  it('merging keeps every other member, in order', () => {
    fc.assert(
      fc.property(fc.uniqueArray(member, { selector: (m) => m.key, maxLength: 30 }), (ms) => {
        const merged = mergeBaggageMember(serializeBaggage(ms), 'branchline', 'pr-1');
        expect(merged.ok).toBe(true);
        const parsed = parseBaggage(merged.header!);
        expect(parsed).toMatchObject(none);
        const others = parsed.members.filter((m) => m.key !== 'branchline');
        expect(others.map((m) => m.key)).toEqual(ms.filter((m) => m.key !== 'branchline').map((m) => m.key));
        expect(parsed.members.filter((m) => m.key === 'branchline').map((m) => m.value)).toEqual(['pr-1']);
      }),
    );
  });

  it('parse work grows linearly with input size (no pathological input)', () => {
    const shapes = [
      (n: number) => 'a'.repeat(n),
      (n: number) => ' '.repeat(n),
      (n: number) => ','.repeat(n),
      (n: number) => '"'.repeat(n),
      (n: number) => '='.repeat(n),
      (n: number) => '%'.repeat(n),
      (n: number) => `k=${'%41'.repeat(Math.floor(n / 3))}`,
      (n: number) => `k=${'%C3'.repeat(Math.floor(n / 3))}`,
      (n: number) => `k=v;${';p'.repeat(Math.floor(n / 2))}`,
      (n: number) => `k=v;${'p '.repeat(Math.floor(n / 2))}`,
      (n: number) => 'k=v,'.repeat(Math.floor(n / 4)),
      (n: number) => 'k=%,'.repeat(Math.floor(n / 4)),
      (n: number) => 'k=a,k=b,'.repeat(Math.floor(n / 8)),
      (n: number) => `k=${'x'.repeat(n / 2 - 3)},k=${'x'.repeat(n / 2 - 3)}`,
      (n: number) => `k=v${' '.repeat(n)};p`,
      (n: number) => `k${' '.repeat(n)}`,
    ];
    const reads = (header: string) => {
      let total = 0;
      for (const run of [
        (s: string) => findBaggageMember(s, 'k'),
        (s: string) => parseBaggage(s),
        (s: string) => mergeBaggageMember(s, 'k', 'v'),
      ]) {
        const counted = new CountingString(header);
        run(counted.asString);
        total += counted.reads;
      }
      return total;
    };
    for (const shape of shapes) {
      const small = shape(1000);
      const large = shape(8000);
      // Each character is read a small constant number of times, whatever the input's shape;
      // quadratic behaviour would read the large input ~64x as often as the small one.
      expect(reads(small), shape.toString()).toBeLessThanOrEqual(16 * small.length);
      expect(reads(large), shape.toString()).toBeLessThanOrEqual(16 * large.length);
      expect(reads(large) / reads(small), shape.toString()).toBeLessThan(9);
      // Past 8192 bytes nothing more is read.
      expect(reads(shape(64_000)), shape.toString()).toBeLessThanOrEqual(reads(shape(8200)) + 64);
    }
  });
});
