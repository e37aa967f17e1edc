// Starts a registry in a child process for the registry benchmarks (run.mjs, fanout.mjs), from
// this checkout's CLI or, with `build`, from another build's dist copies (A/B runs).
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { freePort } from '../lib.mjs';

/**
 * `flushMs`: the registry's --watch-flush-interval in ms (undefined: its default).
 * Returns { child, url }; `metric(name)` reads one value from its /metrics.
 */
export async function startRegistry({ root, store, build, flushMs, stderr = 'inherit' }) {
  const port = await freePort();
  const args = build
    ? [
        '--input-type=module',
        '-e',
        `const { createRegistryServer } = await import(${JSON.stringify(join(build, 'registry', 'index.js'))});
         const s = createRegistryServer({ store: ${JSON.stringify(store)}, log() {}${flushMs === undefined ? '' : `, watchFlushIntervalMs: ${Number(flushMs)}`} });
         console.log('listening on', await s.listen(${port}));
         process.on('SIGTERM', () => s.close().then(() => process.exit(0)));`,
      ]
    : [
        join(root, 'packages/cli/dist/bin.js'),
        'registry',
        '--port',
        String(port),
        '--store',
        store,
        ...(flushMs === undefined
          ? []
          : ['--watch-flush-interval', Number(flushMs) ? `${Number(flushMs)}ms` : '0']),
      ];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', stderr],
    env: { ...process.env, BRANCHLINE_LOG_LEVEL: 'error' },
  });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  while (!out.includes('listening on')) await new Promise((r) => setTimeout(r, 50));
  const url = `http://127.0.0.1:${port}`;
  const metric = async (name) =>
    Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${url}/metrics`)).text())?.[1]);
  return { child, url, metric };
}
