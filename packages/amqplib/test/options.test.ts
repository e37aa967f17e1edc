import { createRuntime } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
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
});
