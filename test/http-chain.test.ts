import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

const fixture = fileURLToPath(new URL('./fixtures/http/service.mjs', import.meta.url));

interface Hop {
  status?: number;
  instance: string;
  key?: string;
  forwarded: boolean;
  ctxKey?: string;
  baggageLines: number;
  next?: Hop;
}

const baggage = (key: string) => ({ baggage: `userid=alice,branchline=${key}` });

/** Starts the chain: frontend (Express 4) → orders (Fastify) → payments (Express 5), plus sandboxes. */
async function startChain(otel: boolean) {
  const [front, ordersBase, ordersSb, payBase, paySb, closed] = await Promise.all(
    Array.from({ length: 6 }, () => freePort()),
  );
  const url = (p: number | undefined) => `http://127.0.0.1:${p}`;
  const routes = JSON.stringify({
    sandboxes: [
      {
        name: 'pay-sb',
        key: 'pay-key',
        labels: { feature: 'checkout' },
        overrides: { payments: { http: url(paySb) } },
      },
      {
        name: 'ord-sb',
        key: 'ord-key',
        labels: { feature: 'checkout' },
        overrides: { orders: { http: url(ordersSb) } },
      },
      { name: 'loop-sb', key: 'loop-key', overrides: { orders: { http: url(ordersBase) } } },
      { name: 'down-sb', key: 'down-key', overrides: { orders: { http: url(closed) } } },
      { name: 'pdown-sb', key: 'pdown-key', overrides: { payments: { http: url(closed) } } },
    ],
    groups: [{ name: 'checkout', key: 'grp-key', match: { labels: { feature: 'checkout' } } }],
  });
  const external = createServer((req, res) => {
    seenByExternal.push(req.headers);
    res.end(req.headers.baggage ?? 'none');
  });
  const seenByExternal: IncomingHttpHeaders[] = [];
  external.listen(0, '127.0.0.1');
  await once(external, 'listening');
  const extPort = (external.address() as { port: number }).port;
  const common = {
    BRANCHLINE_ROUTES: routes,
    BRANCHLINE_LOG_LEVEL: 'error',
    OTEL: otel ? '1' : '0',
    OTEL_TRACES_EXPORTER: 'none',
    OTEL_METRICS_EXPORTER: 'none',
    OTEL_LOGS_EXPORTER: 'none',
    OTEL_SDK_DISABLED: undefined,
    EXTERNAL: `http://127.0.0.1:${extPort}`,
  };
  const spec: [string, Record<string, string | undefined>][] = [
    [
      'frontend',
      {
        FRAMEWORK: 'express4',
        PORT: String(front),
        BRANCHLINE_SERVICE: 'frontend',
        DOWNSTREAM: url(ordersBase),
        DOWNSTREAM_SERVICE: 'orders',
        OUTGOING: 'fetch',
        OUTGOING_ROUTE: '0',
      },
    ],
    [
      'orders-base',
      {
        FRAMEWORK: 'fastify',
        PORT: String(ordersBase),
        BRANCHLINE_SERVICE: 'orders',
        DOWNSTREAM: url(payBase),
        DOWNSTREAM_SERVICE: 'payments',
        OUTGOING: 'node-http',
      },
    ],
    [
      'orders-sb',
      {
        FRAMEWORK: 'fastify',
        PORT: String(ordersSb),
        BRANCHLINE_SERVICE: 'orders',
        BRANCHLINE_SANDBOX: 'ord-sb',
        DOWNSTREAM: url(payBase),
        DOWNSTREAM_SERVICE: 'payments',
        OUTGOING: 'node-http',
      },
    ],
    [
      'payments-base',
      { FRAMEWORK: 'express', PORT: String(payBase), BRANCHLINE_SERVICE: 'payments', FALLBACK: '1' },
    ],
    [
      'payments-sb',
      {
        FRAMEWORK: 'express',
        PORT: String(paySb),
        BRANCHLINE_SERVICE: 'payments',
        BRANCHLINE_SANDBOX: 'pay-sb',
      },
    ],
  ];
  const procs: RunningProcess[] = spec.map(([instance, env]) =>
    startNode(fixture, [], { ...common, ...env, INSTANCE: instance }),
  );
  await Promise.all(procs.map((p) => p.waitFor(/^ready /m, 60_000)));
  return {
    front: url(front),
    ordersBase: url(ordersBase),
    ordersSb: url(ordersSb),
    payBase: url(payBase),
    closed: url(closed),
    seenByExternal,
    async stop() {
      await Promise.all(procs.map((p) => p.stop()));
      external.close();
    },
  };
}

type Chain = Awaited<ReturnType<typeof startChain>>;

async function get(url: string, headers: Record<string, string> = {}) {
  const r = await fetch(url, { headers });
  return { status: r.status, json: (await r.json()) as Hop & Record<string, unknown> };
}

/** instance names of each hop, frontend first. */
function served(h: Hop | undefined): string[] {
  const out: string[] = [];
  for (let x = h; x; x = x.next) out.push(x.instance);
  return out;
}

function chainSpec(otel: boolean) {
  let c: Chain;
  beforeAll(async () => {
    c = await startChain(otel);
  }, 120_000);
  afterAll(() => c?.stop());

  it('without a key every hop is served by baseline', async () => {
    const { json } = await get(`${c.front}/chain`);
    expect(served(json)).toEqual(['frontend', 'orders-base', 'payments-base']);
    expect(json.next?.key).toBeUndefined();
  });

  it('a key whose sandbox overrides payments reaches the payments sandbox; orders stays baseline', async () => {
    const { json } = await get(`${c.front}/chain`, baggage('pay-key'));
    expect(served(json)).toEqual(['frontend', 'orders-base', 'payments-sb']);
    expect(json.next?.ctxKey).toBe('pay-key');
    expect(json.next?.next?.key).toBe('pay-key');
    // Merged, never duplicated: each hop received exactly one baggage header.
    expect([json.next?.baggageLines, json.next?.next?.baggageLines]).toEqual([1, 1]);
  });

  it('a key whose sandbox overrides only orders is forwarded to the orders sandbox; payments stays baseline', async () => {
    const { json } = await get(`${c.front}/chain`, baggage('ord-key'));
    expect(served(json)).toEqual(['frontend', 'orders-sb', 'payments-base']);
    expect(json.next?.forwarded).toBe(true);
    expect(json.next?.next?.key).toBe('ord-key');
  });

  it('a call to an external host leaves without the routing key (fetch and node:http)', async () => {
    const before = c.seenByExternal.length;
    const { json } = await get(`${c.front}/external`, baggage('pay-key'));
    expect(json.ctxKey).toBe('pay-key');
    expect(json.viaFetch).not.toContain('branchline=');
    expect(json.viaNode).not.toContain('branchline=');
    const seen = c.seenByExternal.slice(before);
    expect(seen).toHaveLength(2);
    for (const h of seen) expect(h.baggage ?? '').not.toContain('branchline');
  });

  if (otel) return;

  it('an invalid key is ignored: every hop is baseline', async () => {
    const { json } = await get(`${c.front}/chain`, { baggage: 'branchline=PR_42!' });
    expect(served(json)).toEqual(['frontend', 'orders-base', 'payments-base']);
    expect(json.key).toBeUndefined();
  });

  it('a route-group key selects both sandboxes of the group', async () => {
    const { json } = await get(`${c.front}/chain`, baggage('grp-key'));
    expect(served(json)).toEqual(['frontend', 'orders-sb', 'payments-sb']);
  });

  it('a request that would be forwarded twice is served where it is, and counted', async () => {
    const before = (await get(`${c.ordersBase}/metrics`)).json.loopPrevented as number;
    const { json } = await get(`${c.front}/chain`, baggage('loop-key'));
    // orders-base forwarded to itself once; the second arrival carried the hop marker.
    expect(served(json)).toEqual(['frontend', 'orders-base', 'payments-base']);
    expect(json.next?.forwarded).toBe(true);
    const after = (await get(`${c.ordersBase}/metrics`)).json.loopPrevented as number;
    expect(after).toBe(before + 1);
  });

  it('a sandbox that is down gets a 502 naming the sandbox, the service and the endpoint', async () => {
    const r = await fetch(`${c.ordersBase}/chain`, { headers: baggage('down-key') });
    expect(r.status).toBe(502);
    const body = (await r.json()) as Record<string, string>;
    expect(body).toMatchObject({ sandbox: 'down-sb', service: 'orders', endpoint: c.closed });
    expect(body.message).toContain('down-sb');
  });

  it('with fallbackToBaseline a sandbox that is down is served by baseline', async () => {
    const { status, json } = await get(`${c.payBase}/chain`, baggage('pdown-key'));
    expect(status).toBe(200);
    expect(json.instance).toBe('payments-base');
    expect(json.ctxKey).toBe('pdown-key');
  });

  it('streams a 10 MB upload to the sandbox', async () => {
    const body = Buffer.alloc(10 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 4096) body[i] = i & 0xff;
    const r = await fetch(`${c.ordersBase}/upload`, {
      method: 'POST',
      headers: { ...baggage('ord-key'), 'content-type': 'application/octet-stream' },
      body,
    });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({
      instance: 'orders-sb',
      bytes: body.length,
      sha256: createHash('sha256').update(body).digest('hex'),
    });
  });

  it('streams a 10 MB download from the sandbox', async () => {
    const size = 10 * 1024 * 1024;
    const r = await fetch(`${c.ordersBase}/download?size=${size}`, { headers: baggage('ord-key') });
    expect(r.headers.get('x-instance')).toBe('orders-sb');
    const buf = Buffer.from(await r.arrayBuffer());
    expect(buf.length).toBe(size);
    expect(buf.subarray(0, 9).toString()).toBe('orders-sb');
  });

  it('relays a Server-Sent Events stream from the sandbox event by event', async () => {
    const r = await fetch(`${c.ordersBase}/sse`, { headers: baggage('ord-key') });
    expect(r.headers.get('content-type')).toContain('text/event-stream');
    const text = await r.text();
    expect(text).toBe('data: orders-sb-0\n\ndata: orders-sb-1\n\ndata: orders-sb-2\n\n');
  });

  it('forwards a WebSocket upgrade to the sandbox, and serves one without a key at baseline', async () => {
    const talk = async (headers: Record<string, string>) => {
      const ws = new WebSocket(`${c.ordersBase.replace('http', 'ws')}/ws`, { headers });
      await once(ws, 'open');
      ws.send('hello');
      const [msg] = await once(ws, 'message');
      ws.close();
      return String(msg);
    };
    expect(await talk(baggage('ord-key'))).toBe('orders-sb:hello');
    expect(await talk({})).toBe('orders-base:hello');
  });
}

describe('HTTP routing through frontend (Express 4) → orders (Fastify) → payments (Express 5), no OpenTelemetry', () => {
  chainSpec(false);
});

describe('HTTP routing with NodeSDK and auto-instrumentations running', () => {
  chainSpec(true);
});
