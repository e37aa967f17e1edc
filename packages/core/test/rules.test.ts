import { describe, expect, it } from 'vitest';
import {
  isHttpToken,
  isValidLabelName,
  isValidLabelValue,
  isValidRoutingKey,
  isValidSandboxName,
  isValidServiceName,
  loadConfig,
  ROUTING_KEY_PATTERN,
  SERVICE_NAME_RULE,
} from '../src/index.js';

describe('naming rules', () => {
  it('a sandbox name follows the routing-key rule, and the pattern agrees with the scan', () => {
    for (const v of ['pr-42', 'a', 'x'.repeat(63), '-a', 'a-', 'A', 'a_b', 'x'.repeat(64), ''])
      expect([v, isValidSandboxName(v)]).toEqual([v, ROUTING_KEY_PATTERN.test(v)]);
    expect(isValidRoutingKey('pr-42')).toBe(true);
  });

  it('service names allow letters, digits, dot, underscore and hyphen, up to 128 characters', () => {
    expect(isValidServiceName('Orders.v2_api-x')).toBe(true);
    expect(isValidServiceName('x'.repeat(128))).toBe(true);
    expect(isValidServiceName('x'.repeat(129))).toBe(false);
    expect(isValidServiceName('.orders')).toBe(false);
    expect(isValidServiceName('or ders')).toBe(false);
  });

  it('label names allow a slash; label values are bounded; tokens refuse spaces', () => {
    expect(isValidLabelName('github.com/pr')).toBe(true);
    expect(isValidLabelName('/team')).toBe(false);
    expect(isValidLabelValue('x'.repeat(253))).toBe(true);
    expect(isValidLabelValue('x'.repeat(254))).toBe(false);
    expect(isHttpToken('branchline')).toBe(true);
    expect(isHttpToken('bad key')).toBe(false);
  });

  it('configuration errors quote the rule', () => {
    expect(() => loadConfig({ service: 'bad service' }, {})).toThrow(SERVICE_NAME_RULE);
  });
});
