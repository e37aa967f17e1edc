import { HoldTimeoutError as CoreHoldTimeoutError } from '@branchline/core/transport';
import { describe, expect, it } from 'vitest';
import { HoldTimeoutError } from '../src/index.js';

describe('HoldTimeoutError', () => {
  it("is core's HoldTimeoutError, naming the partition and offset and what to do", () => {
    const err = new HoldTimeoutError('view-behind-message', 'orders', 2, '1234', 500);
    expect(err).toBeInstanceOf(CoreHoldTimeoutError);
    expect(err).toMatchObject({
      name: 'HoldTimeoutError',
      reason: 'view-behind-message',
      topic: 'orders',
      partition: 2,
      offset: '1234',
      holdTimeoutMs: 500,
      where: 'orders[2]@1234',
    });
    expect(err.message).toMatch(/held orders\[2\]@1234 for 500 ms .*\(use LogAppendTime topics/);
    expect(new HoldTimeoutError('never-synced', 'orders', 0, '1', 5).message).toMatch(
      /no route table yet; check BRANCHLINE_REGISTRY/,
    );
  });
});
