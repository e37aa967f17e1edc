import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  findBaggageMember,
  MAX_BAGGAGE_BYTES,
  mergeBaggageMember,
  parseBaggage,
  serializeBaggage,
} from '../src/baggage.js';

describe('W3C baggage codec', () => {
  it('parses members, optional whitespace, properties and percent-encoding', () => {
    const r = parseBaggage(' a = 1 ; p1 ; p2=x , branchline=pr-42,c=hello%20world ');
    expect(r).toEqual({
      ok: true,
      members: [
        { key: 'a', value: '1', properties: 'p1 ; p2=x' },
        { key: 'branchline', value: 'pr-42' },
        { key: 'c', value: 'hello world' },
      ],
    });
  });

  it('finds one member without a full parse and rejects a malformed header as a whole', () => {
    expect(findBaggageMember('x=1,branchline=pr-7;ttl=3', 'branchline')).toEqual({
      found: true,
      value: 'pr-7',
    });
    expect(findBaggageMember('x=1', 'branchline')).toEqual({ found: false });
    expect(findBaggageMember('x=1,branchline=pr-7,=oops', 'branchline')).toEqual({
      found: false,
      error: 'malformed',
    });
    expect(findBaggageMember('branchline=pr-"7"', 'branchline')).toEqual({
      found: false,
      error: 'malformed',
    });
    expect(findBaggageMember('branchline=%zz', 'branchline')).toEqual({ found: false, error: 'malformed' });
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
  });

  it('refuses headers over 8192 bytes or 180 members', () => {
    const big = `branchline=k,pad=${'x'.repeat(MAX_BAGGAGE_BYTES)}`;
    expect(findBaggageMember(big, 'branchline')).toEqual({ found: false, error: 'oversize' });
    const many = Array.from({ length: 181 }, (_, i) => `m${i}=v`).join(',');
    expect(findBaggageMember(`${many},branchline=k`, 'branchline')).toEqual({
      found: false,
      error: 'too-many-members',
    });
    expect(parseBaggage(many)).toEqual({ ok: false, reason: 'too-many-members' });
    const exactly180 = Array.from({ length: 179 }, (_, i) => `m${i}=v`).join(',');
    expect(findBaggageMember(`${exactly180},branchline=k`, 'branchline')).toEqual({
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

  it('leaves a malformed or full header untouched rather than dropping members', () => {
    expect(mergeBaggageMember('a=1,,,"bad"', 'branchline', 'k')).toEqual({
      ok: false,
      header: 'a=1,,,"bad"',
      reason: 'malformed',
    });
    const full = Array.from({ length: 180 }, (_, i) => `m${i}=v`).join(',');
    expect(mergeBaggageMember(full, 'branchline', 'k').ok).toBe(false);
  });
});

const tokenChar = fc.constantFrom(
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&'*+-.^_`|~".split(''),
);
const token = fc.string({ unit: tokenChar, minLength: 1, maxLength: 12 });
const member = fc.record({ key: token, value: fc.string({ maxLength: 20 }) });

describe('W3C baggage codec — properties', () => {
  it('never throws on arbitrary strings and bytes up to 16 KiB', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 16384 }),
          fc.uint8Array({ maxLength: 16384 }).map((b) => Buffer.from(b).toString('latin1')),
        ),
        (s) => {
          parseBaggage(s);
          findBaggageMember(s, 'branchline');
          mergeBaggageMember(s, 'branchline', 'k');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('round-trips serialize → parse', () => {
    fc.assert(
      fc.property(fc.uniqueArray(member, { selector: (m) => m.key, maxLength: 20 }), (members) => {
        const r = parseBaggage(serializeBaggage(members));
        expect(r).toEqual({ ok: true, members: members.map((m) => ({ key: m.key, value: m.value })) });
      }),
    );
  });

  it('merging keeps every other member, in order', () => {
    fc.assert(
      fc.property(fc.uniqueArray(member, { selector: (m) => m.key, maxLength: 30 }), (members) => {
        const header = serializeBaggage(members);
        const merged = mergeBaggageMember(header, 'branchline', 'pr-1');
        expect(merged.ok).toBe(true);
        const parsed = parseBaggage(merged.header!);
        if (!parsed.ok) throw new Error('merged header does not parse');
        const others = parsed.members.filter((m) => m.key !== 'branchline');
        expect(others).toEqual(
          members.filter((m) => m.key !== 'branchline').map((m) => ({ key: m.key, value: m.value })),
        );
        expect(parsed.members.filter((m) => m.key === 'branchline')).toEqual([
          { key: 'branchline', value: 'pr-1' },
        ]);
      }),
    );
  });

  it('parse work grows linearly with input size (no pathological input)', () => {
    // Counts the characters the parser reads instead of timing it: a string-like object that
    // counts every character handed out. The parser only reaches a string through these
    // methods, so a new one it starts using makes this test throw rather than pass unseen.
    class CountingString {
      reads = 0;
      constructor(private readonly s: string) {}
      get length(): number {
        return this.s.length;
      }
      charCodeAt(i: number): number {
        this.reads++;
        return this.s.charCodeAt(i);
      }
      slice(start: number, end?: number): string {
        const out = this.s.slice(start, end);
        this.reads += out.length;
        return out;
      }
      startsWith(prefix: string, at?: number): boolean {
        this.reads += prefix.length;
        return this.s.startsWith(prefix, at);
      }
    }
    const shapes = [
      (n: number) => 'a'.repeat(n),
      (n: number) => ' '.repeat(n),
      (n: number) => ','.repeat(n),
      (n: number) => `k=${'%41'.repeat(Math.floor(n / 3))}`,
      (n: number) => `k=v;${';p'.repeat(Math.floor(n / 2))}`,
      (n: number) => `${'k=v,'.repeat(Math.floor(n / 4))}`,
      (n: number) => `k=v${' '.repeat(n)};p`,
    ];
    const reads = (header: string) => {
      const counted = new CountingString(header);
      findBaggageMember(counted as unknown as string, 'k');
      parseBaggage(counted as unknown as string);
      return counted.reads;
    };
    for (const shape of shapes) {
      const small = shape(1000);
      const large = shape(8000);
      // Each character is read a small constant number of times, whatever the input's shape;
      // quadratic behaviour would read the large input ~64x as often as the small one.
      expect(reads(small)).toBeLessThanOrEqual(8 * small.length);
      expect(reads(large)).toBeLessThanOrEqual(8 * large.length);
      expect(reads(large) / reads(small)).toBeLessThan(9);
    }
  });
});
