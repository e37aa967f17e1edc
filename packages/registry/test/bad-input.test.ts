import { connect } from 'node:net';
import { until } from '@branchline/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { send, sendJson, startRegistry, stopRegistries } from './helpers.js';

afterAll(stopRegistries);

const DAY = 86_400_000;

describe('paths', () => {
  it('a malformed %-escape in the path gets 400 naming it, before authentication, and logs no error', async () => {
    const { url, logs } = await startRegistry({
      tokens: [{ token: 'path-token-0123456789', scopes: ['read'] }],
    });
    for (const path of ['/v1/sandboxes/%zz', '/v1/sandboxes/%E0%A4%A', '/v1/routegroups/a%']) {
      const r = await send(url, 'GET', path);
      expect(r.status, path).toBe(400);
      expect(r.json.error).toBe('invalid_path');
      expect(r.json.message).toContain('percent');
    }
    expect(logs.filter((l) => l.level === 'error')).toEqual([]);
  });
});

describe('TTLs', () => {
  it('refuses a ttl over the maximum (30 days by default) with 400 naming the field and the maximum', async () => {
    const { url, registry } = await startRegistry();
    await registry.putSandbox('s', {});
    const huge = '9'.repeat(400);
    const cases: [string, string, Record<string, unknown>, string][] = [
      ['PUT', '/v1/sandboxes/a', { ttl: 1e308 }, 'ttl'],
      ['PUT', '/v1/sandboxes/a', { ttl: huge }, 'ttl'],
      ['PUT', '/v1/sandboxes/a', { ttl: `${huge}h` }, 'ttl'],
      ['PUT', '/v1/sandboxes/a', { ttl: '31d' }, 'ttl'],
      ['PUT', '/v1/sandboxes/a', { expiresAt: Date.now() + 40 * DAY }, 'expiresAt'],
      ['PUT', '/v1/routegroups/g', { match: { labels: { a: 'b' } }, ttl: 1e308 }, 'ttl'],
      ['POST', '/v1/sandboxes/s/heartbeat', { service: 'p', http: 'http://127.0.0.1:1', ttl: 1e308 }, 'ttl'],
      ['POST', '/v1/sandboxes/s/heartbeat', { service: 'p', http: 'http://127.0.0.1:1', ttl: huge }, 'ttl'],
    ];
    for (const [method, path, body, field] of cases) {
      const r = await sendJson(url, method, path, body);
      expect(r.status, `${method} ${path} ${JSON.stringify(body).slice(0, 60)}`).toBe(400);
      expect(r.json.issues[0].path).toBe(field);
      expect(r.json.message).toContain(`${field}:`);
      expect(r.json.message).toContain('30d');
    }
    const listed = (await send(url, 'GET', '/v1/sandboxes')).json.sandboxes;
    expect(listed.map((s: { name: string }) => s.name)).toEqual(['s']);
    expect(listed[0].announced).toEqual({});
  });

  it('accepts a ttl up to the maximum, and maxTtlMs sets another maximum', async () => {
    const { url } = await startRegistry({ maxTtlMs: 2 * DAY });
    const ok = await sendJson(url, 'PUT', '/v1/sandboxes/a', { ttl: '2d' });
    expect(ok.status).toBe(201);
    expect(ok.json.expiresAt - ok.json.createdAt).toBe(2 * DAY);
    const over = await sendJson(url, 'PUT', '/v1/sandboxes/b', { ttl: '49h' });
    expect(over.status).toBe(400);
    expect(over.json.message).toBe('ttl: at most 2d (172800 seconds); got "49h"');
  });

  it('refuses a default TTL over the maximum when the registry is created', () => {
    return expect(startRegistry({ defaultTtlMs: 40 * DAY })).rejects.toThrow(/defaultTtlMs .* maxTtlMs/);
  });
});

describe('endpoints', () => {
  it('refuses control characters in an endpoint with 400 and stores the normalised URL', async () => {
    const { url, registry } = await startRegistry();
    await registry.putSandbox('s', {});
    for (const bad of [
      'http://10.0.0.7:8080/\t',
      'http://10.0.\r\n0.7:8080',
      '\thttp://10.0.0.7',
      'http://10.0.0.7/\u0000',
    ])
      for (const [method, path, body] of [
        ['PUT', '/v1/sandboxes/a', { overrides: { payments: { http: bad } } }],
        ['POST', '/v1/sandboxes/s/heartbeat', { service: 'payments', http: bad }],
      ] as const) {
        const r = await sendJson(url, method, path, body);
        expect(r.status, `${method} ${JSON.stringify(bad)}`).toBe(400);
        expect(r.json.message).toMatch(/control character/);
      }
    const grpc = await sendJson(url, 'PUT', '/v1/sandboxes/a', {
      overrides: { payments: { grpc: '10.0.0.7:5\u00010' } },
    });
    expect(grpc.status).toBe(400);
    expect(grpc.json.issues[0].path).toBe('overrides.payments.grpc');
    const put = await sendJson(url, 'PUT', '/v1/sandboxes/a', {
      overrides: {
        payments: { http: 'HTTP://Payments.Staging:80/' },
        orders: { http: ['http://10.0.0.7:8080/v1/../api'] },
      },
    });
    expect(put.status).toBe(201);
    expect(put.json.declared).toEqual({
      payments: { http: 'http://payments.staging' },
      orders: { http: ['http://10.0.0.7:8080/api'] },
    });
    const hb = await sendJson(url, 'POST', '/v1/sandboxes/s/heartbeat', {
      service: 'payments',
      http: 'http://0x0A000007:8080/',
    });
    expect(hb.status).toBe(200);
    expect(hb.json.overrides.payments).toEqual({ http: 'http://10.0.0.7:8080' });
  });

  it('allowEndpoints: refuses a declared or announced endpoint outside the listed networks and host patterns', async () => {
    const { url, registry } = await startRegistry({
      allowEndpoints: ['10.0.0.0/8', 'fd00::/8', '*.staging.svc.cluster.local', 'payments-canary'],
    });
    await registry.putSandbox('s', {});
    const allowed = {
      a: { http: 'http://10.1.2.3:8080', grpc: '10.1.2.3:50051' },
      b: {
        http: 'http://orders.staging.svc.cluster.local:8080',
        grpc: 'dns:///orders.staging.svc.cluster.local:50051',
      },
      c: { http: 'http://[fd00::7]:8080', grpc: 'ipv4:10.0.0.1:50051,10.0.0.2:50051' },
      d: { http: 'http://payments-canary', grpc: 'payments-canary:50051' },
    };
    expect((await sendJson(url, 'PUT', '/v1/sandboxes/ok', { overrides: allowed })).status).toBe(201);
    const refused: [string, Record<string, string>][] = [
      ['overrides.x.http', { http: 'http://169.254.169.254/latest' }],
      ['overrides.x.http', { http: 'http://[::ffff:127.0.0.1]:8080' }],
      ['overrides.x.http', { http: 'http://staging.svc.cluster.local' }],
      ['overrides.x.http', { http: 'http://evil.com.staging.svc.cluster.local.attacker.example' }],
      ['overrides.x.http', { http: 'http://11.0.0.1' }],
      ['overrides.x.grpc', { grpc: '127.0.0.1:50051' }],
      ['overrides.x.grpc', { grpc: 'ipv4:10.0.0.1:50051,127.0.0.1:50051' }],
      ['overrides.x.grpc', { grpc: 'dns://8.8.8.8/orders.staging.svc.cluster.local:50051' }],
      ['overrides.x.grpc', { grpc: 'unix:///var/run/payments.sock' }],
    ];
    for (const [path, ep] of refused) {
      const r = await sendJson(url, 'PUT', '/v1/sandboxes/bad', { overrides: { x: ep } });
      expect(r.status, JSON.stringify(ep)).toBe(400);
      expect(r.json.error).toBe('endpoint_not_allowed');
      expect(r.json.issues[0].path).toBe(path);
      expect(r.json.message).toContain('10.0.0.0/8');
    }
    const hb = await sendJson(url, 'POST', '/v1/sandboxes/s/heartbeat', {
      service: 'payments',
      http: 'http://127.0.0.1:8080',
    });
    expect(hb.status).toBe(400);
    expect(hb.json.issues[0].path).toBe('http');
    expect((await send(url, 'GET', '/v1/sandboxes/s')).json.announced).toEqual({});
    const hbOk = await sendJson(url, 'POST', '/v1/sandboxes/s/heartbeat', {
      service: 'payments',
      endpoint: { http: 'http://10.9.9.9:8080' },
    });
    expect(hbOk.status).toBe(200);
  });

  it('refuses an allowEndpoints entry that is neither a network nor a host pattern when created', () => {
    return expect(startRegistry({ allowEndpoints: ['10.0.0.0/33'] })).rejects.toThrow(/allowEndpoints/);
  });
});

describe('labels', () => {
  it('?label= matches own labels only: constructor, toString and __proto__ match no sandbox without them', async () => {
    const { url } = await startRegistry();
    await sendJson(url, 'PUT', '/v1/sandboxes/plain', { labels: { team: 'a' } });
    await sendJson(url, 'PUT', '/v1/sandboxes/odd', { labels: { constructor: 'yes' } });
    const names = async (q: string) =>
      (await send(url, 'GET', `/v1/sandboxes?${q}`)).json.sandboxes.map((s: { name: string }) => s.name);
    expect(await names('label=toString')).toEqual([]);
    expect(await names('label=__proto__')).toEqual([]);
    expect(await names('label=hasOwnProperty')).toEqual([]);
    expect(await names('label=constructor')).toEqual(['odd']);
    expect(await names('label=constructor=yes')).toEqual(['odd']);
    expect(await names('label=team')).toEqual(['plain']);
  });

  it('a route group matching on constructor only takes sandboxes that carry that label', async () => {
    const { url } = await startRegistry();
    await sendJson(url, 'PUT', '/v1/sandboxes/plain', { labels: { team: 'a' } });
    await sendJson(url, 'PUT', '/v1/sandboxes/odd', { labels: { constructor: 'x' } });
    const g = await sendJson(url, 'PUT', '/v1/routegroups/g', {
      match: { labels: { constructor: 'x', toString: 'y' }, mode: 'any' },
    });
    expect(g.json.members).toEqual(['odd']);
  });
});

describe('clients that go away', () => {
  it('a client that disconnects mid-body is logged once at info, one line, no stack', async () => {
    const { url, logs } = await startRegistry();
    const { port } = new URL(url);
    const sock = connect(Number(port), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      'PUT /v1/sandboxes/half HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"labels":',
    );
    sock.destroy();
    const line = await until(() => logs.find((l) => /disconnected/.test(l.msg)), 'the disconnect log line');
    expect(line.level).toBe('info');
    expect(line.msg).not.toContain('\n');
    expect(JSON.stringify(line.fields)).not.toMatch(/\\n\s+at /);
    expect(line.fields).toMatchObject({ method: 'PUT', url: '/v1/sandboxes/half' });
    expect((await send(url, 'GET', '/healthz')).status).toBe(200);
    expect(logs.filter((l) => l.level === 'error')).toEqual([]);
    expect((await send(url, 'GET', '/v1/sandboxes/half')).status).toBe(404);
  });
});
