import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { counters, createRuntime, StaticRouteSource } from '@branchline/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HOP_HEADER, IncomingRouter } from '../src/index.js';
import { startServer, type TestServer } from './servers.js';

let sandboxA: TestServer;
let sandboxB: TestServer;
const routers: IncomingRouter[] = [];
const servers: Server[] = [];

beforeAll(async () => {
  [sandboxA, sandboxB] = await Promise.all([
    startServer('sandbox-a', (req, res, body) => {
      if (req.url?.startsWith('/trailers')) {
        res.writeHead(201, 'Made', { 'content-type': 'text/plain', trailer: 'x-checksum' });
        res.write('part');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return;
      }
      if (req.url?.startsWith('/slow')) return; // never answers
      res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] });
      res.end(JSON.stringify({ instance: 'sandbox-a', method: req.method, url: req.url, body }));
    }),
    startServer('sandbox-b'),
  ]);
});
afterEach(async () => {
  await Promise.all(routers.splice(0).map((r) => r.close()));
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});
afterAll(() => Promise.all([sandboxA.close(), sandboxB.close()]));

/** A baseline `orders` instance: a plain node:http server that routes with IncomingRouter. */
async function baseline(endpoint: string, extra: Record<string, unknown> = {}) {
  const source = new StaticRouteSource({
    sandboxes: [{ name: 'sb', key: 'k1', overrides: { orders: { http: endpoint } } }],
  });
  const router = new IncomingRouter({
    runtime: createRuntime({ service: 'orders', routeSource: source }),
    ...extra,
  });
  routers.push(router);
  const server = createServer((req, res) => {
    const route = router.route(req);
    if (route.target) {
      router.forwarder.forward(req, res, route.target, () => {
        let n = 0;
        req.on('data', (d) => (n += d.length));
        req.on('end', () => res.end(JSON.stringify({ instance: 'baseline', bytes: n })));
      });
      return;
    }
    res.end(JSON.stringify({ instance: 'baseline' }));
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, source, router };
}

const KEY = { baggage: 'branchline=k1' };

describe('forwarding an incoming request to a sandbox', () => {
  it('relays method, path, query, headers and body; strips hop-by-hop headers; adds the hop marker', async () => {
    const b = await baseline(sandboxA.url);
    // node:http lets the client send connection-level headers that fetch refuses to set.
    const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) =>
      httpRequest(
        `${b.url}/orders/7?x=1&y=%20`,
        {
          method: 'PUT',
          headers: {
            ...KEY,
            'x-app': 'yes',
            connection: 'keep-alive, x-secret',
            'x-secret': 's',
            'keep-alive': 'timeout=5',
          },
        },
        resolve,
      )
        .on('error', reject)
        .end('payload'),
    );
    let text = '';
    for await (const c of res) text += c;
    expect(res.statusCode).toBe(200);
    expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(JSON.parse(text)).toEqual({
      instance: 'sandbox-a',
      method: 'PUT',
      url: '/orders/7?x=1&y=%20',
      body: 'payload',
    });
    const seen = sandboxA.seen.at(-1)!;
    expect(seen.headers['x-app']).toBe('yes');
    expect(seen.headers[HOP_HEADER]).toBe('orders');
    expect(seen.headers['x-secret']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    expect(seen.headers.baggage).toBe('branchline=k1');
  });

  it('relays the status, status message and trailers', async () => {
    const b = await baseline(sandboxA.url);
    const res = await new Promise<import('node:http').IncomingMessage>((resolve) =>
      httpRequest(`${b.url}/trailers`, { headers: KEY }, resolve).end(),
    );
    let body = '';
    for await (const c of res) body += c;
    expect(res.statusCode).toBe(201);
    expect(res.statusMessage).toBe('Made');
    expect(body).toBe('part');
    expect(res.trailers).toEqual({ 'x-checksum': 'abc123' });
  });

  it('answers 504 naming the sandbox when it does not answer within responseTimeout', async () => {
    const b = await baseline(sandboxA.url, { responseTimeout: 300 });
    const r = await fetch(`${b.url}/slow`, { headers: KEY });
    expect(r.status).toBe(504);
    expect(await r.json()).toMatchObject({
      error: 'sandbox_timeout',
      sandbox: 'sb',
      service: 'orders',
      endpoint: sandboxA.url,
    });
  });

  it('falls back to baseline with the whole body when the sandbox is down and fallbackToBaseline is on', async () => {
    const before = counters.forwardFailed;
    const b = await baseline('http://127.0.0.1:9', { fallbackToBaseline: true });
    const r = await fetch(b.url, { method: 'POST', headers: KEY, body: 'x'.repeat(100_000) });
    expect(await r.json()).toEqual({ instance: 'baseline', bytes: 100_000 });
    expect(counters.forwardFailed).toBe(before + 1);
  });

  it('sends new requests to the new endpoint after a rule changes, and closes the old pool', async () => {
    const b = await baseline(sandboxA.url);
    expect((await (await fetch(b.url, { headers: KEY })).json()).instance).toBe('sandbox-a');
    expect(b.router.forwarder.endpoints()).toEqual([sandboxA.url]);
    b.source.update({
      sandboxes: [{ name: 'sb', key: 'k1', overrides: { orders: { http: sandboxB.url } } }],
    });
    expect(b.router.forwarder.endpoints()).toEqual([]);
    expect((await (await fetch(b.url, { headers: KEY })).json()).instance).toBe('sandbox-b');
    expect(b.router.forwarder.endpoints()).toEqual([sandboxB.url]);
  });

  it('rejects bad forwarding options with a TypeError naming the option', () => {
    expect(() => new IncomingRouter({ service: 'x', responseTimeout: -1 })).toThrow(/responseTimeout/);
    expect(() => new IncomingRouter({ service: 'x', fallbackToBaseline: 'yes' as never })).toThrow(
      /fallbackToBaseline/,
    );
  });
});
