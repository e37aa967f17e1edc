import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { setLogger } from '@branchline/core';
import { branchline } from '@branchline/express';
import { startNode } from '@branchline/test-utils/processes';
import express from 'express';
import { chromium, request as playwrightRequest } from 'playwright-core';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { routingHeaders, setKey, startKeyProxy, withKey } from '../src/index.js';

const cliBin = fileURLToPath(new URL('../../cli/dist/bin.js', import.meta.url));

interface Served {
  servedBy: string;
  baggage: string | null;
  path: string;
  bytes: number;
}
const served = (res: { json(): Promise<unknown> }) => res.json() as Promise<Served>;

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A server that answers with its name and the headers it received. */
function echoServer(name: string, seen: IncomingHttpHeaders[] = []): Server {
  return createServer((req, res) => {
    seen.push(req.headers);
    if (req.url?.endsWith('/redirect')) {
      res.writeHead(302, {
        location: `http://${req.headers.host}${req.url.replace(/redirect$/, 'landing')}`,
      });
      res.end();
      return;
    }
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ servedBy: name, baggage: req.headers.baggage ?? null, path: req.url, bytes }));
    });
  });
}

// A baseline "web" service behind the Branchline Express middleware, and a sandbox instance of it
// that the key `pr-42` selects: what a test of a real staging environment looks like.
let baselineApp: express.Express;
let baselineUrl: string;
let sandboxUrl: string;
let closedUrl: string;
const servers: Server[] = [];
let closeMiddleware: () => Promise<void>;

beforeAll(async () => {
  const sandbox = echoServer('sandbox pr-42');
  servers.push(sandbox);
  sandboxUrl = await listen(sandbox);
  const closed = createServer();
  closedUrl = await listen(closed);
  await new Promise((r) => closed.close(r));

  const mw = branchline({
    service: 'web',
    routes: { sandboxes: [{ name: 'pr-42', key: 'pr-42', overrides: { web: { http: sandboxUrl } } }] },
  });
  closeMiddleware = () => mw.close();
  baselineApp = express();
  baselineApp.use(mw);
  baselineApp.all('/{*path}', (req, res) => {
    res.json({ servedBy: 'baseline', baggage: req.headers.baggage ?? null, path: req.url, bytes: 0 });
  });
  const base = createServer(baselineApp);
  servers.push(base);
  baselineUrl = await listen(base);
});

afterAll(async () => {
  await closeMiddleware?.();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

describe('withKey (fetch)', () => {
  it('routes a request to the sandbox its key selects; without the helper the baseline serves', async () => {
    const plain = await served(await fetch(`${baselineUrl}/checkout`));
    const keyed = await served(await withKey('pr-42')(`${baselineUrl}/checkout`));
    expect(plain.servedBy).toBe('baseline');
    expect(keyed.servedBy).toBe('sandbox pr-42');
    expect(keyed.baggage).toBe('branchline=pr-42');
  });

  it('merges the key into baggage the caller set, from init or from a Request, keeping other members', async () => {
    const keyed = withKey('pr-42');
    const fromInit = await served(
      await keyed(`${baselineUrl}/a`, { headers: { baggage: 'userid=7,branchline=old-key' } }),
    );
    expect(fromInit.baggage).toBe('userid=7,branchline=pr-42');
    const fromRequest = await served(
      await keyed(new Request(`${baselineUrl}/b`, { headers: { baggage: 'tenant=acme' } })),
    );
    expect(fromRequest).toMatchObject({ servedBy: 'sandbox pr-42', baggage: 'tenant=acme,branchline=pr-42' });
  });

  it('wraps the fetch it is given and honours a custom baggage member name', async () => {
    const seen: string[] = [];
    const inner = (input: string | URL | Request, init?: RequestInit) => {
      seen.push(new Headers(init?.headers).get('baggage') ?? '');
      return fetch(input, init);
    };
    await withKey('pr-42', { fetch: inner, baggageKey: 'routing' })(`${baselineUrl}/c`);
    expect(seen).toEqual(['routing=pr-42']);
  });

  it('rejects a value that is not a routing key, saying why', () => {
    expect(() => withKey('PR 42')).toThrow(/not a routing key: "PR 42" must be lowercase/);
  });
});

describe('setKey (supertest)', () => {
  it('sends the key with a supertest request, which the sandbox then serves', async () => {
    const res = await request(baselineApp).get('/orders').use(setKey('pr-42')).expect(200);
    expect(res.body.servedBy).toBe('sandbox pr-42');
    const plain = await request(baselineApp).get('/orders').expect(200);
    expect(plain.body.servedBy).toBe('baseline');
  });

  it('keeps baggage set before it', async () => {
    const res = await request(baselineApp).get('/o').set('baggage', 'userid=9').use(setKey('pr-42'));
    expect(res.body.baggage).toBe('userid=9,branchline=pr-42');
  });
});

describe('routingHeaders (Playwright extraHTTPHeaders)', () => {
  it('returns the header object, which a Playwright request context sends on every request', async () => {
    expect(routingHeaders('pr-42')).toEqual({ baggage: 'branchline=pr-42' });
    const ctx = await playwrightRequest.newContext({ extraHTTPHeaders: routingHeaders('pr-42') });
    try {
      const res = await ctx.get(`${baselineUrl}/page`);
      expect((await served(res)).servedBy).toBe('sandbox pr-42');
    } finally {
      await ctx.dispose();
    }
  });
});

describe('in a real browser (Chromium)', () => {
  const executablePath = process.env.BRANCHLINE_CHROMIUM ?? '/usr/bin/chromium';

  it('a page opened in a context with routingHeaders, and a plain page opened through the proxy, both reach the sandbox', async () => {
    if (!existsSync(executablePath))
      throw new Error(
        `Chromium is not installed at ${executablePath}; run \`bash scripts/install-browser.sh\` or set BRANCHLINE_CHROMIUM`,
      );
    const browser = await chromium.launch({
      executablePath,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
      timeout: 60_000,
    });
    const proxy = await startKeyProxy({ key: 'pr-42', to: baselineUrl });
    try {
      const keyed = await browser.newContext({ extraHTTPHeaders: routingHeaders('pr-42') });
      const page = await keyed.newPage();
      await page.goto(`${baselineUrl}/page`);
      expect(JSON.parse((await page.textContent('body')) ?? '{}').servedBy).toBe('sandbox pr-42');

      const plain = await browser.newContext();
      const plainPage = await plain.newPage();
      await plainPage.goto(`${baselineUrl}/page`);
      expect(JSON.parse((await plainPage.textContent('body')) ?? '{}').servedBy).toBe('baseline');
      await plainPage.goto(`${proxy.url}/page`);
      expect(JSON.parse((await plainPage.textContent('body')) ?? '{}').servedBy).toBe('sandbox pr-42');
    } finally {
      await proxy.close();
      await browser.close();
    }
  }, 90_000);
});

describe('startKeyProxy', () => {
  it('relays requests with the key added, so a tool that cannot set headers reaches the sandbox', async () => {
    const proxy = await startKeyProxy({ key: 'pr-42', to: baselineUrl });
    try {
      const res = await fetch(`${proxy.url}/checkout?x=1`, { headers: { baggage: 'userid=3' } });
      expect(await served(res)).toMatchObject({
        servedBy: 'sandbox pr-42',
        baggage: 'userid=3,branchline=pr-42',
        path: '/checkout?x=1',
      });
      expect(proxy.requests).toBe(1);
      expect(proxy.header).toBe('baggage: branchline=pr-42');
    } finally {
      await proxy.close();
    }
  });

  it('streams a 5 MB request body through, prefixes the target path, sets Host to the target', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const upstream = echoServer('upstream', seen);
    servers.push(upstream);
    const upstreamUrl = await listen(upstream);
    const proxy = await startKeyProxy({ key: 'pr-42', to: `${upstreamUrl}/api/` });
    try {
      const body = Buffer.alloc(5 * 1024 * 1024, 7);
      const res = await fetch(`${proxy.url}/upload`, { method: 'POST', body });
      expect(await served(res)).toMatchObject({ path: '/api/upload', bytes: body.length });
      expect(seen[0]?.host).toBe(new URL(upstreamUrl).host);
      const redirect = await fetch(`${proxy.url}/redirect`, { redirect: 'manual' });
      expect(redirect.status).toBe(302);
      expect(redirect.headers.get('location')).toBe(`${proxy.url}/landing`);
    } finally {
      await proxy.close();
    }
  });

  it('relays a WebSocket upgrade with the key in its handshake', async () => {
    const wsServer = createServer();
    const wss = new WebSocketServer({ server: wsServer });
    let handshakeBaggage: string | undefined;
    wss.on('connection', (socket, req) => {
      handshakeBaggage = String(req.headers.baggage);
      socket.on('message', (m) => socket.send(`echo ${m}`));
    });
    servers.push(wsServer);
    const wsUrl = await listen(wsServer);
    const proxy = await startKeyProxy({ key: 'pr-42', to: wsUrl });
    try {
      const client = new WebSocket(`${proxy.url.replace('http', 'ws')}/live`);
      await once(client, 'open');
      client.send('hi');
      const [reply] = await once(client, 'message');
      expect(String(reply)).toBe('echo hi');
      expect(handshakeBaggage).toBe('branchline=pr-42');
      client.close();
    } finally {
      wss.close();
      await proxy.close();
    }
  });

  it('answers 504 after responseTimeoutMs, and still honours the deprecated responseTimeout (warned once)', async () => {
    const silent = createServer(() => {}); // accepts requests and never answers
    servers.push(silent);
    const silentUrl = await listen(silent);
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, error() {}, warn: (msg) => warnings.push(msg) });
    try {
      for (const options of [
        { responseTimeoutMs: 200 },
        { responseTimeout: 200 },
        { responseTimeout: 200 },
      ]) {
        const proxy = await startKeyProxy({ key: 'pr-42', to: silentUrl, ...options });
        try {
          const res = await fetch(`${proxy.url}/x`);
          expect(res.status).toBe(504);
          expect(await res.text()).toContain('did not answer within 200 ms');
        } finally {
          await proxy.close();
        }
      }
    } finally {
      setLogger(undefined);
      silent.closeAllConnections();
    }
    const deprecations = warnings.filter((w) => w.includes('option responseTimeout is deprecated'));
    expect(deprecations).toHaveLength(1);
    expect(deprecations[0]).toMatch(/use responseTimeoutMs/);
  });

  it('answers 502 naming the target when nothing listens there', async () => {
    const proxy = await startKeyProxy({ key: 'pr-42', to: closedUrl });
    try {
      const res = await fetch(`${proxy.url}/x`);
      expect(res.status).toBe(502);
      expect(await res.text()).toContain(`could not reach ${closedUrl} (ECONNREFUSED)`);
    } finally {
      await proxy.close();
    }
  });

  it('refuses a bad key or target when it starts, not on the first request', async () => {
    await expect(startKeyProxy({ key: 'Bad_Key', to: baselineUrl })).rejects.toThrow(/not a routing key/);
    await expect(startKeyProxy({ key: 'pr-42', to: 'gateway:8080' })).rejects.toThrow(
      /must be an http:\/\/ or https:\/\/ URL/,
    );
    await expect(startKeyProxy({ key: 'pr-42', to: 'not a url' })).rejects.toThrow(/is not a URL/);
  });
});

describe('branchline proxy (CLI)', () => {
  it('runs the proxy until SIGTERM and prints where to point the tool', async () => {
    const proxy = startNode(cliBin, ['proxy', '--key', 'pr-42', '--to', baselineUrl, '--port', '0']);
    try {
      const url = (await proxy.waitFor(/listening on http:\/\/\S+/, 20_000)).slice('listening on '.length);
      expect(proxy.output()).toContain(`→ ${baselineUrl} (adds baggage: branchline=pr-42)`);
      const res = await fetch(`${url}/checkout`);
      expect((await served(res)).servedBy).toBe('sandbox pr-42');
      const exited = once(proxy.child, 'exit');
      proxy.child.kill('SIGTERM');
      const [code] = await exited;
      expect(code).toBe(0);
    } finally {
      await proxy.stop('SIGKILL');
    }
  });

  it('exits with the usage code and an explanation for an invalid key', async () => {
    const child = spawn(process.execPath, [cliBin, 'proxy', '--key', 'NOPE', '--to', baselineUrl], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d;
    });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(err).toContain('key is not a routing key: "NOPE"');
  });
});
