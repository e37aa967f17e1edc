import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createRuntime } from '@branchline/core';
import { branchline } from '@branchline/express';
import { createRoutedClient } from '@branchline/grpc';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EchoClient, unary } from './fixtures/grpc/echo.js';
import { GrpcTestbed } from './fixtures/grpc/testbed.js';

// An HTTP service (Express 5 with @branchline/express) calls the gRPC Echo service; the key the
// HTTP request carried must reach the gRPC handler, and route the call.
const bed = new GrpcTestbed();
const { Client, routes } = bed;
let web: import('node:http').Server;
let webUrl: string;
let routed: EchoClient;
let plain: EchoClient;
const middleware = branchline({ service: 'web', routes: routes });

beforeAll(async () => {
  const sandbox = await bed.routedServer('echo-sandbox', { sandbox: 'pr-9' });
  const baseline = await bed.routedServer('echo-baseline');
  routes.update({
    sandboxes: [
      { name: 'pr-9', key: 'pr-9', overrides: { echo: { grpc: sandbox.addr } } },
      { name: 'pr-10', key: 'pr-10', overrides: { ledger: { http: 'http://127.0.0.1:1' } } },
    ],
  });
  const runtime = createRuntime({ service: 'web', routes: routes });
  // Origin routing: the client picks the sandbox itself.
  routed = bed.track(createRoutedClient(Client, { service: 'echo', target: baseline.addr, runtime }));
  // Destination routing: the client always calls the baseline, which forwards.
  plain = bed.client(baseline.addr);

  const app = express();
  app.use(middleware);
  app.get('/echo/:via', async (req, res) => {
    const client = req.params.via === 'routed' ? routed : plain;
    const reply = await unary(client, { text: 'from-web' });
    res.json({ web: req.branchline, echo: reply });
  });
  web = app.listen(0, '127.0.0.1');
  await once(web, 'listening');
  webUrl = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;
});

afterAll(async () => {
  web?.close();
  await middleware.close();
  await bed.close();
});

async function get(path: string, key?: string) {
  const headers: Record<string, string> = key ? { baggage: `userid=alice,branchline=${key}` } : {};
  const res = await fetch(`${webUrl}${path}`, { headers });
  expect(res.status).toBe(200);
  return (await res.json()) as { echo: { instance: string; key: string } };
}

describe('an Express service calling a gRPC service', () => {
  it('passes the key of the HTTP request to the gRPC handler through a routed client, which picks the sandbox', async () => {
    expect((await get('/echo/routed', 'pr-9')).echo).toEqual({
      instance: 'echo-sandbox',
      key: 'pr-9',
      text: 'from-web',
    });
  });

  it('passes the key through a plain client with the interceptor; the gRPC baseline forwards to the sandbox', async () => {
    expect((await get('/echo/plain', 'pr-9')).echo).toEqual({
      instance: 'echo-sandbox',
      key: 'pr-9',
      text: 'from-web',
    });
  });

  it('reaches the gRPC baseline with the key when the key routes only other services', async () => {
    expect((await get('/echo/routed', 'pr-10')).echo).toEqual({
      instance: 'echo-baseline',
      key: 'pr-10',
      text: 'from-web',
    });
    expect((await get('/echo/plain', 'pr-10')).echo).toEqual({
      instance: 'echo-baseline',
      key: 'pr-10',
      text: 'from-web',
    });
  });

  it('reaches the gRPC baseline with no key when the HTTP request had none', async () => {
    expect((await get('/echo/plain')).echo).toEqual({ instance: 'echo-baseline', key: '', text: 'from-web' });
  });
});
