// With grpc-js internals off (BRANCHLINE_GRPC_INTERNALS=off, as when a grpc-js release lacks
// them), routing goes by the public grpc-js API only, and still routes every call correctly.

import { createRuntime, getRoutingKey, withRoutingKey } from '@branchline/core';
import { StaticRouteSource } from '@branchline/core/transport';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { createClientInterceptor, createRoutedServer, type ForwardInfo, HOP_METADATA } from '../src/index.js';
import { grpcInternalsEnabled, keyedCallUsable } from '../src/internals.js';

interface Msg {
  who?: string;
  key?: string;
  hop?: string;
}
const json = {
  serialize: (v: Msg) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as Msg,
};
const whoService: grpc.ServiceDefinition = {
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
/** A method only the sandbox implements: only the stream-level relay (an internals hook) reaches it. */
const bytes = (b: Buffer) => b;
const pingService: grpc.ServiceDefinition = {
  ping: {
    path: '/test.Extra/Ping',
    requestStream: false,
    responseStream: false,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  },
};
const Client = grpc.makeGenericClientConstructor(whoService, 'Who');

const servers: grpc.Server[] = [];
const clients: grpc.Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.tryShutdown(r))));
});

async function serve(server: grpc.Server, who: string, ping = false): Promise<string> {
  server.addService(whoService, {
    who(call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
      cb(null, { who, key: getRoutingKey() ?? '', hop: String(call.metadata.get(HOP_METADATA)[0] ?? '') });
    },
  });
  if (ping)
    server.addService(pingService, {
      ping: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(`pong from ${who}`)),
    });
  servers.push(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return `127.0.0.1:${port}`;
}

/** A baseline and a sandbox of service `who`, key pr-5 routed to the sandbox, and a client of the baseline. */
async function setup() {
  const routes = new StaticRouteSource();
  const sandboxAddr = await serve(
    createRoutedServer({}, { runtime: createRuntime({ service: 'who', sandbox: 'pr-5', routes: routes }) }),
    'sandbox',
    true,
  );
  const forwarded: ForwardInfo[] = [];
  const baselineAddr = await serve(
    createRoutedServer(
      {},
      {
        runtime: createRuntime({ service: 'who', routes: routes }),
        onForward: (i) => forwarded.push(i),
      },
    ),
    'baseline',
  );
  routes.update({ sandboxes: [{ name: 'pr-5', key: 'pr-5', overrides: { who: { grpc: sandboxAddr } } }] });
  const c = new Client(baselineAddr, grpc.credentials.createInsecure(), {
    interceptors: [createClientInterceptor()],
  });
  clients.push(c);
  const ask = (key?: string) => {
    const run = () =>
      new Promise<Msg>((resolve, reject) =>
        (c as unknown as Record<string, (...a: unknown[]) => void>).who!(
          {},
          (err: grpc.ServiceError | null, r: Msg) => (err ? reject(err) : resolve(r)),
        ),
      );
    return key === undefined ? run() : withRoutingKey(key, run);
  };
  const ping = () =>
    withRoutingKey(
      'pr-5',
      () =>
        new Promise<string>((resolve) =>
          c.makeUnaryRequest('/test.Extra/Ping', bytes, bytes, Buffer.from('ping'), (err, reply) =>
            resolve(err ? `error ${err.code}` : String(reply)),
          ),
        ),
    );
  return { ask, ping, forwarded, sandboxAddr };
}

/** Runs `fn` with BRANCHLINE_GRPC_INTERNALS set to `value` (servers and interceptors read it when made). */
async function withInternals<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = process.env.BRANCHLINE_GRPC_INTERNALS;
  if (value === undefined) delete process.env.BRANCHLINE_GRPC_INTERNALS;
  else process.env.BRANCHLINE_GRPC_INTERNALS = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.BRANCHLINE_GRPC_INTERNALS;
    else process.env.BRANCHLINE_GRPC_INTERNALS = before;
  }
}

describe('grpc-js internals and their public-API fallback', () => {
  it('uses internals on grpc-js 1.10 and later 1.x only, unless BRANCHLINE_GRPC_INTERNALS=off', async () => {
    await withInternals(undefined, async () => {
      expect(grpcInternalsEnabled()).toBe(true);
      expect(grpcInternalsEnabled('1.10.0')).toBe(true);
      expect(grpcInternalsEnabled('1.19.3')).toBe(true);
      expect(grpcInternalsEnabled('1.9.15')).toBe(false);
      expect(grpcInternalsEnabled('2.0.0')).toBe(false);
      expect(keyedCallUsable()).toBe(true);
    });
    await withInternals('off', async () => {
      expect(grpcInternalsEnabled()).toBe(false);
      expect(keyedCallUsable()).toBe(false);
    });
  });

  it('with internals off, keyed calls still reach the sandbox (with key and hop marker) and the rest stay on baseline', async () => {
    await withInternals('off', async () => {
      const { ask, ping, forwarded, sandboxAddr } = await setup();
      expect(await ask('pr-5')).toEqual({ who: 'sandbox', key: 'pr-5', hop: 'who' });
      expect(await ask()).toEqual({ who: 'baseline', key: '', hop: '' });
      expect(await ask('pr-unknown')).toEqual({ who: 'baseline', key: 'pr-unknown', hop: '' });
      expect(forwarded).toEqual([
        { method: '/test.Who/Who', key: 'pr-5', sandbox: 'pr-5', endpoint: sandboxAddr },
      ]);
      // No stream hook: a method the baseline lacks is answered by grpc-js on the baseline.
      expect(await ping()).toBe(`error ${grpc.status.UNIMPLEMENTED}`);
    });
  });

  it('with internals on, the same setup relays at the stream level (the method only the sandbox has is reached)', async () => {
    await withInternals(undefined, async () => {
      const { ask, ping } = await setup();
      expect(await ask('pr-5')).toEqual({ who: 'sandbox', key: 'pr-5', hop: 'who' });
      expect(await ping()).toBe('pong from sandbox');
    });
  });
});
