// `npm run bench [-- name ...]`: runs each benchmark in its own process, one after another. A
// benchmark is a directory here with a run.mjs (amqp, bullmq, chain, core, grpc, http, kafka,
// mysql, nats, pg, registry, sqs); each reads its sizes from BENCH_* variables (its header).
//
// Smoke run: `BENCH_SMOKE=1 node bench/run.mjs [name ...]` runs every part once at the least
// sizes (lib.mjs's knob(); a BENCH_* variable still wins), to show the benchmark works; its
// figures mean nothing and nothing is written to bench/results/. `npm test` does this for every
// benchmark and side script (test/bench-smoke.test.ts, e2e project, ~1 min): a benchmark that
// fails or stops printing its table fails the tests. nginx parts are skipped when nginx is
// missing; the callgrind parts run only with BENCH_SMOKE_CALLGRIND=1 (valgrind takes minutes).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const all = readdirSync(here, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(here, d.name, 'run.mjs')))
  .map((d) => d.name)
  .sort();
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : all;
let failed = 0;
for (const name of wanted) {
  if (!all.includes(name)) {
    console.error(`no benchmark named ${name}; have: ${all.join(', ')}`);
    failed++;
    continue;
  }
  console.log(`\n=== bench/${name}`);
  const r = spawnSync(process.execPath, ['--expose-gc', join(here, name, 'run.mjs')], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
