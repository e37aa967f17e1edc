import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { createRuntime, withRoutingKey } from '@branchline/core';
import { counters } from '@branchline/core/transport';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRoutingInterceptor,
  headersWithKey,
  installFetchRouting,
  RoutingHttpAgent,
  SandboxUnreachableError,
  withoutBaggageMember,
} from '../src/index.js';
import { startServer, type TestServer } from './servers.js';

let baseline: TestServer;
let sandbox: TestServer;
let external: TestServer;
let runtime: ReturnType<typeof createRuntime>;
/** A sandbox endpoint nothing listens on (its sandbox is down). */
let downUrl: string;
/** A sandbox endpoint that accepts connections and never answers. */
let silent: net.Server;
let silentUrl: string;
const held: net.Socket[] = [];

beforeAll(async () => {
  [baseline, sandbox, external] = await Promise.all([
    startServer('payments-base'),
    startServer('payments-sb'),
    startServer('external'),
  ]);
  const closed = net.createServer().listen(0, '127.0.0.1');
  await once(closed, 'listening');
  downUrl = `http://127.0.0.1:${(closed.address() as net.AddressInfo).port}`;
  closed.close();
  silent = net.createServer((s) => held.push(s)).listen(0, '127.0.0.1');
  await once(silent, 'listening');
  silentUrl = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  runtime = createRuntime({
    service: 'frontend',
    routes: {
      sandboxes: [
        { name: 'pay-sb', key: 'pay-key', overrides: { payments: { http: sandbox.url } } },
        { name: 'down-sb', key: 'down-key', overrides: { payments: { http: downUrl } } },
        { name: 'silent-sb', key: 'silent-key', overrides: { payments: { http: silentUrl } } },
      ],
    },
  });
});
afterAll(() => {
  for (const s of held) s.destroy();
  silent.close();
  return Promise.all([baseline.close(), sandbox.close(), external.close()]);
});

/** The checks every transport's "sandbox is down" error must pass. */
function expectNamesTheSandbox(err: unknown) {
  expect(err).toBeInstanceOf(SandboxUnreachableError);
  const e = err as SandboxUnreachableError;
  expect(e.message).toContain(`sandbox "down-sb" (service "payments") at ${downUrl} could not be reached`);
  expect(e.message).toContain(`instead of the baseline of payments (${baseline.url})`);
  expect(e).toMatchObject({
    sandbox: 'down-sb',
    service: 'payments',
    endpoint: downUrl,
    code: 'ECONNREFUSED',
  });
  expect((e.cause as { code?: string }).code).toBe('ECONNREFUSED');
}

async function json(p: Promise<{ body: { json(): Promise<unknown> } }>) {
  return (await (await p).body.json()) as { instance: string; baggage: string | null };
}

describe('the undici routing interceptor', () => {
  const dispatcher = () =>
    new Agent().compose(createRoutingInterceptor({ services: { payments: baseline.url }, runtime }));

  it('sends a call whose key has a rule to the sandbox endpoint, with the key in baggage', async () => {
    const d = dispatcher();
    const r = await withRoutingKey('pay-key', () =>
      json(request(`${baseline.url}/charge`, { dispatcher: d })),
    );
    expect(r).toEqual({ instance: 'payments-sb', baggage: 'branchline=pay-key' });
    expect(sandbox.seen.at(-1)?.url).toBe('/charge');
  });

  it('sends a call without a key to its own address, untouched', async () => {
    const r = await json(request(`${baseline.url}/x`, { dispatcher: dispatcher() }));
    expect(r).toEqual({ instance: 'payments-base', baggage: null });
  });

  it('sends a call whose key has no rule for that service to baseline, still carrying the key', async () => {
    const r = await withRoutingKey('other-key', () =>
      json(request(baseline.url, { dispatcher: dispatcher() })),
    );
    expect(r).toEqual({ instance: 'payments-base', baggage: 'branchline=other-key' });
  });

  it('merges into the app’s baggage, never duplicates the header, never overwrites an app-set member', async () => {
    const d = dispatcher();
    const merged = await withRoutingKey('pay-key', () =>
      json(request(baseline.url, { dispatcher: d, headers: { Baggage: 'userid=alice' } })),
    );
    expect(merged.baggage).toBe('userid=alice,branchline=pay-key');
    const appSet = await withRoutingKey('pay-key', () =>
      json(request(baseline.url, { dispatcher: d, headers: ['baggage', 'branchline=mine,x=1'] })),
    );
    expect(appSet.baggage).toBe('branchline=mine,x=1');
    const raw = sandbox.seen.at(-1)!.rawHeaders.filter((h) => h.toLowerCase() === 'baggage');
    expect(raw).toHaveLength(1);
  });

  it('withholds the key from a host that is not internal, and counts it', async () => {
    const before = counters.egressWithheld;
    const r = await withRoutingKey('pay-key', () =>
      json(request(external.url, { dispatcher: dispatcher(), headers: { baggage: 'userid=alice' } })),
    );
    expect(r).toEqual({ instance: 'external', baggage: 'userid=alice' });
    expect(counters.egressWithheld).toBe(before + 1);
  });

  it('routes global fetch once installed, and stops when uninstalled', async () => {
    const uninstall = installFetchRouting({ services: { payments: baseline.url }, runtime });
    try {
      const r = await withRoutingKey('pay-key', () => fetch(baseline.url).then((x) => x.json()));
      expect(r).toEqual({ instance: 'payments-sb', baggage: 'branchline=pay-key' });
    } finally {
      uninstall();
    }
    const after = await withRoutingKey('pay-key', () => fetch(baseline.url).then((x) => x.json()));
    expect(after).toEqual({ instance: 'payments-base', baggage: null });
  });

  it('fails a call whose sandbox is down with an error naming the sandbox, the service and the endpoint', async () => {
    const err = await withRoutingKey('down-key', () =>
      request(`${baseline.url}/charge`, { dispatcher: dispatcher() }),
    ).catch((e: unknown) => e);
    expectNamesTheSandbox(err);
  });

  it('gives global fetch’s "fetch failed" that error as its cause', async () => {
    const uninstall = installFetchRouting({ services: { payments: baseline.url }, runtime });
    try {
      const err = await withRoutingKey('down-key', () => fetch(`${baseline.url}/charge`)).catch((e) => e);
      expect(err).toBeInstanceOf(TypeError);
      expectNamesTheSandbox((err as Error).cause);
    } finally {
      uninstall();
    }
  });

  it('leaves the caller’s own abort of a routed call as it is', async () => {
    const err = await withRoutingKey('silent-key', () =>
      request(`${baseline.url}/slow`, { dispatcher: dispatcher(), signal: AbortSignal.timeout(200) }),
    ).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(SandboxUnreachableError);
    expect((err as Error).name).toBe('TimeoutError');
  });

  it('treats hosts matched by internalHosts as internal, with the first DNS label as their service', async () => {
    const d = new Agent().compose(createRoutingInterceptor({ internalHosts: ['127.0.0.1'], runtime }));
    const r = await withRoutingKey('pay-key', () => json(request(external.url, { dispatcher: d })));
    // 127.0.0.1 is internal, but an IP address names no service: the key travels, no routing.
    expect(r).toEqual({ instance: 'external', baggage: 'branchline=pay-key' });
  });
});

function nodeGet(url: string, agent: http.Agent, headers: http.OutgoingHttpHeaders = {}) {
  return new Promise<{ instance: string; baggage: string | null }>((resolve, reject) => {
    http
      .get(url, { agent, headers }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(JSON.parse(body)));
      })
      .on('error', reject);
  });
}

describe('the node:http routing agent (what axios-style clients use)', () => {
  const agent = () => new RoutingHttpAgent({ services: { payments: baseline.url }, runtime });

  it('sends a call whose key has a rule to the sandbox, with the key merged into baggage', async () => {
    const r = await withRoutingKey('pay-key', () =>
      nodeGet(`${baseline.url}/a`, agent(), { baggage: 'u=1' }),
    );
    expect(r).toEqual({ instance: 'payments-sb', baggage: 'u=1,branchline=pay-key' });
  });

  it('leaves a call without a key alone', async () => {
    expect(await nodeGet(baseline.url, agent())).toEqual({ instance: 'payments-base', baggage: null });
  });

  it('fails a call whose sandbox is down with an error naming the sandbox, the service and the endpoint', async () => {
    const err = await withRoutingKey('down-key', () => nodeGet(`${baseline.url}/charge`, agent())).catch(
      (e: unknown) => e,
    );
    expectNamesTheSandbox(err);
  });

  it('leaves an error the caller destroys a routed request with as it is', async () => {
    const mine = new Error('gave up');
    const err = await withRoutingKey('silent-key', () => {
      const req = http.get(`${baseline.url}/slow`, { agent: agent() });
      req.setTimeout(200, () => req.destroy(mine));
      return new Promise((_, reject) => req.on('error', reject));
    }).catch((e: unknown) => e);
    expect(err).toBe(mine);
  });

  it('takes our member out of baggage bound for an external host, keeping the rest', async () => {
    const r = await withRoutingKey('pay-key', () =>
      nodeGet(external.url, agent(), { baggage: 'u=1,branchline=pay-key' }),
    );
    expect(r).toEqual({ instance: 'external', baggage: 'u=1' });
  });
});

describe('header helpers', () => {
  it('adds the key to every undici header form without mutating the input', () => {
    const obj = { Accept: 'x' };
    expect(headersWithKey(obj, 'k', 'branchline')).toEqual({ Accept: 'x', baggage: 'branchline=k' });
    expect(obj).toEqual({ Accept: 'x' });
    expect(headersWithKey(['a', '1'], 'k', 'branchline')).toEqual(['a', '1', 'baggage', 'branchline=k']);
    expect(headersWithKey([['baggage', 'u=1']], 'k', 'branchline')).toEqual(['baggage', 'u=1,branchline=k']);
    expect(headersWithKey(new Map([['x', 'y']]), 'k', 'branchline')).toEqual([
      'x',
      'y',
      'baggage',
      'branchline=k',
    ]);
    expect(headersWithKey(undefined, 'k', 'branchline')).toEqual({ baggage: 'branchline=k' });
  });

  it('removes only our member from a baggage header', () => {
    expect(withoutBaggageMember('a=1,branchline=k,b=2', 'branchline')).toBe('a=1,b=2');
    expect(withoutBaggageMember('branchline=k', 'branchline')).toBeUndefined();
    expect(withoutBaggageMember('a=1', 'branchline')).toBe('a=1');
    expect(withoutBaggageMember('a=1,"x",branchline=k', 'branchline')).toBe('a=1');
    expect(withoutBaggageMember('a=1,branchline=k k', 'branchline')).toBe('a=1');
  });
});
