import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { createRuntime, setLogger } from '@branchline/core';
import { counters, StaticRouteSource } from '@branchline/core/transport';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { forwardRequestHeaders, HOP_MARKER, IncomingRouter } from '../src/index.js';
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
    runtime: createRuntime({ service: 'orders', routes: source }),
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
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('forwarding an incoming request to a sandbox', () => {
  it('relays method, path, query, headers (trace context included) and body; strips hop-by-hop headers; adds the hop marker', async () => {
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
            traceparent: TRACEPARENT,
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
    expect(seen.headers[HOP_MARKER]).toBe('orders');
    expect(seen.headers['x-secret']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    expect(seen.headers.baggage).toBe('branchline=k1');
    // No tracing in this process: the client's trace context goes on as it came.
    expect(seen.headers.traceparent).toBe(TRACEPARENT);
  });

  it('forwardRequestHeaders drops what every Connection line lists, like the relay', () => {
    const req = {
      rawHeaders: [
        'Host',
        'orders:80',
        'Connection',
        'x-one',
        'X-One',
        '1',
        'connection',
        'keep-alive, X-Two',
        'X-Two',
        '2',
        'Keep-Alive',
        'timeout=5',
        'X-App',
        'yes',
      ],
    } as unknown as import('node:http').IncomingMessage;
    expect(forwardRequestHeaders(req, 'orders', true)).toEqual([
      'Host',
      'orders:80',
      'X-App',
      'yes',
      HOP_MARKER,
      'orders',
    ]);
    expect(forwardRequestHeaders(req, 'orders', false)).toEqual(['X-App', 'yes', HOP_MARKER, 'orders']);
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

  it('answers 504 naming the sandbox when it does not answer within responseTimeoutMs', async () => {
    const b = await baseline(sandboxA.url, { responseTimeoutMs: 300 });
    const r = await fetch(`${b.url}/slow`, { headers: KEY });
    expect(r.status).toBe(504);
    expect(await r.json()).toMatchObject({
      error: 'sandbox_timeout',
      sandbox: 'sb',
      service: 'orders',
      endpoint: sandboxA.url,
    });
  });

  it('still honours the deprecated responseTimeout, and says once which option replaces it', async () => {
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, error() {}, warn: (msg) => warnings.push(msg) });
    try {
      const b = await baseline(sandboxA.url, { responseTimeout: 300 });
      expect((await fetch(`${b.url}/slow`, { headers: KEY })).status).toBe(504);
      await baseline(sandboxA.url, { responseTimeout: 400 });
    } finally {
      setLogger(undefined);
    }
    const deprecations = warnings.filter((w) => w.includes('option responseTimeout is deprecated'));
    expect(deprecations).toHaveLength(1);
    expect(deprecations[0]).toMatch(/use responseTimeoutMs/);
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
    expect(((await (await fetch(b.url, { headers: KEY })).json()) as { instance: string }).instance).toBe(
      'sandbox-a',
    );
    expect(b.router.forwarder.endpoints()).toEqual([sandboxA.url]);
    b.source.update({
      sandboxes: [{ name: 'sb', key: 'k1', overrides: { orders: { http: sandboxB.url } } }],
    });
    expect(b.router.forwarder.endpoints()).toEqual([]);
    expect(((await (await fetch(b.url, { headers: KEY })).json()) as { instance: string }).instance).toBe(
      'sandbox-b',
    );
    expect(b.router.forwarder.endpoints()).toEqual([sandboxB.url]);
  });

  it('rejects bad forwarding options with a TypeError naming the option', () => {
    expect(() => new IncomingRouter({ service: 'x', responseTimeoutMs: -1 })).toThrow(/responseTimeoutMs/);
    expect(() => new IncomingRouter({ service: 'x', fallbackToBaseline: 'yes' as never })).toThrow(
      /fallbackToBaseline/,
    );
  });
});

/** A raw TCP "sandbox" that answers every request head with `reply(head)` (for framing edge cases). */
async function rawSandbox(reply: (head: string, socket: import('node:net').Socket) => void) {
  const { createServer: createTcp } = await import('node:net');
  const heads: string[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = createTcp((socket) => {
    sockets.add(socket);
    let buf = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => {
      buf += d;
      let end = buf.indexOf('\r\n\r\n');
      while (end !== -1) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        heads.push(head);
        reply(head, socket);
        end = buf.indexOf('\r\n\r\n');
      }
    });
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url,
    heads,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function get(url: string, init: RequestInit = {}) {
  const r = await fetch(url, { ...init, headers: { ...KEY, ...(init.headers as Record<string, string>) } });
  return { status: r.status, headers: r.headers, text: await r.text() };
}

describe('the forwarding client', () => {
  it('relays HEAD, 204 and 304 responses without waiting for a body', async () => {
    const raw = await rawSandbox((head, socket) => {
      if (head.startsWith('HEAD')) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-h: 1\r\n\r\n');
      else if (head.includes('/nc')) socket.write('HTTP/1.1 204 No Content\r\n\r\n');
      else socket.write('HTTP/1.1 304 Not Modified\r\netag: "e"\r\n\r\n');
    });
    try {
      const b = await baseline(raw.url);
      const h = await get(b.url, { method: 'HEAD' });
      expect([h.status, h.headers.get('content-length'), h.headers.get('x-h')]).toEqual([200, '12', '1']);
      expect((await get(`${b.url}/nc`)).status).toBe(204);
      const nm = await get(`${b.url}/nm`);
      expect([nm.status, nm.headers.get('etag')]).toEqual([304, '"e"']);
      // All three rode one kept-alive connection.
      expect(raw.heads).toHaveLength(3);
    } finally {
      await raw.close();
    }
  });

  it('relays chunked, close-delimited and 1xx-preceded responses, and drops Content-Length next to Transfer-Encoding', async () => {
    const raw = await rawSandbox((head, socket) => {
      if (head.includes('/chunked'))
        socket.write(
          'HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n',
        );
      else if (head.includes('/early'))
        socket.write(
          'HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok',
        );
      else socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close');
    });
    try {
      const b = await baseline(raw.url);
      expect((await get(`${b.url}/chunked`)).text).toBe('abcdef');
      expect((await get(`${b.url}/early`)).text).toBe('ok');
      expect((await get(`${b.url}/close`)).text).toBe('until close');
      expect((await get(`${b.url}/chunked`)).text).toBe('abcdef');
    } finally {
      await raw.close();
    }
  });

  it('reads response header names in any case and values without surrounding whitespace, and honours Connection', async () => {
    const sockets = new Set<unknown>();
    const raw = await rawSandbox((head, socket) => {
      sockets.add(socket);
      if (head.includes('/close'))
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      else
        socket.write(
          'HTTP/1.1 200 OK\r\nCONTENT-LENGTH:\t3 \r\nConnection: Keep-Alive, X-Private\r\nX-Private: secret\r\nX-Public:  \tv1\t\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nabc',
        );
    });
    try {
      const b = await baseline(raw.url);
      for (let i = 0; i < 2; i++) {
        const r = await get(`${b.url}/listed`);
        expect([r.text, r.headers.get('x-private'), r.headers.get('x-public')]).toEqual(['abc', null, 'v1']);
        expect(r.headers.get('date')).toBe('Mon, 01 Jan 2024 00:00:00 GMT');
      }
      expect(sockets.size).toBe(1);
      expect((await get(`${b.url}/close`)).text).toBe('ok');
      // The sandbox said close: the next request opens a new connection.
      expect((await get(`${b.url}/listed`)).text).toBe('abc');
      expect(sockets.size).toBe(2);
    } finally {
      await raw.close();
    }
  });

  it('relays small and large bodies byte for byte', async () => {
    const small = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const large = Buffer.alloc(70_000, small);
    const raw = await rawSandbox((head, socket) => {
      const body = head.includes('/large') ? large : Buffer.concat([small, Buffer.from('é€😀')]);
      socket.write(
        Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`), body]),
      );
    });
    try {
      const b = await baseline(raw.url);
      for (const path of ['/small', '/large', '/small']) {
        const r = await fetch(`${b.url}${path}`, { headers: KEY });
        const got = Buffer.from(await r.arrayBuffer());
        const want = path === '/large' ? large : Buffer.concat([small, Buffer.from('é€😀')]);
        expect(got.equals(want)).toBe(true);
      }
    } finally {
      await raw.close();
    }
  });

  it('answers 502 naming the sandbox when the response is malformed', async () => {
    const raw = await rawSandbox((_head, socket) => socket.write('NOT HTTP AT ALL\r\n\r\n'));
    try {
      const b = await baseline(raw.url);
      const r = await get(b.url);
      expect(r.status).toBe(502);
      expect(JSON.parse(r.text)).toMatchObject({
        error: 'sandbox_unreachable',
        sandbox: 'sb',
        endpoint: raw.url,
      });
    } finally {
      await raw.close();
    }
  });

  it('answers 502 when the sandbox sends a response head past the limit, and cuts a body whose chunk-size line is', async () => {
    // A head that never ends (no blank line within 64 KB): nothing was sent yet, so a 502.
    const endlessHead = await rawSandbox((_head, socket) =>
      socket.write(`HTTP/1.1 200 OK\r\nx-big: ${'x'.repeat(70 * 1024)}`),
    );
    try {
      const r = await get((await baseline(endlessHead.url)).url);
      expect(r.status).toBe(502);
      expect(JSON.parse(r.text)).toMatchObject({ sandbox: 'sb', endpoint: endlessHead.url });
    } finally {
      await endlessHead.close();
    }
    // A chunk-size line that never ends (no CRLF within 8 KB) after a good head: the response
    // to the client is cut off (as a proxy must), not left hanging.
    const endlessChunk = await rawSandbox((_head, socket) =>
      socket.write(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${'f'.repeat(10 * 1024)}`),
    );
    try {
      const b = await baseline(endlessChunk.url);
      await expect(get(b.url)).rejects.toThrow();
    } finally {
      await endlessChunk.close();
    }
  });

  it('sends a chunked request body chunked, with the hop marker and the endpoint host when preserveHost is off', async () => {
    const b = await baseline(sandboxA.url, { preserveHost: false });
    const { Readable } = await import('node:stream');
    const r = await fetch(b.url, {
      method: 'POST',
      headers: KEY,
      body: Readable.toWeb(Readable.from(['part1-', 'part2'])) as ReadableStream,
      duplex: 'half',
    } as RequestInit);
    expect(((await r.json()) as { body: string }).body).toBe('part1-part2');
    const seen = sandboxA.seen.at(-1)!;
    expect(seen.headers['transfer-encoding']).toBe('chunked');
    expect(seen.headers.host).toBe(new URL(sandboxA.url).host);
    expect(seen.headers[HOP_MARKER]).toBe('orders');
  });

  it('sends a request again on a fresh connection when a kept-alive one closes without answering', async () => {
    const served = new WeakMap<object, number>();
    const raw = await rawSandbox((_head, socket) => {
      const n = (served.get(socket) ?? 0) + 1;
      served.set(socket, n);
      // The second request on a connection finds it closing (as after a keep-alive timeout).
      if (n === 2) socket.destroy();
      else socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
    try {
      const b = await baseline(raw.url);
      expect((await get(b.url)).text).toBe('ok');
      expect((await get(b.url)).text).toBe('ok');
      expect(raw.heads).toHaveLength(3);
    } finally {
      await raw.close();
    }
  });

  it('does not reuse a connection on which the sandbox sent more than the response, even for a queued request', async () => {
    const seenOn = new Map<string, import('node:net').Socket>();
    const raw = await rawSandbox((head, socket) => {
      const path = head.split(' ')[1]!;
      seenOn.set(path, socket);
      // The first answer is followed by bytes nobody asked for: that connection is out of step.
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok${path === '/one' ? 'STRAY' : ''}`);
    });
    try {
      // One connection: the second request waits in the queue while the first is answered.
      const b = await baseline(raw.url, { connections: 1 });
      const [one, two] = await Promise.all([get(`${b.url}/one`), get(`${b.url}/two`)]);
      expect([one.text, two.text]).toEqual(['ok', 'ok']);
      expect(seenOn.get('/two')).toBeDefined();
      expect(seenOn.get('/two')).not.toBe(seenOn.get('/one'));
    } finally {
      await raw.close();
    }
  });

  it('opens a fresh connection when the sandbox closed an idle one, and caps connections per endpoint', async () => {
    const s = await startServer('short-keepalive');
    s.server.keepAliveTimeout = 30;
    try {
      const b = await baseline(s.url, { connections: 2 });
      expect((await get(b.url)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 80));
      expect((await get(b.url)).status).toBe(200);
      let open = 0;
      s.server.on('connection', () => open++);
      const before = open;
      const all = await Promise.all(Array.from({ length: 10 }, () => get(b.url)));
      expect(all.every((r) => r.status === 200)).toBe(true);
      expect(open - before).toBeLessThanOrEqual(2);
    } finally {
      await s.close();
    }
  });
});

describe('request trailers', () => {
  it('are forwarded with a chunked request body', async () => {
    let trailers: Record<string, string | undefined> = {};
    const s = await startServer('trailers', (req, res, body) => {
      trailers = req.trailers;
      res.end(body);
    });
    try {
      const b = await baseline(s.url);
      const res = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
        const r = httpRequest(b.url, { method: 'POST', headers: { ...KEY, trailer: 'x-sum' } }, resolve);
        r.on('error', reject);
        r.write('abc');
        r.addTrailers({ 'x-sum': '42' });
        r.end();
      });
      let text = '';
      for await (const c of res) text += c;
      expect(text).toBe('abc');
      expect(trailers).toEqual({ 'x-sum': '42' });
    } finally {
      await s.close();
    }
  });
});
