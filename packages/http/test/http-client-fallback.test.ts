// The forwarder's node:http fallback (src/upstream-client.ts, src/node-upstream.ts): chosen by
// option, by BRANCHLINE_HTTP_CLIENT, and on its own for endpoints the built-in client does not
// handle; and it forwards as the built-in client does. (The whole of forward.test.ts also passes
// with BRANCHLINE_HTTP_CLIENT=node, but for a response carrying both Content-Length and
// Transfer-Encoding, which node:http refuses.)

import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { createServer as createTcp, type Socket } from 'node:net';
import { createRuntime, setLogger } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HOP_HEADER, IncomingRouter, SandboxForwarder } from '../src/index.js';
import { startServer, type TestServer } from './servers.js';

const KEY = { baggage: 'branchline=k1' };
let sandbox: TestServer;
const routers: IncomingRouter[] = [];
const servers: Server[] = [];

beforeAll(async () => {
  sandbox = await startServer('sandbox', (req, res, body) => {
    if (req.url?.startsWith('/slow')) return;
    res.writeHead(201, 'Made', { 'content-type': 'application/json', trailer: 'x-sum' });
    res.write(
      JSON.stringify({
        method: req.method,
        url: req.url,
        body,
        authorization: req.headers.authorization ?? null,
        trailers: req.trailers,
      }),
    );
    res.addTrailers({ 'x-sum': String(body.length) });
    res.end();
  });
});
afterEach(async () => {
  await Promise.all(routers.splice(0).map((r) => r.close()));
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    s.close();
  }
});
afterAll(() => sandbox.close());

/** A baseline `orders` instance whose key k1 goes to `endpoint`. */
async function baseline(endpoint: string, extra: Record<string, unknown> = {}) {
  const source = new StaticRouteSource({
    sandboxes: [{ name: 'sb', key: 'k1', overrides: { orders: { http: endpoint } } }],
  });
  const router = new IncomingRouter({
    runtime: createRuntime({ service: 'orders', routes: source }),
    ...extra,
  });
  routers.push(router);
  const server = createServer((req, res) => {
    const route = router.route(req);
    if (route.target) return router.forwarder.forward(req, res, route.target);
    res.end(JSON.stringify({ instance: 'baseline' }));
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, router };
}

/** A request through node:http, to see the status message and trailers too. */
function call(
  url: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    chunks?: string[];
    trailers?: Record<string, string>;
  } = {},
): Promise<{ res: IncomingMessage; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: opts.method ?? 'GET', headers: { ...KEY, ...opts.headers } },
      async (res) => {
        let text = '';
        for await (const c of res) text += c;
        resolve({ res, text });
      },
    );
    req.on('error', reject);
    for (const c of opts.chunks ?? []) req.write(c);
    if (opts.trailers) req.addTrailers(opts.trailers);
    req.end();
  });
}

/** A sandbox answering with both Content-Length and chunked framing: the two clients differ on it. */
async function ambiguousSandbox(): Promise<{ url: string; close(): void }> {
  const sockets = new Set<Socket>();
  const server = createTcp((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('data', () =>
      socket.write(
        'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n',
      ),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('the node:http fallback of the forwarding client', () => {
  it('forwards method, path, a chunked body with trailers, and relays status, message, body and trailers', async () => {
    const b = await baseline(sandbox.url, { httpClient: 'node' });
    expect(b.router.forwarder.client).toBe('node');
    const { res, text } = await call(`${b.url}/orders?x=1`, {
      method: 'POST',
      headers: { trailer: 'x-in' },
      chunks: ['part1-', 'part2'],
      trailers: { 'x-in': 'yes' },
    });
    expect([res.statusCode, res.statusMessage]).toEqual([201, 'Made']);
    expect(JSON.parse(text)).toMatchObject({
      method: 'POST',
      url: '/orders?x=1',
      body: 'part1-part2',
      trailers: { 'x-in': 'yes' },
    });
    expect(res.trailers).toEqual({ 'x-sum': '11' });
    const seen = sandbox.seen.at(-1)!;
    expect(seen.headers[HOP_HEADER]).toBe('orders');
  });

  it('answers 504 on a response timeout and 502 for an unreachable sandbox, naming it', async () => {
    const slow = await baseline(sandbox.url, { httpClient: 'node', responseTimeoutMs: 200 });
    const r1 = await fetch(`${slow.url}/slow`, { headers: KEY });
    expect(r1.status).toBe(504);
    expect(await r1.json()).toMatchObject({ error: 'sandbox_timeout', sandbox: 'sb', endpoint: sandbox.url });
    const down = await baseline('http://127.0.0.1:9', { httpClient: 'node' });
    const r2 = await fetch(down.url, { headers: KEY });
    expect(r2.status).toBe(502);
    expect(await r2.json()).toMatchObject({ error: 'sandbox_unreachable', cause: 'ECONNREFUSED' });
  });

  it('is what BRANCHLINE_HTTP_CLIENT=node selects: the request goes through node:http, whose parser refuses an ambiguous framing the built-in client reads', async () => {
    const amb = await ambiguousSandbox();
    const before = process.env.BRANCHLINE_HTTP_CLIENT;
    try {
      delete process.env.BRANCHLINE_HTTP_CLIENT;
      const builtin = await baseline(amb.url);
      expect(builtin.router.forwarder.client).toBe('builtin');
      expect((await call(builtin.url)).text).toBe('abcdef');
      process.env.BRANCHLINE_HTTP_CLIENT = 'node';
      const viaNode = await baseline(amb.url);
      expect(viaNode.router.forwarder.client).toBe('node');
      const r = await call(viaNode.url);
      expect(r.res.statusCode).toBe(502);
      expect(r.res.headers['x-branchline-error']).toBe('sandbox-unreachable');
      expect(JSON.parse(r.text).cause).toBe('UPSTREAM_BAD_RESPONSE');
    } finally {
      if (before === undefined) delete process.env.BRANCHLINE_HTTP_CLIENT;
      else process.env.BRANCHLINE_HTTP_CLIENT = before;
      amb.close();
    }
  });

  it('carries requests to an endpoint URL with credentials on its own, sending them as Basic authentication', async () => {
    const u = new URL(sandbox.url);
    const b = await baseline(`http://ops:p%40ss@${u.host}`);
    expect(b.router.forwarder.client).toBe('builtin');
    const first = JSON.parse((await call(`${b.url}/a`)).text);
    expect(first.authorization).toBe(`Basic ${Buffer.from('ops:p@ss').toString('base64')}`);
    // The request's own credentials win.
    const own = JSON.parse((await call(`${b.url}/b`, { headers: { authorization: 'Bearer mine' } })).text);
    expect(own.authorization).toBe('Bearer mine');
  });

  it('refuses a bad httpClient option, and warns once about a bad BRANCHLINE_HTTP_CLIENT', () => {
    expect(() => new SandboxForwarder({ httpClient: 'curl' as never })).toThrow(
      /option httpClient must be "builtin" or "node", got "curl"/,
    );
    const warnings: string[] = [];
    const noop = () => {};
    setLogger({ warn: (m: string) => warnings.push(m), error: noop, info: noop, debug: noop });
    const before = process.env.BRANCHLINE_HTTP_CLIENT;
    try {
      process.env.BRANCHLINE_HTTP_CLIENT = 'undici-please';
      expect(new SandboxForwarder().client).toBe('builtin');
      expect(new SandboxForwarder().client).toBe('builtin');
      expect(warnings.filter((w) => w.includes('BRANCHLINE_HTTP_CLIENT'))).toHaveLength(1);
      expect(warnings[0]).toContain('"undici-please" is not "builtin" or "node"');
    } finally {
      if (before === undefined) delete process.env.BRANCHLINE_HTTP_CLIENT;
      else process.env.BRANCHLINE_HTTP_CLIENT = before;
      setLogger(undefined);
    }
  });
});
