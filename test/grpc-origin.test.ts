import { createRuntime, withRoutingKey } from '@branchline/core';
import { counters } from '@branchline/core/transport';
import { createRoutedClient, RoutedChannel } from '@branchline/grpc';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callAllTypes, type EchoClient, newObserved, unary } from './fixtures/grpc/echo.js';
import { allFrom as all, GrpcTestbed } from './fixtures/grpc/testbed.js';

// Origin routing: the caller picks the sandbox endpoint itself. The servers are plain grpc-js
// servers with only the context interceptor (no forwarding), so where a call lands shows where
// the client sent it.
const bed = new GrpcTestbed();
const { Client, routes } = bed;
const observed = newObserved();
const runtime = createRuntime({ service: 'web', routes: routes });
let baselineAddr: string;
let sandboxAddr: string;
let otherSandboxAddr: string;

const plainServer = async (instance: string) =>
  (await bed.interceptorServer(instance, runtime, { observed })).addr;

beforeAll(async () => {
  baselineAddr = await plainServer('baseline');
  sandboxAddr = await plainServer('sandbox-pr-1');
  otherSandboxAddr = await plainServer('sandbox-pr-3');
  routes.update({
    sandboxes: [
      { name: 'pr-1', key: 'pr-1', labels: { team: 'pay' }, overrides: { echo: { grpc: sandboxAddr } } },
      { name: 'pr-2', key: 'pr-2', overrides: { ledger: { grpc: '127.0.0.1:1' } } },
    ],
    groups: [{ name: 'pay', key: 'grp-pay', match: { labels: { team: 'pay' } } }],
  });
});

afterAll(() => bed.close());

describe('a routed client (createRoutedClient)', () => {
  let client: EchoClient;
  beforeAll(() => {
    client = createRoutedClient(Client, { service: 'echo', target: baselineAddr, runtime });
  });
  afterAll(() => client.close());

  it('sends a call without a key to the baseline target', async () => {
    expect(await callAllTypes(client)).toEqual(all('baseline', ''));
  });

  it('sends every call type to the sandbox endpoint when (service, key) has a rule, with the key', async () => {
    const before = counters.outgoingRouted;
    expect(await withRoutingKey('pr-1', () => callAllTypes(client))).toEqual(all('sandbox-pr-1', 'pr-1'));
    expect(counters.outgoingRouted - before).toBe(4);
  });

  it('sends a key without a rule for this service to the baseline, still carrying the key', async () => {
    expect(await withRoutingKey('pr-2', () => callAllTypes(client))).toEqual(all('baseline', 'pr-2'));
  });

  it('sends a route-group key to the member sandbox that overrides the service', async () => {
    expect(await withRoutingKey('grp-pay', () => callAllTypes(client))).toEqual(
      all('sandbox-pr-1', 'grp-pay'),
    );
  });
});

describe('a routed channel', () => {
  it('keeps one channel per sandbox endpoint and closes it once no rule names the endpoint', async () => {
    const channel = new RoutedChannel({ service: 'echo', target: baselineAddr, runtime });
    const client = new Client(baselineAddr, grpc.credentials.createInsecure(), {
      channelOverride: channel as unknown as grpc.Channel,
    });
    await withRoutingKey('pr-1', () => unary(client, { text: 'a' }));
    await withRoutingKey('pr-1', () => unary(client, { text: 'b' }));
    expect(channel.sandboxEndpoints()).toEqual([sandboxAddr]);

    // pr-1 moves to a new endpoint: the old channel goes, the next call opens the new one.
    routes.update({
      sandboxes: [{ name: 'pr-1', key: 'pr-1', overrides: { echo: { grpc: otherSandboxAddr } } }],
    });
    expect(channel.sandboxEndpoints()).toEqual([]);
    const moved = await withRoutingKey('pr-1', () => unary(client, { text: 'c' }));
    expect(moved.instance).toBe('sandbox-pr-3');
    expect(channel.sandboxEndpoints()).toEqual([otherSandboxAddr]);

    routes.update({ sandboxes: [] });
    expect(channel.sandboxEndpoints()).toEqual([]);
    const back = await withRoutingKey('pr-1', () => unary(client, { text: 'd' }));
    expect(back.instance).toBe('baseline');
    client.close();
    channel.close();
  });

  it('rejects options that name no service or target, saying what to pass', () => {
    expect(() => new RoutedChannel({ service: '', target: baselineAddr, runtime })).toThrow(/option service/);
    expect(() => new RoutedChannel({ service: 'echo', target: '', runtime })).toThrow(/option target/);
  });
});
