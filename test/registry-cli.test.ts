import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-cli-'));
let registry: RunningProcess;
let url: string;

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, BRANCHLINE_REGISTRY: url } },
      (err, stdout, stderr) =>
        done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  registry = startNode(BIN, ['registry', '--port', String(port), '--store', join(dir, 'cli.db')]);
  await registry.waitFor('listening on', 30_000);
});
afterAll(async () => {
  await registry?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('branchline CLI against a running registry', () => {
  it('sandbox create prints the key and the header; --json gives the document; list/get/rules show it', async () => {
    const created = await cli(
      'sandbox',
      'create',
      'pr-5',
      '--service',
      'payments=http://127.0.0.1:4500',
      '--label',
      'pr=5',
      '--label',
      'team=t',
      '--ttl',
      '2h',
      '--key',
      'five',
    );
    expect(created.code).toBe(0);
    expect(created.stdout).toContain('baggage: branchline=five');
    const json = await cli(
      'sandbox',
      'create',
      'pr-6',
      '-s',
      'payments=http://127.0.0.1:4600',
      '-l',
      'pr=6',
      '-l',
      'team=t',
      '--json',
    );
    expect(JSON.parse(json.stdout)).toMatchObject({
      name: 'pr-6',
      key: 'pr-6',
      header: 'baggage: branchline=pr-6',
    });
    const list = JSON.parse((await cli('sandbox', 'list', '--json')).stdout);
    expect(list.map((s: { name: string }) => s.name)).toEqual(['pr-5', 'pr-6']);
    const table = (await cli('sandbox', 'list', '--label', 'pr=5')).stdout;
    expect(table.split('\n')[0]).toMatch(/^NAME\s+KEY\s+SERVICES\s+STATUS\s+EXPIRES\s+LABELS$/);
    expect(table).toContain('payments→http://127.0.0.1:4500');
    expect(table).not.toContain('pr-6');
    expect((await cli('sandbox', 'get', 'pr-5')).stdout).toContain('key:      five');
    const rules = (await cli('rules', '--service', 'payments')).stdout;
    expect(rules).toMatch(/payments\s+five\s+pr-5\s+http:\/\/127\.0\.0\.1:4500/);
  }, 120_000);

  it('group create reports the conflict winner; group list and delete work', async () => {
    const g = await cli('group', 'create', 'both', '--match', 'team=t', '--match', 'pr=5', '--any');
    expect(g.code).toBe(0);
    expect(g.stdout).toContain('conflict on payments: pr-5 wins (older) over pr-6');
    expect((await cli('group', 'list')).stdout).toMatch(/both\s+both\s+any:team=t,pr=5\s+pr-5,pr-6\s+1/);
    expect((await cli('group', 'delete', 'both')).code).toBe(0);
    expect((await cli('group', 'delete', 'both')).code).toBe(3);
  }, 120_000);

  it('exit codes: 3 not found, 2 invalid input, 6 key taken, 5 unreachable, 0 for --help', async () => {
    const missing = await cli('sandbox', 'get', 'nope');
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('no sandbox named "nope"');
    const invalid = await cli('sandbox', 'create', 'x', '--service', 'payments=not-a-url');
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain('overrides.payments.http');
    expect((await cli('sandbox', 'create', 'other', '--key', 'five')).code).toBe(6);
    expect((await cli('sandbox', 'list', '--registry', 'http://127.0.0.1:9')).code).toBe(5);
    const help = await cli('sandbox', 'create', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--service <svc=url>');
  }, 120_000);
});
