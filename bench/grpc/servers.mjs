// Child process for bench/grpc/run.mjs: starts the servers one role needs on loopback and prints
// `ready {json of addresses}`. Roles: `throughput` (a plain server and a Branchline server),
// `sandbox`, `baseline <sandbox address>` (a Branchline baseline that forwards key `pr-1`).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRuntime } from '@branchline/core';
import { createRoutedServer } from '@branchline/grpc';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

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
  const routed = createRoutedServer(
    {},
    { runtime: createRuntime({ service: 'bench', routeSource: routes }) },
  );
  routed.addService(Bench.service, impl('branchline'));
  out.branchline = await listen(routed);
} else if (role === 'sandbox') {
  const s = new grpc.Server();
  s.addService(Bench.service, impl('sandbox'));
  out.sandbox = await listen(s);
} else if (role === 'baseline') {
  const routes = { sandboxes: [{ name: 'pr-1', key: 'pr-1', overrides: { bench: { grpc: sandboxAddr } } }] };
  const s = createRoutedServer({}, { runtime: createRuntime({ service: 'bench', routeSource: routes }) });
  s.addService(Bench.service, impl('baseline'));
  out.baseline = await listen(s);
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
