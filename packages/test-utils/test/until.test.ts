import { describe, expect, it } from 'vitest';
import { until } from '../src/index.js';

describe('until', () => {
  it('returns the first truthy value the check gives', async () => {
    let calls = 0;
    const value = await until(() => (++calls >= 3 ? { calls } : undefined), 'the third call', {
      intervalMs: 1,
    });
    expect(value).toEqual({ calls: 3 });
  });

  it('on timeout names what it waited for and the last value seen', async () => {
    let n = 0;
    await expect(
      until(() => (n++ >= 0 ? 0 : 1), 'a count above zero', { timeoutMs: 50, intervalMs: 5 }),
    ).rejects.toThrow(/timed out after 50 ms waiting for a count above zero; last seen: 0$/);
  });

  it('ends the wait at once when the check throws', async () => {
    const started = Date.now();
    await expect(
      until(
        () => {
          throw new Error('provisioning failed');
        },
        'the database',
        { timeoutMs: 10_000 },
      ),
    ).rejects.toThrow('provisioning failed');
    expect(Date.now() - started).toBeLessThan(1000);
  });
});
