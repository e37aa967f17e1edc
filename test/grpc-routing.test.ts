import { withRoutingKey } from '@branchline/core';
import { counters } from '@branchline/core/transport';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callAllTypes, type EchoClient, newObserved, unary } from './fixtures/grpc/echo.js';
import { allFrom as all, GrpcTestbed } from './fixtures/grpc/testbed.js';
import { freePort } from './helpers/processes.js';

// Destination routing: a client talks to the baseline only; the baseline serves or forwards.
const bed = new GrpcTestbed();
const observed = newObserved();
let baselineAddr: string;
let sandboxAddr: string;
let downAddr: string;
let client: EchoClient;

function table() {
  return {
    sandboxes: [
      {
        name: 'pr-1',
        key: 'pr-1',
        labels: { feature: 'checkout' },
        overrides: { echo: { grpc: sandboxAddr } },
      },
      { name: 'pr-2', key: 'pr-2', overrides: { ledger: { grpc: '127.0.0.1:1' } } },
      { name: 'pr-down', key: 'pr-down', overrides: { echo: { grpc: downAddr } } },
      { name: 'pr-loop', key: 'pr-loop', overrides: { echo: { grpc: baselineAddr } } },
    ],
    groups: [{ name: 'checkout', key: 'grp-checkout', match: { labels: { feature: 'checkout' } } }],
  };
}

beforeAll(async () => {
  ({ addr: sandboxAddr } = await bed.routedServer('sandbox-pr-1', { sandbox: 'pr-1', observed }));
  ({ addr: baselineAddr } = await bed.routedServer('baseline', { observed }));
  downAddr = `127.0.0.1:${await freePort()}`;
  bed.routes.update(table());
  client = bed.client(baselineAddr);
});

afterAll(() => bed.close());

const withKey = (key: string | undefined) => withRoutingKey(key, () => callAllTypes(client));

describe('a baseline gRPC server created with createRoutedServer', () => {
  it('serves a call without a routing key itself, for all four call types', async () => {
    expect(await withKey(undefined)).toEqual(all('baseline', ''));
  });

  it('forwards every call type to the sandbox when the key routes this service there', async () => {
    const before = counters.forwarded;
    expect(await withKey('pr-1')).toEqual(all('sandbox-pr-1', 'pr-1'));
    expect(counters.forwarded - before).toBe(4);
  });

  it('serves a key whose sandbox overrides only other services, with the key active in its handlers', async () => {
    expect(await withKey('pr-2')).toEqual(all('baseline', 'pr-2'));
  });

  it('forwards a route-group key to the group member that overrides this service', async () => {
    expect(await withKey('grp-checkout')).toEqual(all('sandbox-pr-1', 'grp-checkout'));
  });

  it('treats an invalid key as absent: served by baseline with no key active, and counted', async () => {
    const before = counters.invalidKey;
    const md = () => {
      const m = new grpc.Metadata();
      m.set('baggage', 'other=1,branchline=PR_1!');
      return m;
    };
    expect(await callAllTypes(client, md)).toEqual(all('baseline', ''));
    expect(counters.invalidKey - before).toBe(4);
  });

  it('makes the key active inside stream data listeners of client-streaming and bidi handlers', async () => {
    observed.keysInListeners.length = 0;
    await withKey('pr-2');
    expect(observed.keysInListeners).toEqual(['collect:pr-2', 'collect:pr-2', 'chat:pr-2', 'chat:pr-2']);
  });

  it('merges the key into baggage the caller already set, keeping the other members', async () => {
    const md = new grpc.Metadata();
    md.set('baggage', 'tenant=acme');
    const seen: string[] = [];
    const spy = bed.client(baselineAddr, {
      interceptors: [
        (options, nextCall) =>
          new grpc.InterceptingCall(nextCall(options), {
            start(metadata, listener, next) {
              seen.push(...metadata.get('baggage').map(String));
              next(metadata, listener);
            },
          }),
      ],
    });
    const reply = await withRoutingKey('pr-1', () => unary(spy, { text: 'm' }, md));
    expect(seen).toEqual(['tenant=acme,branchline=pr-1']);
    expect(reply.instance).toBe('sandbox-pr-1');
  });

  it('serves a forwarded call that would be forwarded again (loop guard) and counts it', async () => {
    const before = { loop: counters.loopPrevented, fwd: counters.forwarded };
    const reply = await withRoutingKey('pr-loop', () => unary(client, { text: 'loop' }));
    expect(reply.instance).toBe('baseline');
    expect(counters.forwarded - before.fwd).toBe(1);
    expect(counters.loopPrevented - before.loop).toBe(1);
  });

  it('answers UNAVAILABLE naming the sandbox and endpoint when the sandbox is unreachable', async () => {
    const err = await withRoutingKey('pr-down', () => unary(client, { text: 'x' })).catch((e) => e);
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toContain('sandbox "pr-down"');
    expect(err.details).toContain(downAddr);
  });
});
