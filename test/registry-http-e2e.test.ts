import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

// Registry responses are checked field by field by the assertions below.
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-registry-e2e-'));
const procs: RunningProcess[] = [];
afterAll(async () => {
  for (const p of procs) await p.stop('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const mod = (p: string) => JSON.stringify(pathToFileURL(join(root, p)).href);
// A baseline "payments" service behind @branchline/express, following the registry.
const BASELINE = `
import express from ${mod('node_modules/express/index.js')};
import { branchline } from ${mod('packages/express/dist/index.js')};
const app = express();
app.use(branchline());
app.get('/who', (req, res) => res.json({ served: 'baseline' }));
app.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('ready'));
`;
// The sandbox's version of payments.
const SANDBOX = `
import { createServer } from 'node:http';
createServer((req, res) => res.end(JSON.stringify({ served: 'sandbox' }))).listen(Number(process.env.PORT), '127.0.0.1', () => console.log('ready'));
`;

function cli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('HTTP end to end through the registry', () => {
  it('a sandbox created with the CLI gets its traffic, and killing and restarting the registry mid-traffic fails no request', async () => {
    const baselineJs = join(dir, 'baseline.mjs');
    const sandboxJs = join(dir, 'sandbox.mjs');
    writeFileSync(baselineJs, BASELINE);
    writeFileSync(sandboxJs, SANDBOX);
    const [regPort, basePort, sbPort] = await Promise.all([freePort(), freePort(), freePort()]);
    const registryUrl = `http://127.0.0.1:${regPort}`;
    const db = join(dir, 'registry.db');
    const startRegistry = async () => {
      const { proc } = await startRegistryProcess({ port: regPort, args: ['--store', db] });
      procs.push(proc);
      return proc;
    };
    let registry = await startRegistry();
    const baseline = startNode(baselineJs, [], {
      PORT: String(basePort),
      BRANCHLINE_SERVICE: 'payments',
      BRANCHLINE_REGISTRY: registryUrl,
    });
    const sandbox = startNode(sandboxJs, [], { PORT: String(sbPort) });
    procs.push(baseline, sandbox);
    await Promise.all([baseline.waitFor('ready'), sandbox.waitFor('ready')]);

    const served: string[] = [];
    const failures: string[] = [];
    let running = true;
    const loop = async () => {
      while (running) {
        try {
          const res = await fetch(`http://127.0.0.1:${basePort}/who`, {
            headers: { baggage: 'branchline=pr-9' },
          });
          if (res.status !== 200) failures.push(`status ${res.status}: ${await res.text()}`);
          else served.push(((await res.json()) as Json).served);
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const loops = [loop(), loop()];
    const waitServed = async (who: string, what: string) => {
      const from = served.length;
      const deadline = Date.now() + 20_000;
      while (!served.slice(from).includes(who)) {
        if (Date.now() > deadline)
          throw new Error(`timed out waiting for ${what}; failures: ${failures.join('; ')}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return served.length;
    };
    try {
      await waitServed('baseline', 'baseline traffic');
      const env = { BRANCHLINE_REGISTRY: registryUrl };
      const created = await cli(
        [
          'sandbox',
          'create',
          'pr-9',
          '--service',
          `payments=http://127.0.0.1:${sbPort}`,
          '--ttl',
          '1h',
          '--wait',
        ],
        env,
      );
      expect(created.code).toBe(0);
      expect(created.stdout).toContain('baggage: branchline=pr-9');
      await waitServed('sandbox', 'the sandbox to receive its traffic');
      // The baseline reports what it forwarded (core's activity reporter, every 5 s); the
      // dashboard shows it from GET /v1/activity.
      const activityDeadline = Date.now() + 20_000;
      let forwarded = 0;
      while (forwarded === 0) {
        if (Date.now() > activityDeadline)
          throw new Error('no forwarded activity reported for pr-9 within 20 s');
        await new Promise((r) => setTimeout(r, 250));
        const activity = (await (await fetch(`${registryUrl}/v1/activity`)).json()) as Json;
        forwarded = activity.sandboxes?.['pr-9']?.services?.payments?.forwarded ?? 0;
      }
      expect(forwarded).toBeGreaterThan(0);

      await registry.stop('SIGKILL');
      const outageFrom = served.length;
      await new Promise((r) => setTimeout(r, 1500));
      const duringOutage = served.slice(outageFrom);
      expect(duringOutage.length).toBeGreaterThan(0);
      expect(new Set(duringOutage)).toEqual(new Set(['sandbox']));

      registry = await startRegistry();
      const deleted = await cli(['sandbox', 'delete', 'pr-9'], env);
      expect(deleted.code).toBe(0);
      await waitServed('baseline', 'traffic to return to baseline after the delete');
    } finally {
      running = false;
      await Promise.all(loops);
    }
    expect(failures).toEqual([]);
    expect(served.length).toBeGreaterThan(20);
  }, 120_000);
});
