import { createRequire } from 'node:module';
import { createRuntime, getRoutingKey, type RouteTableSpec, withRoutingKey } from '@branchline/core';
import { counters, StaticRouteSource } from '@branchline/core/transport';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { DELEGATED_CALL_METHODS, keyedCallCovers } from '../src/client-interceptor.js';
import {
  createClientInterceptor,
  createRoutedServer,
  createServerInterceptor,
  type ForwardInfo,
  HOP_MARKER,
} from '../src/index.js';
import { GRPC_JS_VERIFIED, STREAM_HANDLERS, streamHandlerShape } from '../src/server.js';

const grpcJsVersion: string = createRequire(import.meta.url)('@grpc/grpc-js/package.json').version;

// A one-method service with JSON messages, so these tests need no .proto file.
interface Msg {
  who?: string;
  key?: string;
  hop?: string;
}
const json = {
  serialize: (v: Msg) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as Msg,
};
const service: grpc.ServiceDefinition = {
  who: {
    path: '/test.Who/Who',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};
const Client = grpc.makeGenericClientConstructor(service, 'Who');

function impl(who: string): grpc.UntypedServiceImplementation {
  return {
    who(call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
      setImmediate(() =>
        cb(null, { who, key: getRoutingKey() ?? '', hop: String(call.metadata.get(HOP_MARKER)[0] ?? '') }),
      );
    },
  };
}

const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.tryShutdown(r))));
});

async function serve(server: grpc.Server, who: string): Promise<string> {
  server.addService(service, impl(who));
  servers.push(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return `127.0.0.1:${port}`;
}

function client(addr: string): grpc.Client & Record<string, (...a: unknown[]) => unknown> {
  const c = new Client(addr, grpc.credentials.createInsecure(), {
    interceptors: [createClientInterceptor()],
  });
  clients.push(c);
  return c as never;
}

function ask(c: ReturnType<typeof client>, key?: string): Promise<Msg> {
  const run = () =>
    new Promise<Msg>((resolve, reject) =>
      c.who!({}, (err: grpc.ServiceError | null, r: Msg) => (err ? reject(err) : resolve(r))),
    );
  return key === undefined ? run() : withRoutingKey(key, run);
}

const table = (sandboxAddr: string): RouteTableSpec => ({
  sandboxes: [{ name: 'pr-5', key: 'pr-5', overrides: { who: { grpc: sandboxAddr } } }],
});

describe('@branchline/grpc', () => {
  it('forwards a keyed call from a routed baseline to the sandbox with the hop marker, and tells onForward', async () => {
    const routes = new StaticRouteSource();
    const sandboxAddr = await serve(
      createRoutedServer({}, { runtime: createRuntime({ service: 'who', sandbox: 'pr-5', routes: routes }) }),
      'sandbox',
    );
    const seen: ForwardInfo[] = [];
    const baselineAddr = await serve(
      createRoutedServer(
        {},
        { runtime: createRuntime({ service: 'who', routes: routes }), onForward: (i) => seen.push(i) },
      ),
      'baseline',
    );
    routes.update(table(sandboxAddr));
    const c = client(baselineAddr);
    expect(await ask(c, 'pr-5')).toEqual({ who: 'sandbox', key: 'pr-5', hop: 'who' });
    expect(await ask(c)).toEqual({ who: 'baseline', key: '', hop: '' });
    expect(seen).toEqual([{ method: '/test.Who/Who', key: 'pr-5', sandbox: 'pr-5', endpoint: sandboxAddr }]);
  });

  it('serves keyed calls itself when forwarding is turned off, with the key active', async () => {
    const routes = new StaticRouteSource();
    const sandboxAddr = await serve(new grpc.Server(), 'sandbox');
    routes.update(table(sandboxAddr));
    const addr = await serve(
      createRoutedServer({}, { runtime: createRuntime({ service: 'who', routes: routes }), forward: false }),
      'baseline',
    );
    expect(await ask(client(addr), 'pr-5')).toEqual({ who: 'baseline', key: 'pr-5', hop: '' });
  });

  it('a plain server with the interceptor sets the key but cannot forward, so it serves the call', async () => {
    const routes = new StaticRouteSource();
    const sandboxAddr = await serve(new grpc.Server(), 'sandbox');
    routes.update(table(sandboxAddr));
    const before = counters.forwarded;
    const plain = new grpc.Server({
      interceptors: [createServerInterceptor({ runtime: createRuntime({ service: 'who', routes: routes }) })],
    });
    const addr = await serve(plain, 'plain');
    expect(await ask(client(addr), 'pr-5')).toEqual({ who: 'plain', key: 'pr-5', hop: '' });
    expect(counters.forwarded).toBe(before);
  });

  it('the client interceptor leaves calls without a key untouched', async () => {
    const seen: string[][] = [];
    const addr = await serve(new grpc.Server(), 'plain');
    const c = new Client(addr, grpc.credentials.createInsecure(), {
      interceptors: [
        createClientInterceptor(),
        (options: grpc.InterceptorOptions, next: grpc.NextCall) =>
          new grpc.InterceptingCall(next(options), {
            start(md, listener, n) {
              seen.push(md.get('baggage').map(String));
              n(md, listener);
            },
          }),
      ],
    });
    clients.push(c);
    await ask(c as never);
    await ask(c as never, 'pr-9');
    expect(seen).toEqual([[], ['branchline=pr-9']]);
  });

  it('rejects a non-boolean forward option when the server is created, naming the option', () => {
    expect(() =>
      createRoutedServer({}, { forward: 'yes' as never, runtime: createRuntime({ routes: {} }) }),
    ).toThrow(/option forward must be a boolean/);
  });

  it(`finds the grpc-js stream handlers the stream-level relay hooks (grpc-js ${grpcJsVersion}; verified ${GRPC_JS_VERIFIED})`, () => {
    const server = new grpc.Server() as unknown as Record<string, unknown>;
    for (const name of STREAM_HANDLERS) {
      expect(
        streamHandlerShape(server[name]),
        `grpc-js ${grpcJsVersion} has no Server.${name}(stream, headers) / (extraInterceptors, stream, headers): ` +
          'the stream-level relay cannot hook it, and routed servers forward through the slower grpc-js relay. ' +
          'Adapt hookStreamHandlers in src/internals.ts to this version, then update GRPC_JS_VERIFIED.',
      ).toBeDefined();
    }
    // 1.11 and later count open streams for grpc.max_connection_idle_ms; relayed ones must be counted too.
    if (streamHandlerShape(server._streamHandler) === 'extra-first')
      expect(
        typeof server.onStreamOpened,
        `grpc-js ${grpcJsVersion} has no Server.onStreamOpened(stream): relayed streams would not keep a connection from idling out. ` +
          'Adapt countStream in src/internals.ts to this version, then update GRPC_JS_VERIFIED.',
      ).toBe('function');
    const [lo, hi] = GRPC_JS_VERIFIED.split(' ').map((r) => r.replace(/^[<>=]+/, ''));
    const n = (v: string) => v.split('.').reduce((acc, x) => acc * 1000 + Number.parseInt(x, 10), 0);
    expect(
      n(grpcJsVersion) >= n(lo!) && n(grpcJsVersion) <= n(hi!),
      `grpc-js ${grpcJsVersion} is outside the range the stream hook was verified against (${GRPC_JS_VERIFIED}): ` +
        'run the grpc tests (including test/grpc-forwarding.test.ts) against it, then widen GRPC_JS_VERIFIED in src/internals.ts.',
    ).toBe(true);
  });

  it('relays at the stream level: a routed baseline forwards a method it does not implement', async () => {
    const routes = new StaticRouteSource();
    const sandboxAddr = await serve(
      createRoutedServer({}, { runtime: createRuntime({ service: 'who', sandbox: 'pr-5', routes: routes }) }),
      'sandbox',
    );
    // The baseline implements no method at all: only a relay in front of grpc-js can answer.
    const baseline = createRoutedServer({}, { runtime: createRuntime({ service: 'who', routes: routes }) });
    servers.push(baseline);
    const port = await new Promise<number>((resolve, reject) =>
      baseline.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    routes.update(table(sandboxAddr));
    const c = client(`127.0.0.1:${port}`);
    expect(await ask(c, 'pr-5')).toEqual({ who: 'sandbox', key: 'pr-5', hop: 'who' });
    await expect(ask(c)).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED });
    // Neither implements this one: the sandbox's trailers-only answer comes back as it is.
    const nope = () =>
      new Promise<grpc.ServiceError>((resolve) =>
        c.makeUnaryRequest('/test.Nope/Nope', json.serialize, json.deserialize, {}, (err) => resolve(err!)),
      );
    const forwarded = counters.forwarded;
    expect(await withRoutingKey('pr-5', nope)).toMatchObject({
      code: grpc.status.UNIMPLEMENTED,
      details: expect.stringContaining('/test.Nope/Nope'),
    });
    expect(counters.forwarded - forwarded).toBe(1);
  });

  it('reads a keyed call once on a routed baseline: bad keys and a prevented loop are counted once', async () => {
    const routes = new StaticRouteSource();
    const baselineAddr = await serve(
      createRoutedServer({}, { runtime: createRuntime({ service: 'who', routes: routes }) }),
      'baseline',
    );
    // A rule that points back at the baseline itself: forwarding it again would loop.
    routes.update(table(baselineAddr));
    const raw = new Client(baselineAddr, grpc.credentials.createInsecure()) as never as ReturnType<
      typeof client
    >;
    clients.push(raw as never);
    const call = (headers: Record<string, string>) =>
      new Promise<Msg>((resolve, reject) => {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(headers)) md.set(k, v);
        raw.who!({}, md, (err: grpc.ServiceError | null, r: Msg) => (err ? reject(err) : resolve(r)));
      });
    const before = { ...counters };
    expect(await call({ baggage: 'branchline=Not_A_Key' })).toMatchObject({ who: 'baseline', key: '' });
    expect(await call({ baggage: 'branchline=%zz' })).toMatchObject({ who: 'baseline', key: '' });
    expect(await call({ baggage: 'branchline=pr-5', [HOP_MARKER]: 'who' })).toMatchObject({
      who: 'baseline',
      key: 'pr-5',
    });
    expect(counters.invalidKey - before.invalidKey).toBe(1);
    expect(counters.malformedBaggage - before.malformedBaggage).toBe(1);
    expect(counters.loopPrevented - before.loopPrevented).toBe(1);
    expect(counters.forwarded - before.forwarded).toBe(0);
  });
  it(`the client interceptor's pass-through call covers grpc-js ${grpcJsVersion}'s InterceptingCall methods`, () => {
    // If this fails, a grpc-js release added a method to InterceptingCall: add it to KeyedCall
    // (and DELEGATED_CALL_METHODS). Until then the interceptor falls back to InterceptingCall.
    const missing = Object.getOwnPropertyNames(grpc.InterceptingCall.prototype).filter(
      (m) =>
        !['constructor', 'processPendingMessage', 'processPendingHalfClose'].includes(m) &&
        !(DELEGATED_CALL_METHODS as readonly string[]).includes(m),
    );
    expect(missing).toEqual([]);
    expect(keyedCallCovers()).toBe(true);
    class Newer extends grpc.InterceptingCall {
      resume(): void {}
    }
    expect(keyedCallCovers(Newer.prototype)).toBe(false);
  });

  it('merges the key into baggage the caller set, and adds it to calls that have none, call after call', async () => {
    const seen: string[] = [];
    const echo = createRoutedServer({}, { runtime: createRuntime({ service: 'who', routes: {} }) });
    echo.addService(service, {
      who(call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
        seen.push(call.metadata.get('baggage').join('|'));
        cb(null, { who: 'echo', key: getRoutingKey() ?? '' });
      },
    });
    servers.push(echo);
    const port = await new Promise<number>((resolve, reject) =>
      echo.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    const c = client(`127.0.0.1:${port}`);
    const withMd = (md: grpc.Metadata) =>
      new Promise<Msg>((resolve, reject) =>
        c.who!({}, md, (err: grpc.ServiceError | null, r: Msg) => (err ? reject(err) : resolve(r))),
      );
    const own = () => {
      const md = new grpc.Metadata();
      md.set('baggage', 'app=1');
      return md;
    };
    const keys = await withRoutingKey('pr-3', async () => [
      (await ask(c)).key,
      (await withMd(own())).key,
      (await ask(c)).key,
      await withRoutingKey('pr-4', async () => (await ask(c)).key),
    ]);
    expect(keys).toEqual(['pr-3', 'pr-3', 'pr-3', 'pr-4']);
    expect(seen).toEqual(['branchline=pr-3', 'app=1,branchline=pr-3', 'branchline=pr-3', 'branchline=pr-4']);
  });

  it('decides again when the route table changes, for a baggage header it has seen before', async () => {
    const routes = new StaticRouteSource({});
    const sandboxAddr = await serve(new grpc.Server(), 'sandbox');
    const baselineAddr = await serve(
      createRoutedServer({}, { runtime: createRuntime({ service: 'who', routes: routes }) }),
      'baseline',
    );
    const c = client(baselineAddr);
    expect(await ask(c, 'pr-5')).toMatchObject({ who: 'baseline', key: 'pr-5' });
    expect(await ask(c, 'pr-5')).toMatchObject({ who: 'baseline', key: 'pr-5' });
    routes.update(table(sandboxAddr));
    expect(await ask(c, 'pr-5')).toMatchObject({ who: 'sandbox' });
    routes.update({});
    expect(await ask(c, 'pr-5')).toMatchObject({ who: 'baseline', key: 'pr-5' });
  });
});
