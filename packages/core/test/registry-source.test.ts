import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { setLogger } from '../src/index.js';
import { createRegistrySource, type RegistryRouteSource, type RouteTable } from '../src/transport.js';

// A hand-written watch endpoint speaking the registry's SSE protocol, so the client's own
// behaviour (resume, backoff, idle detection) can be driven precisely. The real registry is
// exercised end to end in test/registry-*.test.ts.
interface Conn {
  req: IncomingMessage;
  res: ServerResponse;
}

const sandbox = (name: string, port: number, from: number) => ({
  id: `id-${name}`,
  name,
  key: name,
  overrides: { payments: { http: `http://127.0.0.1:${port}` } },
  createdAt: from,
  history: { payments: [{ from }] },
  deletedAt: null,
});
const frame = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

let server: Server | undefined;
let source: RegistryRouteSource | undefined;
afterEach(async () => {
  await source?.close();
  server?.closeAllConnections();
  server?.close();
});

async function fakeRegistry(onConnect: (c: Conn) => void): Promise<{ url: string; conns: Conn[] }> {
  const conns: Conn[] = [];
  server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const c = { req, res };
    conns.push(c);
    onConnect(c);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, conns };
}

function nextTable(src: RegistryRouteSource, pred: (t: RouteTable) => boolean): Promise<RouteTable> {
  return new Promise((resolve) => {
    const off = src.subscribe((t) => {
      if (pred(t)) {
        off();
        resolve(t);
      }
    });
  });
}

describe('RegistryRouteSource', () => {
  it('ready() gives up after its bound when the registry cannot be reached, and reports it', async () => {
    source = createRegistrySource({
      registry: 'http://127.0.0.1:9',
      reconnect: { initialMs: 20, maxMs: 50 },
    });
    expect(await source.ready(300)).toBeUndefined();
    expect(source.table).toBeUndefined();
    expect(source.status).toMatchObject({ synced: false, connected: false, stale: true });
    expect(source.status.error).toMatch(/cannot reach the registry/);
  });

  it('builds a table from the snapshot and events, and a new one when a heartbeat advances completeUntil', async () => {
    const { url, conns } = await fakeRegistry(({ res }) =>
      res.write(
        frame('snapshot', { revision: 3, sandboxes: [sandbox('a', 4001, 100)], groups: [] }) +
          frame('synced', { revision: 3 }) +
          frame('heartbeat', { revision: 3, completeUntil: 150, interval: 500 }),
      ),
    );
    source = createRegistrySource({ registry: url });
    const first = await source.ready(5000);
    expect(first?.revision).toBe(3);
    expect(first?.completeUntil).toBe(150);
    expect(first?.resolve('payments', 'a')?.http).toEqual(['http://127.0.0.1:4001']);
    const added = nextTable(source, (t) => t.revision === 4);
    conns[0]!.res.write(
      frame('add', {
        revision: 4,
        time: 160,
        kind: 'sandbox',
        id: 'id-b',
        name: 'b',
        object: sandbox('b', 4002, 160),
      }),
    );
    expect((await added).resolve('payments', 'b')?.http).toEqual(['http://127.0.0.1:4002']);
    const beat = nextTable(source, (t) => t.completeUntil === 200);
    conns[0]!.res.write(frame('heartbeat', { revision: 4, completeUntil: 200, interval: 500 }));
    const t = await beat;
    expect(t.owner('payments', 'b', 170)).toBe('b');
    const removed = nextTable(source, (x) => x.revision === 5);
    conns[0]!.res.write(
      frame('remove', {
        revision: 5,
        time: 210,
        kind: 'sandbox',
        id: 'id-b',
        name: 'b',
        object: {
          ...sandbox('b', 4002, 160),
          deletedAt: 210,
          history: { payments: [{ from: 160, to: 210 }] },
        },
      }),
    );
    const r = await removed;
    expect(r.resolve('payments', 'b')).toBeUndefined();
    expect(r.owner('payments', 'b', 200)).toBe('b');
    expect(r.owner('payments', 'b', 210)).toBeUndefined();
  });

  it('keeps the last table while disconnected and resumes with ?since=<last revision>', async () => {
    const { url, conns } = await fakeRegistry(({ req, res }) => {
      if (!req.url?.includes('since='))
        res.write(
          frame('snapshot', { revision: 7, sandboxes: [sandbox('a', 4001, 100)], groups: [] }) +
            frame('synced', { revision: 7 }),
        );
      else
        res.write(
          frame('add', {
            revision: 8,
            time: 300,
            kind: 'sandbox',
            id: 'id-c',
            name: 'c',
            object: sandbox('c', 4003, 300),
          }) + frame('synced', { revision: 8, resumed: true }),
        );
    });
    source = createRegistrySource({ registry: url, reconnect: { initialMs: 20, maxMs: 100 } });
    await source.ready(5000);
    conns[0]!.res.destroy();
    await new Promise<void>((resolve) => {
      const check = () => (source!.status.connected ? setTimeout(check, 5) : resolve());
      check();
    });
    expect(source.table?.resolve('payments', 'a')).toBeDefined();
    const resumed = await nextTable(source, (t) => t.revision === 8);
    expect(conns[1]!.req.url).toBe('/v1/watch?view=routing&since=7');
    expect(resumed.resolve('payments', 'a')).toBeDefined();
    expect(resumed.resolve('payments', 'c')).toBeDefined();
    expect(source.status.reconnects).toBe(1);
  });

  it('reconnects when the registry goes silent longer than the idle timeout', async () => {
    const { url, conns } = await fakeRegistry(({ res }) =>
      res.write(
        frame('snapshot', { revision: 1, sandboxes: [], groups: [] }) + frame('synced', { revision: 1 }),
      ),
    );
    source = createRegistrySource({ registry: url, idleTimeoutMs: 300, reconnect: { initialMs: 20 } });
    await source.ready(5000);
    await new Promise<void>((resolve) => {
      const check = () => (conns.length >= 2 ? resolve() : setTimeout(check, 20));
      check();
    });
    expect(conns[1]!.req.url).toBe('/v1/watch?view=routing&since=1');
  });
});

describe('deprecated RegistryRouteSource options', () => {
  it('url and initialBackoffMs/maxBackoffMs still work, with one warning per option per process', async () => {
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, error() {}, warn: (msg) => warnings.push(msg) });
    try {
      const { url } = await fakeRegistry(({ res }) =>
        res.write(
          frame('snapshot', { revision: 1, sandboxes: [], groups: [] }) + frame('synced', { revision: 1 }),
        ),
      );
      source = createRegistrySource({ url, initialBackoffMs: 20, maxBackoffMs: 50 });
      expect(await source.ready(2000)).toBeDefined();
      await source.close();
      source = createRegistrySource({ url, initialBackoffMs: 20 });
      expect(await source.ready(2000)).toBeDefined();
    } finally {
      setLogger(undefined);
    }
    const deprecations = warnings.filter((w) => w.includes('deprecated'));
    expect(deprecations).toHaveLength(3);
    expect(deprecations.join('\n')).toMatch(/option url is deprecated; use registry/);
    expect(deprecations.join('\n')).toMatch(
      /option initialBackoffMs is deprecated; use reconnect\.initialMs/,
    );
    expect(deprecations.join('\n')).toMatch(/option maxBackoffMs is deprecated; use reconnect\.maxMs/);
  });
});
