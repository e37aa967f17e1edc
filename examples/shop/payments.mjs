// payments — a gRPC service (@grpc/grpc-js). The baseline charges the standard card fee; the
// sandbox `pr-101` runs a new fee rule. Branchline's routed server gives every handler the
// caller's routing key, and forwards calls that belong to a sandbox.
import { fileURLToPath } from 'node:url';
import { announceWorkload, getRoutingKey } from '@branchline/core';
import { createRoutedServer } from '@branchline/grpc';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { onShutdown, ready, reportRules, sandbox, trace } from './lib.mjs';

const proto = fileURLToPath(new URL('./payments.proto', import.meta.url));
const { shop } = grpc.loadPackageDefinition(protoLoader.loadSync(proto, { longs: Number }));

// The change under review in pr-101: a flat 1.5% capped at 2 €, instead of 2.9% + 30¢.
const feeRule = sandbox
  ? { name: 'new rule: 1.5% capped at 200¢', fee: (c) => Math.min(200, Math.round(c * 0.015)) }
  : { name: 'standard: 2.9% + 30¢', fee: (c) => Math.round(c * 0.029) + 30 };

const server = createRoutedServer();
server.addService(shop.Payments.service, {
  charge(call, callback) {
    const { order, cents } = call.request;
    const fee = feeRule.fee(cents);
    trace(order, 'gRPC', `charged ${cents}¢ + fee ${fee}¢ (${feeRule.name})`, getRoutingKey());
    callback(null, { feeCents: fee, feeRule: feeRule.name, servedBy: sandbox ?? 'baseline' });
  },
});

const address = `127.0.0.1:${process.env.PORT}`;
await new Promise((resolve, reject) =>
  server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err) =>
    err ? reject(err) : resolve(),
  ),
);
reportRules();
// A sandbox process announces its endpoint to the registry (heartbeats with a lease, withdrawn on
// SIGTERM or stop()); in the baseline process this does nothing.
const announcement = announceWorkload({ grpc: address });
await announcement.announced(10_000);
ready(`gRPC ${address}`);

onShutdown(async () => {
  await announcement.stop();
  await new Promise((r) => server.tryShutdown(r));
});
