import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { barrier, isBarrierMarker, sleep } from '../src/index.js';

/** An ordered channel: lines over a loopback TCP connection, the receiver collecting them. */
async function channel() {
  const received: string[] = [];
  const server = createServer((s) => {
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        received.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const client: Socket = connect(port, '127.0.0.1');
  await once(client, 'connect');
  const send = (line: string) => new Promise<void>((r) => client.write(`${line}\n`, () => r()));
  const close = async () => {
    client.destroy();
    server.close();
  };
  return { received, send, close };
}

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const c of open.splice(0)) await c.close();
});

describe('barrier', () => {
  it('returns only once everything sent before the marker has arrived, on every path', async () => {
    const a = await channel();
    const b = await channel();
    open.push(a, b);
    const paths = { a, b };
    for (let i = 0; i < 200; i++) await a.send(`a${i}`);
    await b.send('b0');
    const markers = await barrier({
      paths: ['a', 'b'] as const,
      send: (marker, path) => paths[path].send(marker),
      arrived: (marker, path) => paths[path].received.includes(marker),
    });
    expect(markers).toHaveLength(2);
    expect(markers.every(isBarrierMarker)).toBe(true);
    expect(a.received.filter((m) => !isBarrierMarker(m))).toHaveLength(200);
    expect(b.received.filter((m) => !isBarrierMarker(m))).toEqual(['b0']);
  });

  it('times out naming the paths whose marker never arrived', async () => {
    const a = await channel();
    open.push(a);
    await expect(
      barrier({
        paths: ['a', 'lost'],
        send: async (marker, path) => {
          if (path === 'a') await a.send(marker);
          await sleep(0);
        },
        arrived: (marker) => a.received.includes(marker),
        what: 'two channels',
        timeoutMs: 200,
      }),
    ).rejects.toThrow(/waiting for the barrier markers \(two channels\) on "lost"/);
  });
});
