import { afterEach, describe, expect, it } from 'vitest';
import { announceWorkload, type BranchlineLogger, setLogger } from '../src/index.js';

// What announceWorkload does without a registry: its answers to configuration it cannot use.
// Announcing, withdrawing, leases and tokens against the real registry: test/self-registration.test.ts.
const logged: { level: string; msg: string }[] = [];
const capture: BranchlineLogger = {
  debug: (msg) => logged.push({ level: 'debug', msg }),
  info: (msg) => logged.push({ level: 'info', msg }),
  warn: (msg) => logged.push({ level: 'warn', msg }),
  error: (msg) => logged.push({ level: 'error', msg }),
};
afterEach(() => {
  setLogger(undefined);
  logged.length = 0;
});

const sandboxEnv = {
  BRANCHLINE_SANDBOX: 'pr-42',
  BRANCHLINE_SERVICE: 'payments',
  BRANCHLINE_REGISTRY: 'http://127.0.0.1:9',
};

describe('announceWorkload configuration', () => {
  it('announces nothing in a baseline process and leaves its signal handling alone', async () => {
    setLogger(capture);
    const before = process.listenerCount('SIGTERM');
    const a = announceWorkload({ http: 'http://127.0.0.1:8080', env: { BRANCHLINE_SERVICE: 'payments' } });
    expect(a.status.state).toBe('inactive');
    expect(process.listenerCount('SIGTERM')).toBe(before);
    expect(await a.announced(10)).toBe(false);
    await a.stop();
    expect(logged.filter((l) => l.level !== 'debug')).toEqual([]);
  });

  it.each([
    [{ http: 'not a url' }, 'option http has "not a url", which is not an absolute http(s) URL'],
    [{ grpc: '10.0.0.1: 50051' }, 'which is not a gRPC target such as 10.0.3.9:50051'],
    [{}, 'no endpoint to announce for service payments'],
    [
      { http: 'http://x:1', registry: 'ftp://registry' },
      'option registry="ftp://registry" must be an http(s) URL',
    ],
    [{ http: 'http://x:1', sandbox: 'PR_42' }, 'option sandbox="PR_42" is not a sandbox name'],
    [{ http: 'http://x:1', leaseMs: 3000, intervalMs: 3000 }, 'must be shorter than leaseMs=3000'],
  ])('refuses %j without throwing, logs why and stays inactive', async (options, message) => {
    setLogger(capture);
    const a = announceWorkload({ ...options, env: sandboxEnv });
    expect(a.status.state).toBe('inactive');
    expect(a.status.error).toContain(message);
    expect(logged).toEqual([{ level: 'error', msg: a.status.error }]);
    expect(await a.announced(10)).toBe(false);
  });

  it('reads endpoints from BRANCHLINE_ANNOUNCE_HTTP / _GRPC, and options given in code win', async () => {
    setLogger(capture);
    const env = {
      ...sandboxEnv,
      BRANCHLINE_ANNOUNCE_HTTP: 'http://10.0.3.9:8080, http://10.0.3.9:8081',
      BRANCHLINE_ANNOUNCE_GRPC: '10.0.3.9:50051',
    };
    const fromEnv = announceWorkload({ env, withdrawOnSignals: false });
    const fromCode = announceWorkload({
      env,
      http: 'http://10.0.3.10:8080',
      grpc: [],
      withdrawOnSignals: false,
    });
    try {
      expect(fromEnv.status).toMatchObject({
        sandbox: 'pr-42',
        service: 'payments',
        http: ['http://10.0.3.9:8080', 'http://10.0.3.9:8081'],
        grpc: ['10.0.3.9:50051'],
      });
      expect(fromCode.status).toMatchObject({ http: ['http://10.0.3.10:8080'], grpc: [] });
    } finally {
      await fromEnv.stop();
      await fromCode.stop();
    }
    expect(fromEnv.status.state).toBe('stopped');
  });
});
