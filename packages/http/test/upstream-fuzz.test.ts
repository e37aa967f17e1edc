// Fuzz test of the forwarding client's HTTP/1.1 response parser (src/upstream.ts).
//
// Seeded random responses are served by a real TCP server, written in random pieces (so heads,
// chunk-size lines, CRLFs and bodies are split at random points across reads):
// - valid ones must read the same through the built-in client as through node:http reading the
//   same bytes from the same server: status, reason, headers (minus the connection-level ones the
//   forwarder drops), body bytes, trailers;
// - invalid ones must fail the exchange with a clear error (a code and a "branchline: ..."
//   message), never hang, never throw out of the socket callback.
//
// FUZZ_SEED=<n> replays one run; FUZZ_CASES=<n> sets how many cases of each kind. A failure
// names the seed, the case and the bytes served.

import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { seededRandom } from '@branchline/test-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CoarseClock,
  Endpoint,
  type Exchange,
  type UpstreamConnection,
  type UpstreamError,
} from '../src/upstream.js';

const SEED = seededRandom(process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined).seed;
const CASES = Number(process.env.FUZZ_CASES ?? 250);
/** A case that has not settled by then hangs. */
const HANG_MS = 5000;

interface Case {
  /** The bytes the server writes, and where it splits them into separate writes. */
  bytes: Buffer;
  splits: number[];
  /** The server closes the connection after the response (close-delimited, `close`, HTTP/1.0). */
  close: boolean;
  method: 'GET' | 'HEAD';
  what: string;
}

class Gen {
  constructor(readonly r: () => number) {}
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
  token(min: number, max: number): string {
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&*+^`|~';
    let s = '';
    const n = this.int(min, max);
    for (let i = 0; i < n; i++) s += alphabet[this.int(0, alphabet.length - 1)];
    return s;
  }
  /** A header value: visible ASCII, inner spaces, sometimes latin1 bytes. */
  value(): string {
    const n = this.int(0, 40);
    let s = '';
    for (let i = 0; i < n; i++) {
      const c = this.chance(0.05) ? this.int(0xa0, 0xff) : this.chance(0.1) ? 32 : this.int(0x21, 0x7e);
      s += String.fromCharCode(c);
    }
    return s.trim();
  }
  ows(): string {
    return this.pick(['', '', '', ' ', '  ', '\t', ' \t']);
  }
  body(): Buffer {
    const size = this.pick([
      0,
      this.int(1, 64),
      this.int(64, 4200),
      this.int(4000, 20_000),
      this.int(60_000, 140_000),
    ]);
    const b = Buffer.allocUnsafe(size);
    for (let i = 0; i < size; i++) b[i] = this.int(0, 255);
    return b;
  }
  splits(len: number): number[] {
    if (len <= 300 && this.chance(0.05)) return Array.from({ length: len - 1 }, (_, i) => i + 1);
    const k = this.int(0, 6);
    const out = new Set<number>();
    for (let i = 0; i < k; i++) out.add(this.int(1, Math.max(1, len - 1)));
    return [...out].sort((a, b) => a - b);
  }
}

const CUSTOM_NAMES = [
  'x-a',
  'X-Custom-Header',
  'content-type',
  'Content-Type',
  'cache-control',
  'Set-Cookie',
  'etag',
  'Date',
];
const STATUSES = [200, 200, 201, 202, 203, 206, 299, 301, 302, 400, 404, 418, 451, 500, 503, 599, 204, 304];
const REASONS = ['OK', 'Created', 'Not Found', "I'm a teapot", 'Some  Reason\twith tabs', 'x', ''];

/** A valid response, as a server might write it. */
function validCase(g: Gen): Case {
  const method = g.chance(0.06) ? 'HEAD' : 'GET';
  const minor = g.chance(0.15) ? 0 : 1;
  const status = g.pick(STATUSES);
  const reason = g.pick(REASONS);
  let head = '';
  if (minor === 1 && g.chance(0.1))
    head += g.pick([
      'HTTP/1.1 100 Continue\r\n\r\n',
      'HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n',
    ]);
  head += `HTTP/1.${minor} ${status} ${reason}\r\n`;
  const lines: string[] = [];
  for (let i = g.int(0, 8); i > 0; i--)
    lines.push(
      `${g.chance(0.2) ? `x-${g.token(1, 20)}` : g.pick(CUSTOM_NAMES)}:${g.ows()}${g.value()}${g.ows()}`,
    );
  const noBody = method === 'HEAD' || status === 204 || status === 304;
  const body = noBody ? Buffer.alloc(0) : g.body();
  const framing = noBody
    ? g.pick(['none', 'length'])
    : minor === 0
      ? g.pick(['length', 'close'])
      : g.pick(['length', 'length', 'chunked', 'chunked', 'close']);
  const keepAlive = minor === 0 ? g.chance(0.5) : !g.chance(0.15);
  let close = !keepAlive || framing === 'close';
  if (minor === 0 && keepAlive) lines.push(`${g.pick(['Connection', 'connection'])}: keep-alive`);
  if (minor === 1 && !keepAlive) lines.push(`${g.pick(['Connection', 'connection'])}: close`);
  if (minor === 1 && keepAlive && g.chance(0.3))
    lines.push('Connection: keep-alive', `Keep-Alive: timeout=${g.int(1, 10)}`);
  let payload: Buffer = body;
  if (framing === 'length') {
    const name = g.pick(['content-length', 'Content-Length', 'CONTENT-LENGTH']);
    // A HEAD or 304 answer may state the length the body would have.
    const len = noBody && status !== 204 ? g.int(0, 5000) : body.length;
    lines.push(`${name}:${g.ows()}${len}${g.ows()}`);
  } else if (framing === 'chunked') {
    lines.push(
      `${g.pick(['transfer-encoding', 'Transfer-Encoding'])}: ${g.pick(['chunked', 'chunked', 'Chunked'])}`,
    );
    const parts: Buffer[] = [];
    let off = 0;
    while (off < body.length) {
      const n = Math.min(body.length - off, g.pick([1, g.int(1, 16), g.int(16, 5000), g.int(5000, 70_000)]));
      const size = n.toString(16);
      const ext = g.chance(0.1) ? `;${g.token(1, 8)}=${g.token(1, 8)}` : '';
      parts.push(
        Buffer.from(`${g.chance(0.3) ? size.toUpperCase() : size}${ext}\r\n`, 'latin1'),
        body.subarray(off, off + n),
        Buffer.from('\r\n'),
      );
      off += n;
    }
    let end = `0${g.chance(0.1) ? ';last' : ''}\r\n`;
    for (let i = g.chance(0.2) ? g.int(1, 3) : 0; i > 0; i--)
      end += `x-trailer-${i}:${g.ows()}${g.value()}${g.ows()}\r\n`;
    parts.push(Buffer.from(`${end}\r\n`, 'latin1'));
    payload = Buffer.concat(parts);
  } else if (framing === 'close') close = true;
  // Bodies framed by closing have no keep-alive to offer; node:http and the client agree on that.
  head += `${lines.join('\r\n')}${lines.length ? '\r\n' : ''}\r\n`;
  const bytes = Buffer.concat([Buffer.from(head, 'latin1'), method === 'HEAD' ? Buffer.alloc(0) : payload]);
  return { bytes, splits: g.splits(bytes.length), close, method, what: `valid ${framing} ${status}` };
}

/** An invalid response: one defect the client must refuse with a clear error. */
function invalidCase(g: Gen): Case & { defect: string } {
  const body = Buffer.from(g.token(10, 60));
  const ok = `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
  const defects: [string, () => string, boolean?][] = [
    ['status code not digits', () => 'HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n'],
    [
      'not HTTP/1.x',
      () =>
        `${g.pick(['HTTP/2 200 OK', 'HTTX/1.1 200 OK', 'http/1.1 200 OK', 'HTTP/1.2 200 OK', 'ICY 200 OK'])}\r\ncontent-length: 0\r\n\r\n`,
    ],
    ['status below 100', () => 'HTTP/1.1 099 Low\r\ncontent-length: 0\r\n\r\n'],
    ['status glued to reason', () => 'HTTP/1.1 200OK\r\ncontent-length: 0\r\n\r\n'],
    [
      'header line without colon',
      () => `HTTP/1.1 200 OK\r\nx-a: 1\r\n${g.token(3, 20)}\r\ncontent-length: 0\r\n\r\n`,
    ],
    [
      'header line folded (obs-fold)',
      () => 'HTTP/1.1 200 OK\r\nx-a: 1\r\n  continued\r\ncontent-length: 0\r\n\r\n',
    ],
    ['empty header name', () => 'HTTP/1.1 200 OK\r\n: nameless\r\ncontent-length: 0\r\n\r\n'],
    [
      'content-length not a number',
      () => `HTTP/1.1 200 OK\r\ncontent-length: ${g.pick(['abc', '-1', '1e3', '0x10', '12 34', ''])}\r\n\r\n`,
    ],
    [
      'conflicting content-lengths',
      () => 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!',
    ],
    [
      'bad chunk size',
      () =>
        `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${g.pick(['zz', '-1', '1234567890abc', ' ', 'g'])}\r\nabc\r\n0\r\n\r\n`,
    ],
    [
      'bad chunk terminator',
      () => 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n',
    ],
    [
      '101 to a plain request',
      () => 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n',
    ],
    ['head past 64 KiB', () => `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}`],
    [
      'chunk-size line past 8 KiB',
      () => `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;${'e'.repeat(9000)}`,
    ],
    [
      'trailer line without colon',
      () => 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\nnot a trailer\r\n\r\n',
    ],
    [
      'body cut short, then closed',
      () => `HTTP/1.1 200 OK\r\ncontent-length: ${body.length + 50}\r\n\r\n${body}`,
      true,
    ],
    ['head cut short, then closed', () => ok.slice(0, g.int(1, ok.indexOf('\r\n\r\n'))), true],
    [
      'chunked body cut short, then closed',
      () => 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nabc',
      true,
    ],
  ];
  const [defect, make, closes] = g.pick(defects);
  const bytes = Buffer.from(make(), 'latin1');
  return {
    bytes,
    splits: g.splits(bytes.length),
    close: closes === true,
    method: 'GET',
    what: `invalid: ${defect}`,
    defect,
  };
}

/** What a client read. */
interface Reading {
  status?: number;
  reason?: string;
  headers?: string[];
  body: Buffer;
  trailers: string[];
  error?: { code: string; message: string };
}

/** The test side of one exchange with the built-in client. */
class Probe implements Exchange {
  readonly bodyStarted = false;
  readonly isHead: boolean;
  readonly head: string;
  private readonly chunks: Buffer[] = [];
  private readonly reading: Reading = { body: Buffer.alloc(0), trailers: [] };
  readonly done: Promise<Reading>;
  private settle!: (r: Reading) => void;
  private settled = false;

  constructor(method: string, path: string, authority: string) {
    this.isHead = method === 'HEAD';
    this.head = `${method} ${path} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`;
    this.done = new Promise((r) => {
      this.settle = r;
    });
  }
  start(conn: UpstreamConnection): void {
    conn.writeHead(this.head);
    conn.requestFinished();
  }
  onHead(status: number, reason: string, headers: string[]): void {
    this.reading.status = status;
    this.reading.reason = reason;
    this.reading.headers = [...headers];
  }
  onData(chunk: Buffer): void {
    // Copied: a piece may live in a buffer reused after the call.
    this.chunks.push(Buffer.from(chunk));
  }
  onEnd(trailers: string[] | undefined): void {
    this.finish({ ...this.reading, body: Buffer.concat(this.chunks), trailers: trailers ?? [] });
  }
  onError(err: UpstreamError): void {
    this.finish({
      ...this.reading,
      body: Buffer.concat(this.chunks),
      error: { code: err.code, message: err.message },
    });
  }
  private finish(r: Reading): void {
    if (this.settled) throw new Error(`exchange settled twice: ${JSON.stringify(r.error ?? 'end')}`);
    this.settled = true;
    this.settle(r);
  }
}

/** How node:http reads the same response. */
function readWithNode(port: number, path: string, method: string): Promise<Reading> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, agent: false });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode,
          reason: res.statusMessage,
          headers: res.rawHeaders,
          body: Buffer.concat(chunks),
          trailers: res.rawTrailers,
        }),
      );
      res.on('error', (err: Error & { code?: string }) =>
        resolve({
          body: Buffer.alloc(0),
          trailers: [],
          error: { code: err.code ?? '?', message: err.message },
        }),
      );
    });
    req.on('error', (err: Error & { code?: string }) =>
      resolve({
        body: Buffer.alloc(0),
        trailers: [],
        error: { code: err.code ?? '?', message: err.message },
      }),
    );
    req.end();
  });
}

/** node:http's headers as the forwarder relays them: without the connection-level ones. */
function relayedByForwarder(raw: string[]): string[] {
  const te = raw.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'transfer-encoding');
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name === 'connection' || name === 'keep-alive' || name === 'transfer-encoding') continue;
    if (te && name === 'content-length') continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

const cases = new Map<string, Case>();
const sockets = new Set<Socket>();
let server: Server;
let port = 0;

/** Writes a case's bytes in its pieces, each in its own write a moment after the last. */
async function serve(socket: Socket, c: Case): Promise<void> {
  let from = 0;
  for (const at of [...c.splits, c.bytes.length]) {
    if (socket.destroyed) return;
    socket.write(c.bytes.subarray(from, at));
    from = at;
    if (at < c.bytes.length) await new Promise((r) => setImmediate(r));
  }
  if (c.close) socket.end();
}

beforeAll(async () => {
  server = createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    let busy = Promise.resolve();
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const path = head.split(' ')[1]!;
        const c = cases.get(path)!;
        const closeAfter = /\r\nconnection: close/i.test(head);
        busy = busy.then(() => serve(socket, { ...c, close: c.close || closeAfter }));
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  server.close();
});

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${HANG_MS} ms (hangs)`)), HANG_MS);
    }),
  ]);
}

function describeCase(n: number, c: Case): string {
  const shown =
    c.bytes.length > 400
      ? `${c.bytes.subarray(0, 400).toString('latin1')}… (${c.bytes.length} bytes)`
      : c.bytes.toString('latin1');
  return `FUZZ_SEED=${SEED} case ${n} (${c.what}, split at ${JSON.stringify(c.splits.slice(0, 20))}): ${JSON.stringify(shown)}`;
}

/** Runs `fn` over the built-in client; the endpoint keeps connections alive across cases. */
async function withEndpoint(fn: (e: Endpoint) => Promise<void>): Promise<void> {
  const clock: CoarseClock = { now: performance.now() };
  // Long timeouts: a case that hangs must show as a hang, not be cut by a timeout.
  const e = new Endpoint(
    `http://127.0.0.1:${port}`,
    { connectTimeoutMs: 60_000, responseTimeoutMs: 60_000, bodyTimeoutMs: 60_000, connections: 4 },
    clock,
  );
  const ticker = setInterval(() => {
    clock.now = performance.now();
    e.tick(clock.now, 10);
  }, 10);
  try {
    await fn(e);
  } finally {
    clearInterval(ticker);
    e.destroyAll();
  }
}

describe(`the forwarding client's response parser (FUZZ_SEED=${SEED})`, () => {
  it('reads valid responses, split anywhere, as node:http reads the same bytes', async () => {
    const g = new Gen(seededRandom(SEED));
    await withEndpoint(async (e) => {
      for (let n = 0; n < CASES; n++) {
        const c = validCase(g);
        const path = `/valid/${n}`;
        cases.set(path, c);
        const where = describeCase(n, c);
        try {
          const probe = new Probe(c.method, path, e.authority);
          e.dispatch(probe);
          const ours = await withTimeout(probe.done, 'the built-in client');
          const node = await withTimeout(readWithNode(port, path, c.method), 'node:http');
          expect(node.error, 'node:http refused a response generated as valid').toBeUndefined();
          expect(ours.error).toBeUndefined();
          expect(ours.status).toBe(node.status);
          expect(ours.reason).toBe(node.reason);
          expect(ours.headers).toEqual(relayedByForwarder(node.headers!));
          expect(
            ours.body.equals(node.body),
            `body: ${ours.body.length} bytes, node:http read ${node.body.length}`,
          ).toBe(true);
          expect(ours.trailers).toEqual(node.trailers);
        } catch (err) {
          (err as Error).message = `${where}\n${(err as Error).message}`;
          throw err;
        } finally {
          cases.delete(path);
        }
      }
    });
  }, 120_000);

  it('refuses invalid responses with a clear error, without hanging or throwing', async () => {
    const g = new Gen(seededRandom((SEED ^ 0x5bd1e995) >>> 0));
    const seen = new Set<string>();
    await withEndpoint(async (e) => {
      for (let n = 0; n < CASES; n++) {
        const c = invalidCase(g);
        seen.add(c.defect);
        const path = `/invalid/${n}`;
        cases.set(path, c);
        try {
          const probe = new Probe('GET', path, e.authority);
          e.dispatch(probe);
          const ours = await withTimeout(probe.done, 'the built-in client');
          expect(ours.error, 'the response was accepted').toBeDefined();
          expect(['UPSTREAM_BAD_RESPONSE', 'UPSTREAM_CLOSED']).toContain(ours.error!.code);
          expect(ours.error!.message).toMatch(/^branchline: \S.{5,}/);
        } catch (err) {
          (err as Error).message = `${describeCase(n, c)}\n${(err as Error).message}`;
          throw err;
        } finally {
          cases.delete(path);
        }
      }
    });
    // Enough cases to meet most defects at least once.
    if (CASES >= 200) expect(seen.size).toBeGreaterThan(12);
  }, 120_000);
});
