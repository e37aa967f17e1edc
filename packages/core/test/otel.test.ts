import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const fixture = fileURLToPath(new URL('./fixtures/otel-modes.mjs', import.meta.url));

function run(mode: string): Record<string, unknown> {
  const stdout = execFileSync(process.execPath, [fixture, mode], {
    encoding: 'utf8',
    env: {
      ...process.env,
      OTEL_TRACES_EXPORTER: 'none',
      OTEL_METRICS_EXPORTER: 'none',
      OTEL_LOGS_EXPORTER: 'none',
    },
  });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('OpenTelemetry integration', () => {
  it('carries the key across awaits with no OpenTelemetry setup, registering nothing global', () => {
    expect(run('none')).toEqual({ mode: 'none', key: 'pr-1', otelContextManager: false });
  });

  it('uses the app NodeSDK started first and registers nothing over it', () => {
    const r = run('sdk-first');
    expect(r.ensure).toEqual({ contextManager: false, propagator: false });
    expect(r.key).toBe('pr-1');
    expect(r.otelSeesKey).toBe('pr-2');
    expect(r.tracing).toBe(true);
  });

  it('leaves the app free to start NodeSDK after Branchline was used, and both keep working', () => {
    expect(run('branchline-first')).toEqual({
      mode: 'branchline-first',
      keyBefore: 'pr-1',
      keyAfter: 'pr-1',
      tracing: true,
    });
  });

  it('still carries the key when the app propagates only B3, which has no baggage', () => {
    const r = run('b3-only');
    expect(r.ensure).toEqual({ contextManager: false, propagator: false });
    const headers = r.headers as Record<string, string>;
    expect(headers.b3).toBeDefined();
    expect(headers.baggage).toBe('branchline=pr-3');
  });

  it('ensureOpenTelemetry registers defaults only once, when none exist', () => {
    const r = run('ensure-alone');
    expect(r.ensure).toEqual({ contextManager: true, propagator: true });
    expect(r.again).toEqual({ contextManager: false, propagator: false });
    expect(r.key).toBe('pr-1');
    expect(r.injected).toEqual({ baggage: 'branchline=pr-4' });
  });
});
