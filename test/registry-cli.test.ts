import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Socket, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeBinary } from './helpers/node-runtime.js';
import type { RunningProcess } from './helpers/processes.js';

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-cli-'));
let registry: RunningProcess;
let url: string;

type Result = { code: number; stdout: string; stderr: string };

/** Runs `file [...args]` and collects its exit code and output. */
function run(file: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((done) => {
    execFile(
      file,
      args,
      { env: { ...process.env, BRANCHLINE_REGISTRY: url, ...env } },
      (err, stdout, stderr) =>
        done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function cli(...args: string[]): Promise<Result> {
  return run(process.execPath, [BIN, ...args]);
}

/** A server on loopback port 0; resolves with its URL. */
async function listening(server: Server | TcpServer): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

beforeAll(async () => {
  const r = await startRegistryProcess({
    args: ['--store', join(dir, 'cli.db')],
    env: { BRANCHLINE_LOG_LEVEL: undefined },
  });
  url = r.url;
  registry = r.proc;
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

describe('the branchline command in a fresh checkout', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'packages/cli/package.json'), 'utf8')) as {
    version: string;
  };

  it('npm links node_modules/.bin/branchline, and it prints the version', async () => {
    // The link npm ci makes is what `npx branchline` runs; its shebang finds node on PATH.
    const r = await run(join(root, 'node_modules/.bin/branchline'), ['--version'], {
      PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH}`,
    });
    expect(r).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  });

  it('says to build first when the CLI is not built, instead of a module-not-found trace', async () => {
    const unbuilt = mkdtempSync(join(tmpdir(), 'branchline-unbuilt-'));
    try {
      mkdirSync(join(unbuilt, 'bin'));
      copyFileSync(join(root, 'packages/cli/bin/branchline.js'), join(unbuilt, 'bin/branchline.js'));
      const r = await run(process.execPath, [join(unbuilt, 'bin/branchline.js'), '--version']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('the CLI is not built yet');
      expect(r.stderr).toContain('npm run build');
      expect(r.stderr).not.toContain('ERR_MODULE_NOT_FOUND');
    } finally {
      rmSync(unbuilt, { recursive: true, force: true });
    }
  });

  it('on Node.js 20 says which versions it needs and exits 1, instead of crashing on node:sqlite', async () => {
    const node20 = nodeBinary(20, { onPath: true });
    for (const args of [['--help'], ['sandbox', 'list']]) {
      const r = await run(node20, [join(root, 'node_modules/.bin/branchline'), ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^branchline needs Node\.js 22\.19 .* 24 .*; this is Node\.js v20\./);
      expect(r.stderr).not.toContain('ERR_UNKNOWN_BUILTIN_MODULE');
    }
  }, 300_000);
});

describe('branchline CLI against something that is not a working registry', () => {
  let silent: TcpServer;
  let held: Socket[];
  let web: Server;
  let silentUrl: string;
  let webUrl: string;
  beforeAll(async () => {
    held = [];
    // Accepts connections and never answers, like a registry stuck behind a full backlog.
    silent = createTcpServer((socket) => held.push(socket));
    silentUrl = await listening(silent);
    web = createHttpServer((req, res) => {
      const html = `<!doctype html><html><head><title>Welcome to nginx!</title></head><body>${'<p>filler</p>'.repeat(200)}</body></html>`;
      res.writeHead(req.url?.startsWith('/v1/sandboxes') && req.method === 'GET' ? 200 : 404, {
        'content-type': 'text/html',
      });
      res.end(html);
    });
    webUrl = await listening(web);
  });
  afterAll(() => {
    for (const s of held) s.destroy();
    silent?.close();
    web?.closeAllConnections();
    web?.close();
  });

  it('gives up after --timeout with exit 8 when the registry accepts connections and never answers', async () => {
    const r = await cli('sandbox', 'list', '--registry', silentUrl, '--timeout', '300ms');
    expect(r.code).toBe(8);
    expect(r.stderr).toContain(`the registry at ${silentUrl} did not answer GET /v1/sandboxes within 300ms`);
  });

  it('takes the timeout from BRANCHLINE_TIMEOUT, also for the start of watch and for delete', async () => {
    for (const args of [['watch'], ['sandbox', 'delete', 'pr-1']]) {
      const r = await run(process.execPath, [BIN, ...args], {
        BRANCHLINE_REGISTRY: silentUrl,
        BRANCHLINE_TIMEOUT: '300ms',
      });
      expect(r.code).toBe(8);
      expect(r.stderr).toContain('did not answer');
    }
  });

  it('refuses a --timeout that is not a duration, with exit 2', async () => {
    const r = await cli('sandbox', 'list', '--timeout', 'soon');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--timeout "soon" is not a duration');
  });

  it('says a web page is not a Branchline registry and names the URL, without dumping the HTML', async () => {
    for (const args of [['sandbox', 'list'], ['sandbox', 'get', 'x'], ['rules'], ['watch']]) {
      const r = await cli(...args, '--registry', webUrl);
      expect(r.code).toBe(5);
      expect(r.stderr).toContain(`${webUrl} does not answer like a Branchline registry`);
      expect(r.stderr).toContain('text/html');
      expect(r.stderr).toContain('"Welcome to nginx!"');
      expect(r.stderr).not.toContain('<');
    }
  });
});

describe('branchline CLI in CI scripts', () => {
  const put = (name: string, body: unknown) =>
    fetch(`${url}/v1/sandboxes/${name}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('re-running sandbox create without --label keeps the labels that tie it to its pull request', async () => {
    const first = await cli(
      'sandbox',
      'create',
      'ci-7',
      '-s',
      'payments=http://127.0.0.1:4700',
      '-l',
      'pr=7',
      '-l',
      'repo=acme/shop',
    );
    expect(first.code).toBe(0);
    const again = await cli('sandbox', 'create', 'ci-7', '-s', 'payments=http://127.0.0.1:4701');
    expect(again.code).toBe(0);
    const labels = async () => JSON.parse((await cli('sandbox', 'get', 'ci-7', '--json')).stdout).labels;
    expect(await labels()).toEqual({ pr: '7', repo: 'acme/shop' });
    expect((await cli('rules', '--sandbox', 'ci-7')).stdout).toContain('http://127.0.0.1:4701');
    // New labels are added (a given value wins); --remove-label takes one away.
    await cli(
      'sandbox',
      'create',
      'ci-7',
      '-s',
      'payments=http://127.0.0.1:4701',
      '-l',
      'team=t',
      '-l',
      'pr=8',
    );
    expect(await labels()).toEqual({ pr: '8', repo: 'acme/shop', team: 't' });
    await cli('sandbox', 'create', 'ci-7', '-s', 'payments=http://127.0.0.1:4701', '--remove-label', 'team');
    expect(await labels()).toEqual({ pr: '8', repo: 'acme/shop' });
  });

  it('delete --ignore-not-found exits 0 when there is nothing to delete, but not when the URL is wrong', async () => {
    expect((await cli('sandbox', 'delete', 'never-was')).code).toBe(3);
    const sandbox = await cli('sandbox', 'delete', 'never-was', '--ignore-not-found');
    expect(sandbox).toMatchObject({ code: 0, stdout: 'no sandbox named never-was; nothing to delete\n' });
    const json = await cli('sandbox', 'delete', 'never-was', '--ignore-not-found', '--json');
    expect(JSON.parse(json.stdout)).toEqual({ deleted: null, failed: [] });
    expect((await cli('group', 'delete', 'never-was', '--ignore-not-found')).code).toBe(0);
    // A registry URL with a wrong path answers 404 for the route, not for the sandbox.
    const wrong = await cli('sandbox', 'delete', 'x', '--ignore-not-found', '--registry', `${url}/api`);
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toContain('no route');
  });

  it('shows control characters in labels escaped in list and get, so they cannot rewrite the terminal', async () => {
    const evil = 'x\u001b[2J\u001b[31mred\nfake-row\u202e';
    expect(
      (
        await put('ctl-1', {
          overrides: { payments: { http: 'http://127.0.0.1:4800' } },
          labels: { note: evil },
        })
      ).status,
    ).toBe(201);
    const list = await cli('sandbox', 'list', '--label', `note=${evil}`);
    expect(list.code).toBe(0);
    expect(list.stdout).not.toContain('\u001b');
    expect(list.stdout).not.toContain('\u202e');
    expect(list.stdout.trimEnd().split('\n')).toHaveLength(2);
    expect(list.stdout).toContain('note=x\\x1b[2J\\x1b[31mred\\nfake-row\\u202e');
    const get = await cli('sandbox', 'get', 'ctl-1');
    expect(get.stdout).toContain('labels:   note=x\\x1b[2J');
    expect(get.stdout).not.toContain('\u001b');
    // --json is for programs: the exact value, JSON-escaped.
    expect(JSON.parse((await cli('sandbox', 'get', 'ctl-1', '--json')).stdout).labels.note).toBe(evil);
  });
});
