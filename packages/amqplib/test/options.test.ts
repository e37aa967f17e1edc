import { createRuntime, StaticRouteSource, setLogger } from '@branchline/core';
import { describe, expect, it } from 'vitest';
import {
  createSelectiveConsumer,
  instrumentChannel,
  sandboxQueueName,
  withRoutingHeaders,
} from '../src/index.js';

const runtime = createRuntime({ service: 'orders', routeSource: new StaticRouteSource({ sandboxes: [] }) });
const never = () => new Promise<never>(() => undefined);
const base = { connection: never, queue: 'orders', onMessage: () => undefined, runtime };

describe('options are checked when the consumer is created', () => {
  it('names the bad option and the value', () => {
    expect(() => createSelectiveConsumer({ ...base, queue: '' })).toThrow(/option queue must be/);
    expect(() => createSelectiveConsumer({ ...base, onMessage: 3 as never })).toThrow(
      /option onMessage must be a function/,
    );
    expect(() => createSelectiveConsumer({ ...base, prefetch: 0 })).toThrow(
      /option prefetch must be a positive integer \(got 0\)/,
    );
    expect(() => createSelectiveConsumer({ ...base, connection: undefined as never })).toThrow(
      /option connection is required/,
    );
    expect(() =>
      createSelectiveConsumer({ ...base, runtime: createRuntime({ routeSource: { sandboxes: [] } }) }),
    ).toThrow(/needs a service name: pass \{ service \} or set BRANCHLINE_SERVICE/);
  });

  it('derives the sandbox queue from the baseline queue, within AMQP limits', async () => {
    const c = createSelectiveConsumer({ ...base, sandbox: 'pr-42' });
    expect(c.queue).toBe('orders.sandbox.pr-42');
    expect(c.sandbox).toBe('pr-42');
    expect(createSelectiveConsumer({ ...base, sandbox: null }).queue).toBe('orders');
    expect(() => sandboxQueueName('q'.repeat(250), 'pr-42')).toThrow(/longer than AMQP's 255 bytes/);
  });

  it('refuses to instrument something that is not a channel', () => {
    expect(() => instrumentChannel({} as never)).toThrow(/expects an amqplib channel/);
  });

  it('withRoutingHeaders merges the key and the time without touching the caller’s objects', () => {
    const opts = { persistent: true, headers: { baggage: 'a=1' } };
    const out = withRoutingHeaders(opts, 'pr-1', { stampTime: false });
    expect(out).toEqual({ persistent: true, headers: { baggage: 'a=1,branchline=pr-1' } });
    expect(opts.headers).toEqual({ baggage: 'a=1' });
  });

  it('reconnect takes core BackoffOptions; the old names still work, with one warning', async () => {
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, error() {}, warn: (m) => warnings.push(m) });
    try {
      const attempts: number[] = [];
      const failing = async () => {
        attempts.push(Date.now());
        throw new Error('broker down');
      };
      // Deprecated names: a 20 ms backoff reconnects many times in 400 ms (the default, 100 ms
      // doubling, would try at most three times).
      const old = createSelectiveConsumer({
        ...base,
        connection: failing,
        reconnect: { initialDelayMs: 20, maxDelayMs: 20 },
      });
      const again = createSelectiveConsumer({
        ...base,
        connection: () => Promise.reject(new Error('broker down')),
        reconnect: { initialDelayMs: 20 },
      });
      await new Promise((r) => setTimeout(r, 400));
      await Promise.all([old.close(), again.close()]);
      expect(attempts.length).toBeGreaterThanOrEqual(6);
      const deprecations = warnings.filter((w) => w.includes('initialDelayMs'));
      expect(deprecations).toHaveLength(1);
      expect(deprecations[0]).toMatch(/amqplib reconnect option initialDelayMs is deprecated; use initialMs/);

      // The new names.
      attempts.length = 0;
      const current = createSelectiveConsumer({
        ...base,
        connection: failing,
        reconnect: { initialMs: 20, maxMs: 20 },
      });
      await new Promise((r) => setTimeout(r, 400));
      await current.close();
      expect(attempts.length).toBeGreaterThanOrEqual(6);
      expect(() => createSelectiveConsumer({ ...base, reconnect: { factor: 0 } })).toThrow(
        /reconnect.factor must be a number >= 1/,
      );
    } finally {
      setLogger(undefined);
    }
  });
});
