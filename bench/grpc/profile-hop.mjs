// bench/grpc/profile-hop.mjs: where a forwarding process spends its time per forwarded call.
// `node bench/grpc/profile-hop.mjs [baseline|relay] [calls]` (after a build) starts the sandbox
// and the chosen forwarder (the Branchline baseline, or the bare node:http2 relay) with
// --cpu-prof, makes `calls` sequential keyed calls through it (default 20000), and prints the
// forwarder's top functions by self time, grouped by where they come from (Branchline, grpc-js,
// Node's internals, V8/GC). A sampling profile over the process's whole life (start-up included,
// spread over the calls), so a guide to shares, not exact costs.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withRoutingKey } from '@branchline/core';
import { createClientInterceptor } from '@branchline/grpc';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fmt, printTable } from '../lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [role = 'baseline', callsArg = '20000'] = process.argv.slice(2);
const calls = Number(callsArg);
const def = protoLoader.loadSync(join(here, 'bench.proto'), { longs: Number, defaults: true });
const Bench = grpc.loadPackageDefinition(def).branchline.bench.Bench;

function start(args) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /ready (.*)\n/.exec(out);
      if (m) resolve({ child, addrs: JSON.parse(m[1]) });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'branchline-grpc-prof-'));
const sandbox = await start([join(here, 'servers.mjs'), 'sandbox']);
const fwd = await start([
  '--cpu-prof',
  `--cpu-prof-dir=${dir}`,
  join(here, 'servers.mjs'),
  role,
  sandbox.addrs.sandbox,
]);
const client = new Bench(fwd.addrs[role], grpc.credentials.createInsecure(), {
  interceptors: [createClientInterceptor()],
});
await withRoutingKey('pr-1', async () => {
  for (let i = 0; i < calls; i++)
    await new Promise((res, rej) => client.call({ text: 'x', n: i }, (e, r) => (e ? rej(e) : res(r))));
});
client.close();
fwd.child.kill('SIGINT');
await new Promise((r) => fwd.child.once('exit', r));
sandbox.child.kill('SIGKILL');

const profile = JSON.parse(readFileSync(join(dir, readdirSync(dir)[0]), 'utf8'));
rmSync(dir, { recursive: true, force: true });
const self = new Map();
const dt = profile.timeDeltas;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const counts = new Map();
for (let i = 0; i < profile.samples.length; i++)
  counts.set(profile.samples[i], (counts.get(profile.samples[i]) ?? 0) + (dt[i] ?? 0));
let total = 0;
let idle = 0;
for (const [id, us] of counts) {
  const f = byId.get(id).callFrame;
  if (f.functionName === '(idle)') {
    idle += us;
    continue;
  }
  total += us;
  const where = /packages\/grpc|packages\/core/.test(f.url)
    ? 'branchline'
    : /@grpc\/grpc-js/.test(f.url)
      ? 'grpc-js'
      : f.url.startsWith('node:')
        ? 'node'
        : f.url === ''
          ? 'v8/native'
          : 'other';
  const k = `${where}  ${f.functionName || '(anonymous)'}  ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
  self.set(k, (self.get(k) ?? 0) + us);
}
const groups = new Map();
for (const [k, us] of self) {
  const g = k.split('  ')[0];
  groups.set(g, (groups.get(g) ?? 0) + us);
}
printTable(
  `${role}: busy CPU per call by origin (${calls} calls; idle ${fmt(idle / calls, 1)} µs/call left out)`,
  [...groups]
    .sort((a, b) => b[1] - a[1])
    .map(([g, us]) => ({
      origin: g,
      'µs/call': fmt(us / calls, 1),
      share: `${fmt((us / total) * 100, 1)} %`,
    })),
);
printTable(
  `${role}: top functions by self time`,
  [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 25)
    .map(([k, us]) => ({
      'µs/call': fmt(us / calls, 2),
      share: `${fmt((us / total) * 100, 1)} %`,
      function: k,
    })),
);
process.exit(0);
