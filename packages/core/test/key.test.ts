import { describe, expect, it } from 'vitest';
import { explainInvalidKey, isValidRoutingKey } from '../src/rules.js';

describe('routing key validation', () => {
  it('accepts DNS-label-like keys', () => {
    for (const k of ['a', '0', 'pr-42', 'a1-b2-c3', 'x'.repeat(63)]) expect(isValidRoutingKey(k)).toBe(true);
  });
  it('rejects everything else', () => {
    for (const k of ['', '-a', 'a-', 'A', 'a_b', 'a.b', 'x'.repeat(64), 'é', 'a b', 42, null, undefined]) {
      expect(isValidRoutingKey(k)).toBe(false);
    }
  });
  it('explains why', () => {
    expect(explainInvalidKey('x'.repeat(64))).toMatch(/64 characters/);
    expect(explainInvalidKey('Bad')).toMatch(/lowercase/);
  });
});
