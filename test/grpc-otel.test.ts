import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// OpenTelemetry globals cannot be reset in-process: each setup runs in a fresh process.
const app = fileURLToPath(new URL('./fixtures/grpc/otel-app.mjs', import.meta.url));

async function run(mode: 'w3c' | 'b3'): Promise<Record<string, unknown>> {
  const { stdout } = await promisify(execFile)(process.execPath, [app, mode], {
    encoding: 'utf8',
    timeout: 60_000,
    env: {
      ...process.env,
      OTEL_TRACES_EXPORTER: 'none',
      OTEL_METRICS_EXPORTER: 'none',
      OTEL_LOGS_EXPORTER: 'none',
    },
  });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

const all = (v: string) => Array(6).fill(v);

describe('gRPC routing under NodeSDK with the OpenTelemetry gRPC instrumentation', () => {
  it('with the default propagators (trace context + baggage), every handler sees the key and calls still route', async () => {
    const r = await run('w3c');
    expect(r.instrumented).toBe(true);
    expect(r.serverSpans).toBe(16);
    expect(r.noKey).toEqual(all('baseline/'));
    expect(r.routed).toEqual(all('sandbox/pr-1'));
    expect(r.unrouted).toEqual(all('baseline/pr-2'));
    expect(r.plainUnrouted).toEqual(all('plain/pr-2'));
  });

  it('with B3-only propagators, a routed server still gives handlers and their stream listeners the key', async () => {
    const r = await run('b3');
    expect(r.instrumented).toBe(true);
    expect(r.routed).toEqual(all('sandbox/pr-1'));
    expect(r.unrouted).toEqual(all('baseline/pr-2'));
    const listeners = r.keysInListeners as string[];
    // no key, routed (in the sandbox), unrouted (baseline): then the plain server's four.
    expect(listeners.slice(4, 12)).toEqual([
      'collect:pr-1',
      'collect:pr-1',
      'chat:pr-1',
      'chat:pr-1',
      'collect:pr-2',
      'collect:pr-2',
      'chat:pr-2',
      'chat:pr-2',
    ]);
    // Documented limit: the interceptor alone cannot reach inside the instrumentation's context.
    expect(r.plainUnrouted).toEqual(all('plain/'));
  });
});
