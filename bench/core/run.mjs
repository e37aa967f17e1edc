// Key extraction vs OpenTelemetry's W3CBaggagePropagator on the same headers, and resolve()
// and heap with 10,000 sandboxes. Targets (issue #2): extraction at least as fast as OTel,
// under 50 ns with no baggage header; resolve under 100 ns; the table under 20 MB of heap.

import { createKeyReader, nodeHeadersGetter, RouteTable } from '@branchline/core/transport';
import { defaultTextMapGetter, propagation, ROOT_CONTEXT } from '@opentelemetry/api';
import { W3CBaggagePropagator } from '@opentelemetry/core';
import { fmt, nsPerOp, printTable, saveResults } from '../lib.mjs';

const reader = createKeyReader();
const otel = new W3CBaggagePropagator();
const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const ten = Array.from({ length: 9 }, (_, i) => `member${i}=value${i}`).join(',');
const sets = {
  'no baggage': { host: 'orders:8080', accept: '*/*', 'user-agent': 'bench' },
  'baggage: ours only': { host: 'orders:8080', baggage: 'branchline=pr-42' },
  'baggage: 10 members': { host: 'orders:8080', baggage: `${ten},branchline=pr-42` },
  'traceparent + baggage': {
    host: 'orders:8080',
    traceparent,
    baggage: 'userid=alice,branchline=pr-42,tenant=acme',
  },
};

const extraction = [];
for (const [name, headers] of Object.entries(sets)) {
  const expected = headers.baggage ? 'pr-42' : undefined;
  if (reader.read(headers, nodeHeadersGetter) !== expected)
    throw new Error(`branchline read the wrong key for ${name}`);
  const viaOtel = (h) =>
    propagation.getBaggage(otel.extract(ROOT_CONTEXT, h, defaultTextMapGetter))?.getEntry('branchline')
      ?.value;
  if (viaOtel(headers) !== expected) throw new Error(`otel read the wrong key for ${name}`);
  const bl = nsPerOp(() => reader.read(headers, nodeHeadersGetter));
  const ot = nsPerOp(() => viaOtel(headers));
  extraction.push({
    headers: name,
    'branchline ns': fmt(bl),
    'otel ns': fmt(ot),
    'otel/branchline': fmt(ot / bl, 2),
  });
}
printTable(
  'key extraction (ns per request, lower is better; ratio > 1 means Branchline is faster)',
  extraction,
);

const N = 10_000;
const spec = {
  sandboxes: Array.from({ length: N }, (_, i) => ({
    name: `sb-${i}`,
    key: `key-${i}`,
    overrides: { [`svc-${i % 50}`]: { http: `http://10.0.${(i >> 8) & 255}.${i & 255}:8080` } },
    labels: { team: `t${i % 20}` },
    createdAt: i,
  })),
};
globalThis.gc?.();
const before = process.memoryUsage().heapUsed;
const table = new RouteTable(spec);
globalThis.gc?.();
const heapMb = (process.memoryUsage().heapUsed - before) / 1024 / 1024;
const keys = Array.from({ length: 1024 }, (_, i) => `key-${(i * 7919) % N}`);
const services = keys.map((k) => `svc-${Number(k.slice(4)) % 50}`);
const resolveHit = nsPerOp((i) => table.resolve(services[i & 1023], keys[i & 1023]) !== undefined, {
  iterations: 1_000_000,
});
const resolveMiss = nsPerOp((i) => table.resolve('svc-none', keys[i & 1023]) !== undefined, {
  iterations: 1_000_000,
});
printTable(`route table with ${N} sandboxes`, [
  { measure: 'resolve, rule exists (ns)', value: fmt(resolveHit) },
  { measure: 'resolve, no rule (ns)', value: fmt(resolveMiss) },
  { measure: 'heap of the compiled table (MB)', value: fmt(heapMb, 2) },
]);

const noBaggage = Number(extraction[0]['branchline ns']);
const targets = {
  'extraction at least as fast as OTel on every header set': extraction.every(
    (r) => Number(r['otel/branchline']) >= 1,
  ),
  'extraction < 50 ns without baggage': noBaggage < 50,
  'resolve < 100 ns at 10k sandboxes': resolveHit < 100 && resolveMiss < 100,
  'table < 20 MB heap': heapMb < 20,
};
printTable(
  'targets',
  Object.entries(targets).map(([t, ok]) => ({ target: t, met: ok ? 'yes' : 'NO' })),
);
saveResults('core', {
  extraction,
  resolve: { sandboxes: N, hitNs: resolveHit, missNs: resolveMiss, heapMb },
  targets,
});
