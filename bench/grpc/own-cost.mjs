// bench/grpc/own-cost.mjs: Branchline's own CPU per call, apart from grpc-js and the network.
// `node bench/grpc/own-cost.mjs` (after a build). Drives the client interceptor (start, one
// message, half-close) and, on the server, the stream hook's routing plus the routing
// interceptor's events for a unary call, against grpc-js neighbours that do nothing. The key
// `pr-2` has no rule for this service (the "unrouted key" of the throughput bench). Prints the
// median CPU time per call of 7 rounds. End-to-end figures move by about ±5 % between runs on a
// shared machine; these isolate the part Branchline can change.
import { createRuntime, getRoutingKey, withRoutingKey } from '@branchline/core';
import * as grpc from '@grpc/grpc-js';
import { createClientInterceptor } from '../../packages/grpc/dist/client-interceptor.js';
import { rawDeserializer } from '../../packages/grpc/dist/raw.js';
import { routingInterceptor, ServerRouting } from '../../packages/grpc/dist/server-interceptor.js';
import { StreamRelay } from '../../packages/grpc/dist/stream-relay.js';
import { knob, smoke } from '../lib.mjs';

const N = knob('BENCH_GRPC_OWN_CALLS', 300_000, 2000);
const ROUNDS = smoke ? 1 : 7;
const KEY = 'pr-2';

// Client: what grpc-js does with an interceptor's call for a unary request.
const next = {
  start() {},
  sendMessageWithContext() {},
  sendMessage() {},
  halfClose() {},
  startRead() {},
  cancelWithStatus() {},
  getPeer: () => '',
  getAuthContext: () => null,
};
const interceptor = createClientInterceptor();
const listener = { onReceiveMetadata() {}, onReceiveMessage() {}, onReceiveStatus() {} };
function client(n) {
  for (let i = 0; i < n; i++) {
    const call = interceptor({}, () => next);
    call.start(new grpc.Metadata(), listener);
    call.sendMessage(i);
    call.halfClose();
  }
}

// Server: a routed baseline (createRoutedServer without other interceptors) with a table that
// routes another service only.
const routes = { sandboxes: [{ name: KEY, key: KEY, overrides: { ledger: { grpc: '127.0.0.1:1' } } }] };
const routing = new ServerRouting({ runtime: createRuntime({ service: 'bench', routes: routes }) });
const relay = new StreamRelay(routing, 'bench');
const intercept = routingInterceptor(routing, true);
const method = {
  path: '/b.B/Call',
  requestStream: false,
  responseStream: false,
  requestDeserialize: rawDeserializer((b) => b),
};
let keyed = 0;
const handler = {
  onReceiveMetadata() {},
  onReceiveMessage() {},
  onReceiveHalfClose() {
    if (getRoutingKey() === KEY) keyed++;
  },
  onCancel() {},
};
const call = {
  start() {},
  startRead() {},
  sendMessage: (_m, cb) => cb(),
  sendStatus() {},
  sendMetadata() {},
};
const body = Buffer.from('x');
const server = (baggage) => (n) => {
  for (let i = 0; i < n; i++) {
    const headers = { ':path': method.path, 'content-type': 'application/grpc' };
    const md = new grpc.Metadata();
    if (baggage) {
      headers.baggage = baggage;
      md.set('baggage', baggage);
    }
    routing.handoff = relay.route(null, headers);
    const c = intercept(method, call);
    routing.handoff = undefined;
    c.start(handler);
    c.onReceiveMetadata(md);
    c.onReceiveMessage(body);
    c.onReceiveHalfClose();
    c.sendMessage(body, () => {});
    c.sendStatus({ code: 0, details: 'OK' });
  }
};

function nsPerCall(fn) {
  const t = process.cpuUsage();
  fn(N);
  const d = process.cpuUsage(t);
  return ((d.user + d.system) * 1000) / N;
}
const rows = {
  'client, key': () => withRoutingKey(KEY, () => nsPerCall(client)),
  'client, no key': () => nsPerCall(client),
  'server, unrouted key': () => nsPerCall(server(`branchline=${KEY}`)),
  'server, no key': () => nsPerCall(server(undefined)),
};
const samples = Object.fromEntries(Object.keys(rows).map((k) => [k, []]));
for (let r = 0; r < ROUNDS; r++) for (const [k, fn] of Object.entries(rows)) samples[k].push(fn());
if (keyed === 0) throw new Error('the handler never saw the key: the measurement is not of a keyed call');
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
console.log(
  `Branchline's own CPU per call (median of ${ROUNDS} rounds of ${N} calls), Node ${process.version}`,
);
for (const [k, a] of Object.entries(samples))
  console.log(`  ${k.padEnd(22)} ${median(a).toFixed(0).padStart(5)} ns`);
