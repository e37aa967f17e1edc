// Child process for bench/grpc/run.mjs: starts the servers one role needs on loopback and prints
// `ready {json of addresses}`. Roles: `throughput` (a plain server and a Branchline server),
// `sandbox`, `baseline <sandbox address>` (a Branchline baseline that forwards key `pr-1`),
// `relay <sandbox address>` (a minimal byte relay written directly on node:http2, no grpc-js and
// no Branchline: the floor of a forwarding hop done in Node, for comparison), and the lower
// bounds of frame-relay.mjs: `answer` and `frames <sandbox address>`.
import http2 from 'node:http2';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRuntime } from '@branchline/core';
import { createRoutedServer } from '@branchline/grpc';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { answeringServer, frameRelay } from './frame-relay.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const def = protoLoader.loadSync(join(here, 'bench.proto'), { longs: Number, defaults: true });
const Bench = grpc.loadPackageDefinition(def).branchline.bench.Bench;

function impl(instance) {
  return {
    call(call, cb) {
      cb(null, { text: instance, n: call.request.n });
    },
  };
}

function listen(server) {
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(`127.0.0.1:${port}`),
    ),
  );
}

/**
 * What any Node HTTP/2 proxy has to do per call, and nothing more: one pre-connected session to
 * the sandbox, each incoming stream relayed as headers, DATA bytes and trailers (node:http2 sets
 * TCP_NODELAY itself). No key reading, no routing, no error reporting, no backpressure: a lower
 * bound, not a product.
 */
async function rawRelay(target) {
  const upstream = http2.connect(`http://${target}`);
  await new Promise((resolve) => upstream.once('connect', resolve));
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    headers[':authority'] = target;
    const out = upstream.request(headers);
    let trailers;
    stream.on('error', () => {});
    out.on('error', () => {});
    stream.on('data', (chunk) => out.write(chunk));
    stream.on('end', () => out.end());
    out.on('response', (h) => stream.respond(h, { waitForTrailers: true }));
    out.on('trailers', (t) => {
      trailers = t;
    });
    out.on('data', (chunk) => stream.write(chunk));
    out.on('end', () => stream.end());
    stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? { 'grpc-status': '13' }));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${server.address().port}`;
}

const [role, sandboxAddr] = process.argv.slice(2);
const out = {};
if (role === 'throughput') {
  const plain = new grpc.Server();
  plain.addService(Bench.service, impl('plain'));
  out.plain = await listen(plain);
  // A route table with a sandbox for another service: a realistic table, and `pr-2` is unrouted here.
  const routes = {
    sandboxes: [{ name: 'pr-2', key: 'pr-2', overrides: { ledger: { grpc: '127.0.0.1:1' } } }],
  };
  const routed = createRoutedServer({}, { runtime: createRuntime({ service: 'bench', routes: routes }) });
  routed.addService(Bench.service, impl('branchline'));
  out.branchline = await listen(routed);
} else if (role === 'sandbox') {
  const s = new grpc.Server();
  s.addService(Bench.service, impl('sandbox'));
  out.sandbox = await listen(s);
} else if (role === 'baseline') {
  const routes = { sandboxes: [{ name: 'pr-1', key: 'pr-1', overrides: { bench: { grpc: sandboxAddr } } }] };
  const s = createRoutedServer({}, { runtime: createRuntime({ service: 'bench', routes: routes }) });
  s.addService(Bench.service, impl('baseline'));
  out.baseline = await listen(s);
} else if (role === 'relay') {
  out.relay = await rawRelay(sandboxAddr);
} else if (role === 'answer') {
  out.answer = await answeringServer(Bench.service.Call.responseSerialize({ text: 'answer', n: 0 }));
} else if (role === 'frames') {
  out.frames = await frameRelay(sandboxAddr);
} else {
  console.error(`unknown role ${role}`);
  process.exit(2);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
// The parent asks for this process's CPU time to attribute server-side cost per call.
process.on('message', (m) => {
  if (m === 'cpu') process.send({ cpu: process.cpuUsage() });
});
console.log(`ready ${JSON.stringify(out)}`);
