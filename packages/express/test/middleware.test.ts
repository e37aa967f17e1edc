import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { createRuntime, getRoutingKey, type RouteTableSpec } from '@branchline/core';
import { HOP_MARKER } from '@branchline/core/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { branchline } from '../src/index.js';

const require = createRequire(import.meta.url);
const versions = { 'Express 5': require('express'), 'Express 4': require('express4') } as const;

/** What both the baseline route and the sandbox answer. */
interface Echo {
  instance: 'baseline' | 'sandbox';
}

let sandbox: Server;
let sandboxUrl: string;
beforeAll(async () => {
  sandbox = createServer((req, res) => {
    let n = 0;
    req.on('data', (d) => (n += d.length));
    if (req.url?.includes('powered')) res.setHeader('x-powered-by', 'sandbox-app');
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

const routes = (): RouteTableSpec => ({
  sandboxes: [
    { name: 'ord-sb', key: 'ord-key', overrides: { orders: { http: sandboxUrl } } },
    { name: 'pay-sb', key: 'pay-key', overrides: { payments: { http: 'http://127.0.0.1:9' } } },
  ],
});

// Each version twice: the middleware alone, and with `attach(server)` routing before Express.
const setups = Object.entries(versions).flatMap(([name, express]) => [
  { name, express, attached: false },
  { name, express, attached: true },
]);
for (const { name, express, attached } of setups) {
  describe(`branchline() on ${name}${attached ? ', attached to the server' : ''}`, () => {
    let url: string;
    let server: Server;
    let mw: ReturnType<typeof branchline>;
    /** Requests that reached Express (a middleware mounted before Branchline's counts them). */
    let reachedExpress = 0;
    beforeAll(async () => {
      const app = express();
      mw = branchline({ runtime: createRuntime({ service: 'orders', routes: routes() }) });
      app.use((_req: unknown, _res: unknown, next: () => void) => {
        reachedExpress++;
        next();
      });
      app.use(mw);
      app.use(express.json());
      app.post('/echo', (req: { branchline: unknown; body: unknown }, res: { json(v: unknown): void }) => {
        // After body parsing, in a callback Node runs outside the middleware's call stack.
        setImmediate(() =>
          res.json({ instance: 'baseline', info: req.branchline, ctxKey: getRoutingKey(), body: req.body }),
        );
      });
      server = createServer(app);
      if (attached) mw.attach(server);
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    });
    afterAll(async () => {
      await mw.close();
      server.closeAllConnections();
      server.close();
    });

    const send = (path: string, headers: Record<string, string>) =>
      fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ a: 1 }),
      });
    const post = (headers: Record<string, string>) => send('/echo?q=1', headers).then((r) => r.json());

    it('serves a request without a key at baseline with req.branchline empty', async () => {
      expect(await post({})).toEqual({
        instance: 'baseline',
        info: { forwarded: false },
        body: { a: 1 },
      });
    });

    it('serves a key that routes another service here, with the key active after body parsing', async () => {
      expect(await post({ baggage: 'branchline=pay-key' })).toEqual({
        instance: 'baseline',
        info: { key: 'pay-key', forwarded: false },
        ctxKey: 'pay-key',
        body: { a: 1 },
      });
    });

    it('forwards a request whose key routes this service to the sandbox, body included', async () => {
      const before = reachedExpress;
      expect(await post({ baggage: 'branchline=ord-key' })).toEqual({
        instance: 'sandbox',
        url: '/echo?q=1',
        bytes: 7,
      });
      // Attached, Express never sees a forwarded request; mounted alone, Express ran until the
      // middleware forwarded it.
      expect(reachedExpress - before).toBe(attached ? 0 : 1);
    });

    it('relays the sandbox response without the headers Express had set at baseline (X-Powered-By)', async () => {
      const atBaseline = await send('/echo', {});
      expect(((await atBaseline.json()) as Echo).instance).toBe('baseline');
      expect(atBaseline.headers.get('x-powered-by')).toBe('Express');
      const relayed = await send('/echo', { baggage: 'branchline=ord-key' });
      expect(((await relayed.json()) as Echo).instance).toBe('sandbox');
      expect(relayed.headers.get('x-powered-by')).toBeNull();
      // The sandbox's own header arrives once, not next to the baseline's.
      const own = await send('/echo?powered', { baggage: 'branchline=ord-key' });
      expect(((await own.json()) as Echo).instance).toBe('sandbox');
      expect(own.headers.get('x-powered-by')).toBe('sandbox-app');
    });

    it('serves a request that already carries the hop marker here (loop guard)', async () => {
      const r = await post({ baggage: 'branchline=ord-key', [HOP_MARKER]: 'orders' });
      expect(r).toMatchObject({
        instance: 'baseline',
        info: { key: 'ord-key', sandbox: 'ord-sb', forwarded: true },
      });
    });
  });
}

describe('branchline() attached to the server, with fallbackToBaseline', () => {
  it('serves a request whose sandbox is down through Express once, key active, body parsed', async () => {
    const express = versions['Express 5'];
    const app = express();
    const mw = branchline({
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
    let handled = 0;
    app.use(mw);
    app.use(express.json());
    app.post('/x', (req: { branchline: unknown; body: unknown }, res: { json(v: unknown): void }) => {
      handled++;
      setImmediate(() =>
        res.json({ instance: 'baseline', info: req.branchline, ctxKey: getRoutingKey(), body: req.body }),
      );
    });
    const server = createServer(app);
    const undo = mw.attach(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const r = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/x`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', baggage: 'branchline=down-key' },
        body: JSON.stringify({ b: 2 }),
      });
      expect(await r.json()).toEqual({
        instance: 'baseline',
        info: { key: 'down-key', sandbox: 'down', forwarded: false },
        ctxKey: 'down-key',
        body: { b: 2 },
      });
      expect(handled).toBe(1);
    } finally {
      undo();
      await mw.close();
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('branchline() configuration', () => {
  it('throws at creation on a bad option, naming it', () => {
    expect(() => branchline({ service: 'orders', connectTimeoutMs: 0 })).toThrow(/connectTimeoutMs/);
    // The deprecated name is still read, and checked like the new one.
    expect(() => branchline({ service: 'orders', connectTimeout: 0 })).toThrow(/connectTimeoutMs/);
    expect(() => branchline({ sandbox: 'Not_A_Key' })).toThrow(/BRANCHLINE_SANDBOX|sandbox/);
  });
});
