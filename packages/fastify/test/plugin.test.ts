import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { createRuntime, getRoutingKey } from '@branchline/core';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { branchline } from '../src/index.js';

let sandbox: Server;
let sandboxUrl: string;
beforeAll(async () => {
  sandbox = createServer((req, res) => {
    let n = 0;
    req.on('data', (d) => (n += d.length));
    req.on('end', () => res.end(JSON.stringify({ instance: 'sandbox', url: req.url, bytes: n })));
  });
  sandbox.listen(0, '127.0.0.1');
  await once(sandbox, 'listening');
  sandboxUrl = `http://127.0.0.1:${(sandbox.address() as { port: number }).port}`;
});
afterAll(() => {
  sandbox.closeAllConnections();
  sandbox.close();
});

describe('the Fastify plugin', () => {
  let app: FastifyInstance;
  let url: string;
  let parsed = 0;
  beforeAll(async () => {
    app = Fastify();
    await app.register(branchline, {
      runtime: createRuntime({
        service: 'orders',
        routes: {
          sandboxes: [
            { name: 'ord-sb', key: 'ord-key', overrides: { orders: { http: sandboxUrl } } },
            { name: 'pay-sb', key: 'pay-key', overrides: { payments: { http: 'http://127.0.0.1:9' } } },
          ],
        },
      }),
    });
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
      parsed++;
      done(null, JSON.parse(body as string));
    });
    app.post('/echo', async (request) => {
      await new Promise((r) => setImmediate(r));
      return { instance: 'baseline', info: request.branchline, ctxKey: getRoutingKey(), body: request.body };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  });
  afterAll(() => app.close());

  const post = (headers: Record<string, string>) =>
    fetch(`${url}/echo?q=1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ a: 1 }),
    }).then((r) => r.json());

  it('serves a request without a key at baseline', async () => {
    expect(await post({})).toEqual({ instance: 'baseline', info: { forwarded: false }, body: { a: 1 } });
  });

  it('runs the handler with the key active after body parsing, and exposes request.branchline', async () => {
    expect(await post({ baggage: 'u=1,branchline=pay-key' })).toEqual({
      instance: 'baseline',
      info: { key: 'pay-key', forwarded: false },
      ctxKey: 'pay-key',
      body: { a: 1 },
    });
  });

  it('forwards from onRequest, before the body is parsed here', async () => {
    const before = parsed;
    expect(await post({ baggage: 'branchline=ord-key' })).toEqual({
      instance: 'sandbox',
      url: '/echo?q=1',
      bytes: 7,
    });
    expect(parsed).toBe(before);
  });

  it('validates options at registration with a TypeError naming the option', async () => {
    const bad = Fastify();
    await expect(
      bad.register(branchline, { service: 'orders', responseTimeoutMs: 'soon' as never }).ready(),
    ).rejects.toThrow(/option responseTimeoutMs/);
    // The deprecated name is still read, and checked like the new one.
    const old = Fastify();
    await expect(
      old.register(branchline, { service: 'orders', responseTimeout: 'soon' as never }).ready(),
    ).rejects.toThrow(/option responseTimeoutMs/);
    const bad2 = Fastify();
    await expect(bad2.register(branchline, { service: 42 as never }).ready()).rejects.toThrow(
      /option service/,
    );
  });

  it('takes routes as an object in its own options, as createRuntime does (docs/options.md)', async () => {
    const a = Fastify();
    await a.register(branchline, {
      service: 'orders',
      routes: {
        sandboxes: [{ name: 'ord-sb', key: 'ord-key', overrides: { orders: { http: sandboxUrl } } }],
      },
    });
    a.get('/x', async () => ({ instance: 'baseline' }));
    await a.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(a.server.address() as { port: number }).port}/x`;
    const routed = await fetch(base, { headers: { baggage: 'branchline=ord-key' } }).then((r) => r.json());
    const plain = await fetch(base).then((r) => r.json());
    expect([routed.instance, plain.instance]).toEqual(['sandbox', 'baseline']);
    await a.close();
    const bad = Fastify();
    await expect(bad.register(branchline, { routes: 42 as never }).ready()).rejects.toThrow(/option routes/);
  });

  it('with fallbackToBaseline serves a request whose sandbox is down here, body parsed as usual', async () => {
    const a = Fastify();
    await a.register(branchline, {
      fallbackToBaseline: true,
      runtime: createRuntime({
        service: 'orders',
        routes: {
          sandboxes: [
            { name: 'down', key: 'down-key', overrides: { orders: { http: 'http://127.0.0.1:9' } } },
          ],
        },
      }),
    });
    a.post('/x', async (request) => ({ instance: 'baseline', ctxKey: getRoutingKey(), body: request.body }));
    await a.listen({ port: 0, host: '127.0.0.1' });
    const r = await fetch(`http://127.0.0.1:${(a.server.address() as { port: number }).port}/x`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', baggage: 'branchline=down-key' },
      body: JSON.stringify({ big: 'y'.repeat(50_000) }),
    });
    const json = (await r.json()) as { instance: string; ctxKey: string; body: { big: string } };
    expect([json.instance, json.ctxKey, json.body.big.length]).toEqual(['baseline', 'down-key', 50_000]);
    await a.close();
  });

  it('is not encapsulated: routes in child plugins get request.branchline too', async () => {
    const a = Fastify();
    await a.register(branchline, { service: 'orders' });
    await a.register(async (child) => {
      child.get('/child', async (request) => ({ info: request.branchline }));
    });
    const r = await a.inject({ url: '/child', headers: { baggage: 'branchline=abc' } });
    expect(r.json()).toEqual({ info: { key: 'abc', forwarded: false } });
    await a.close();
  });
});
