import { withRoutingKey } from '@branchline/core';
import { until } from '@branchline/test-utils';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chat, type EchoClient, type EchoReply, fanout, newObserved, unary } from './fixtures/grpc/echo.js';
import { GrpcTestbed } from './fixtures/grpc/testbed.js';
import { freePort } from './helpers/processes.js';

// What a forwarded call keeps: headers, trailers, status, deadline, cancellation. Two relays:
// the stream-level one createRoutedServer uses for plain-text sandboxes, and the grpc-js one it
// uses otherwise (here forced by passing credentials explicitly).

const bytes = (b: Buffer) => b;
const pingService: grpc.ServiceDefinition = {
  ping: {
    path: '/branchline.test.Extra/Ping',
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  },
};

/** Resolves once `list` contains `item` (the server side notices a cancel asynchronously). */

describe.each([
  ['the stream-level relay', {}],
  ['the grpc-js relay', { credentials: grpc.credentials.createInsecure() }],
] as const)('a call forwarded from baseline to a sandbox through %s', (_name, baselineOptions) => {
  const sandboxSeen = newObserved();
  const bed = new GrpcTestbed();
  let client: EchoClient;
  let downAddr: string;

  beforeAll(async () => {
    const sandbox = await bed.routedServer('sandbox-pr-7', {
      sandbox: 'pr-7',
      observed: sandboxSeen,
      // A method only the sandbox has (a new RPC in the pull request).
      setup: (s) =>
        s.addService(pingService, {
          ping: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) =>
            cb(null, Buffer.from('pong from sandbox')),
        }),
    });
    // The baseline runs an older schema: it does not know EchoRequest.text.
    const baseline = await bed.routedServer('baseline', { old: true, routing: baselineOptions });
    downAddr = `127.0.0.1:${await freePort()}`;
    bed.routes.update({
      sandboxes: [
        { name: 'pr-7', key: 'pr-7', overrides: { echo: { grpc: sandbox.addr } } },
        { name: 'pr-down', key: 'pr-down', overrides: { echo: { grpc: downAddr } } },
      ],
    });
    client = bed.client(baseline.addr);
  });

  afterAll(() => bed.close());

  it('passes the request bytes through untouched, so fields the baseline schema lacks arrive', async () => {
    const reply = await withRoutingKey('pr-7', () => unary(client, { text: 'only-v1-knows-me' }));
    expect(reply).toEqual({ instance: 'sandbox-pr-7', key: 'pr-7', text: 'only-v1-knows-me' });
    const local = await unary(client, { text: 'dropped-by-v0' });
    expect(local).toEqual({ instance: 'baseline', key: '', text: '' });
  });

  it('answers UNAVAILABLE naming the sandbox and its endpoint when the sandbox is down, for every call type', async () => {
    const errors = await withRoutingKey('pr-down', () =>
      Promise.all([
        unary(client, { text: 'x' }).catch((e) => e),
        fanout(client, { text: 'x', count: 1 }).catch((e) => e),
        chat(client, [{ text: 'x' }]).catch((e) => e),
      ]),
    );
    for (const err of errors) {
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toContain(`could not reach sandbox "pr-down" for service "echo" at ${downAddr}`);
    }
  });

  it('forwards a method the baseline does not implement only through the stream-level relay', async () => {
    const ping = () =>
      new Promise<string>((resolve) =>
        client.makeUnaryRequest(
          '/branchline.test.Extra/Ping',
          bytes,
          bytes,
          Buffer.from('ping'),
          (err, reply) => resolve(err ? `error ${err.code}` : String(reply)),
        ),
      );
    const got = await withRoutingKey('pr-7', ping);
    expect(got).toBe(
      _name === 'the stream-level relay' ? 'pong from sandbox' : `error ${grpc.status.UNIMPLEMENTED}`,
    );
  });

  it('relays long streams completely and in order in both directions', async () => {
    const texts = Array.from({ length: 300 }, (_, i) => `m${i}`);
    const replies = await withRoutingKey('pr-7', () =>
      chat(
        client,
        texts.map((text) => ({ text })),
      ),
    );
    expect(replies.map((r) => r.text)).toEqual(texts);
    expect(new Set(replies.map((r) => r.instance))).toEqual(new Set(['sandbox-pr-7']));
    const many = await withRoutingKey('pr-7', () => fanout(client, { text: 'f', count: 300 }));
    expect(many.map((r) => r.text)).toEqual(Array.from({ length: 300 }, (_, i) => `f-${i}`));
  });

  it('relays response headers, the message and trailers', async () => {
    const got = await withRoutingKey('pr-7', () => {
      return new Promise<{ head: grpc.Metadata; reply: EchoReply; trailers: grpc.Metadata }>(
        (resolve, reject) => {
          let head: grpc.Metadata | undefined;
          let reply: EchoReply | undefined;
          const call = client.unary({ text: 'h' }, (err: grpc.ServiceError | null, r: EchoReply) => {
            if (err) reject(err);
            reply = r;
          });
          call.on('metadata', (m: grpc.Metadata) => {
            head = m;
          });
          call.on('status', (s: grpc.StatusObject) =>
            resolve({ head: head!, reply: reply!, trailers: s.metadata }),
          );
        },
      );
    });
    expect(got.reply.instance).toBe('sandbox-pr-7');
    expect(got.head.get('x-served-by')).toEqual(['sandbox-pr-7']);
    expect(got.trailers.get('x-trailer')).toEqual(['sandbox-pr-7-done']);
  });

  it('relays an error status with its details and trailers, after the messages sent before it', async () => {
    const unaryErr = await withRoutingKey(
      'pr-7',
      () =>
        new Promise<grpc.ServiceError>((resolve) =>
          client.unary({ failCode: grpc.status.FAILED_PRECONDITION }, (err: grpc.ServiceError) =>
            resolve(err),
          ),
        ),
    );
    expect(unaryErr.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(unaryErr.details).toBe('failed on purpose by sandbox-pr-7');
    expect(unaryErr.metadata.get('x-failed-by')).toEqual(['sandbox-pr-7']);

    const replies: EchoReply[] = [];
    const streamErr = await withRoutingKey(
      'pr-7',
      () =>
        new Promise<grpc.ServiceError>((resolve) => {
          const call = client.fanout({ failCode: grpc.status.RESOURCE_EXHAUSTED });
          call.on('data', (r: EchoReply) => replies.push(r));
          call.on('error', resolve);
        }),
    );
    expect(replies.map((r) => `${r.instance}:${r.text}`)).toEqual(['sandbox-pr-7:before-failure']);
    expect(streamErr.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(streamErr.metadata.get('x-failed-by')).toEqual(['sandbox-pr-7']);
  });

  it('carries the caller deadline: when it expires the caller gets DEADLINE_EXCEEDED and the sandbox sees the cancel', async () => {
    sandboxSeen.cancelled.length = 0;
    const started = Date.now();
    const err = await withRoutingKey('pr-7', () =>
      fanout(client, { text: 'slow', count: 0, delayMs: 50 }, new grpc.Metadata(), {
        deadline: Date.now() + 400,
      }),
    ).catch((e) => e);
    expect(err.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeLessThan(10_000);
    await until(
      () => sandboxSeen.cancelled.includes('sandbox-pr-7:fanout'),
      () => `${'sandbox-pr-7:fanout'} among ${JSON.stringify(sandboxSeen.cancelled)}`,
    );
  });

  it('propagates a cancel by the caller midway through a bidi stream to the sandbox', async () => {
    sandboxSeen.cancelled.length = 0;
    const first = await withRoutingKey('pr-7', () => {
      const call = client.chat();
      return new Promise<EchoReply>((resolve) => {
        call.on('error', () => {});
        call.once('data', (r: EchoReply) => {
          call.cancel();
          resolve(r);
        });
        call.write({ text: 'one' });
      });
    });
    expect(first.instance).toBe('sandbox-pr-7');
    await until(
      () => sandboxSeen.cancelled.includes('sandbox-pr-7:chat'),
      () => `${'sandbox-pr-7:chat'} among ${JSON.stringify(sandboxSeen.cancelled)}`,
    );
  });

  it('keeps the caller connection open while only forwarded streams are active (grpc-js idle timeout)', async () => {
    // A baseline that closes connections idle for 500 ms must not count a connection whose only
    // stream is being relayed as idle.
    const idle = await bed.routedServer('baseline-idle', {
      old: true,
      routing: baselineOptions,
      serverOptions: { 'grpc.max_connection_idle_ms': 500 },
    });
    const c = bed.client(idle.addr);
    const states: grpc.connectivityState[] = [];
    const texts = await withRoutingKey('pr-7', async () => {
      const first = await unary(c, { text: 'warm' });
      expect(first.instance).toBe('sandbox-pr-7');
      const channel = c.getChannel();
      const watch = (s: grpc.connectivityState) =>
        channel.watchConnectivityState(s, Infinity, () => {
          const next = channel.getConnectivityState(false);
          // The client is closed when the file's tests end: stop watching then.
          if (next === grpc.connectivityState.SHUTDOWN) return;
          states.push(next);
          watch(next);
        });
      watch(channel.getConnectivityState(false));
      return fanout(c, { text: 'slow', count: 8, delayMs: 150 });
    });
    expect(texts.map((r) => r.text)).toEqual(Array.from({ length: 8 }, (_, i) => `slow-${i}`));
    expect(states).toEqual([]);
  });

  it('propagates a cancel by the caller midway through a server stream to the sandbox', async () => {
    sandboxSeen.cancelled.length = 0;
    const texts = await withRoutingKey('pr-7', () => {
      const call = client.fanout({ text: 'n', count: 0, delayMs: 10 });
      const seen: string[] = [];
      return new Promise<string[]>((resolve) => {
        call.on('error', () => resolve(seen));
        call.on('data', (r: EchoReply) => {
          seen.push(`${r.instance}:${r.text}`);
          if (seen.length === 3) call.cancel();
        });
      });
    });
    expect(texts).toEqual(['sandbox-pr-7:n-0', 'sandbox-pr-7:n-1', 'sandbox-pr-7:n-2']);
    await until(
      () => sandboxSeen.cancelled.includes('sandbox-pr-7:fanout'),
      () => `${'sandbox-pr-7:fanout'} among ${JSON.stringify(sandboxSeen.cancelled)}`,
    );
  });
});
