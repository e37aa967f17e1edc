import { describe, expect, it } from 'vitest';
import { endpointsText, expiresIn, labelsText, printable, table } from '../src/format.js';

describe('printable: registry values are shown on a terminal without acting on it', () => {
  it('leaves ordinary text, including non-ASCII letters, as it is', () => {
    expect(printable('pr-42 ünïcode ✓')).toBe('pr-42 ünïcode ✓');
  });

  it('escapes an ANSI escape sequence so it cannot rewrite the screen', () => {
    expect(printable('\u001b[2J\u001b[Hgotcha')).toBe('\\x1b[2J\\x1b[Hgotcha');
  });

  it('names newline, carriage return and tab, so a value cannot fake a table row', () => {
    expect(printable('a\nb\rc\td')).toBe('a\\nb\\rc\\td');
  });

  it('escapes DEL, C1 controls, line separators and bidirectional overrides', () => {
    expect(printable('x\u007fy\u0085z')).toBe('x\\x7fy\\x85z');
    expect(printable('a\u2028b\u2029c')).toBe('a\\u2028b\\u2029c');
    expect(printable('evil\u202egnp.exe\u2066')).toBe('evil\\u202egnp.exe\\u2066');
  });

  it('gives the same answer on repeated calls (no state kept between calls)', () => {
    const once = printable('\u0007bell');
    expect(printable('\u0007bell')).toBe(once);
    expect(printable('plain')).toBe('plain');
  });
});

describe('the table and cell helpers escape what they print', () => {
  it('aligns columns and escapes control characters in cells', () => {
    const out = table(
      [
        { name: 'pr-1', owner: 'ann' },
        { name: 'pr-2\nFAKE ROW', owner: 'bob' },
      ],
      ['name', 'owner'],
    );
    expect(out.split('\n')).toEqual(['NAME            OWNER', 'pr-1            ann', 'pr-2\\nFAKE ROW  bob']);
    expect(table([], ['name'])).toBe('(none)');
  });

  it('escapes endpoints and labels', () => {
    expect(endpointsText({ http: 'http://a\u001b', grpc: ['b:1'] })).toBe('http://a\\x1b,grpc://b:1');
    expect(labelsText({ team: 'blue\r' })).toBe('team=blue\\r');
  });

  it('says when a sandbox expires', () => {
    expect(expiresIn(null)).toBe('never');
    expect(expiresIn(1000, 2000)).toBe('expired');
    expect(expiresIn(2000 + 90_000, 2000)).toMatch(/^in /);
  });
});
