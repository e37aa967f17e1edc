// docs/ci.md, run: its shell blocks execute as written (the registry's example address replaced
// by this test's), with `branchline` on PATH, a registry started by the page's own command line
// with the kubernetes-fork plugin, and Kubernetes being the hook's in-memory stand-in behind a
// fake API server.
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createProgram } from '../packages/cli/src/program.js';
import { type FakeApiServer, serveFakeKubernetes } from '../packages/kubernetes/test/fake-apiserver.js';
import { FakeKubernetes, shopBaseline } from '../packages/kubernetes/test/fake-kubernetes.js';
import { codeBlocks, shellCommands } from './helpers/docs.js';
import { freePort, type RunningProcess, startNode } from './helpers/processes.js';

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const DOC = join(root, 'docs/ci.md');
const dir = mkdtempSync(join(tmpdir(), 'branchline-docs-ci-'));
const EXAMPLE_REGISTRY = 'http://registry.staging.example.com:7070';
let registry: RunningProcess | undefined;
let apiServer: FakeApiServer | undefined;

afterAll(async () => {
  await registry?.stop();
  await apiServer?.close();
  rmSync(dir, { recursive: true, force: true });
});

const blocks = codeBlocks(DOC);
const sh = blocks.filter((b) => b.lang === 'sh');

/** Runs a shell block as bash would, with `branchline` on PATH running this checkout's CLI. */
function bash(
  script: string,
  cwd: string,
  env: Record<string, string>,
): Promise<{ code: number; out: string }> {
  const bin = join(dir, 'bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'branchline'), `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
  chmodSync(join(bin, 'branchline'), 0o755);
  return new Promise((done) =>
    execFile(
      'bash',
      ['--noprofile', '--norc', '-eo', 'pipefail', '-c', script],
      { cwd, env: { ...process.env, ...env, PATH: `${bin}${delimiter}${process.env.PATH}` } },
      (err, stdout, stderr) =>
        done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
    ),
  );
}

describe('docs/ci.md', () => {
  it('uses only commands this test runs', () => {
    expect(sh).toHaveLength(3);
    const words = new Set(sh.flatMap((b) => shellCommands(b.text)).map((c) => c[0]));
    expect([...words].sort()).toEqual(['branchline', 'cp', 'echo', 'export', 'mkdir']);
  });

  it('from zero to a sandbox per pull request: registry, spec file, apply and delete by hand, the action', async () => {
    const repo = join(dir, 'shop');
    mkdirSync(join(repo, '.branchline'), { recursive: true });

    // Step 1: the tokens file and the registry, started with the page's command line.
    const [exports, tokens, start] = shellCommands(sh[0]!.text);
    expect(exports![0]).toBe('export');
    const env: Record<string, string> = Object.fromEntries(exports!.slice(1).map((a) => a.split('=', 2)));
    const tokenLine = sh[0]!.text.split('\n').find((l) => l.startsWith('echo'))!;
    expect(tokens![0]).toBe('echo');
    expect((await bash(tokenLine, repo, {})).code).toBe(0);
    expect(readFileSync(join(repo, 'tokens.txt'), 'utf8')).toMatch(/^ci-[0-9a-f]{48} read,write ci\n$/);

    const fake = new FakeKubernetes();
    const { deployment, service } = shopBaseline();
    deployment.spec!.template!.spec!.containers.splice(1); // the page's fork names no container
    fake.seed(deployment);
    fake.seed(service);
    apiServer = await serveFakeKubernetes(fake);
    expect(start!.slice(0, 2)).toEqual(['branchline', 'registry']);
    const port = await freePort();
    const args = start!.slice(1).map((a, i, all) => {
      const flag = all[i - 1];
      if (flag === '--port') return String(port);
      if (flag === '--host') return '127.0.0.1';
      // The page runs it in the folder holding tokens.txt; the test's process runs elsewhere.
      if (flag === '--store' || flag === '--token-file') return join(repo, a);
      return a;
    });
    expect(args).toContain('@branchline/kubernetes/plugin');
    registry = startNode(BIN, args, {
      ...env,
      KUBECONFIG: apiServer.kubeconfig(join(dir, 'kubeconfig'), 'sa-token'),
    });
    await registry.waitFor('listening on', 30_000);
    const url = `http://127.0.0.1:${port}`;

    // Step 2: the spec file, as on the page (and as docs/examples/sandbox.yaml).
    const spec = blocks.find((b) => b.lang === 'yaml' && b.text.includes('.branchline/sandbox.yaml'))!;
    expect(readFileSync(join(root, 'docs/examples/sandbox.yaml'), 'utf8')).toBe(spec.text);
    writeFileSync(join(repo, '.branchline/sandbox.yaml'), spec.text);

    // Step 3: apply (dry run, for real with --wait, dry run again) and delete, by hand.
    const byHand = await bash(sh[1]!.text.replace(EXAMPLE_REGISTRY, url), repo, {});
    expect(byHand.out).not.toContain('branchline:');
    expect(byHand.code).toBe(0);
    const out = byHand.out;
    expect(out).toContain('sandbox pr-42 would be created');
    expect(out).toContain('+ resource orders (kubernetes-fork)');
    expect(out).toContain('+ label pr=42');
    expect(out).toContain('sandbox pr-42: created (key pr-42)');
    expect(out).toContain('sandbox pr-42 is ready (key pr-42');
    expect(out).toContain('baggage: branchline=pr-42');
    expect(out).toContain('sandbox pr-42 is up to date');
    expect(out).toContain('sandbox pr-42 deleted');
    expect(fake.writes).toContain('create Deployment shop/orders-pr-42');
    expect(fake.names('Deployment')).toEqual(['shop/orders']);

    // Step 4: the action and the workflow copied into the repository.
    const copy = await bash(sh[2]!.text, repo, { BRANCHLINE_CHECKOUT: root });
    expect(copy.code).toBe(0);
    expect(readFileSync(join(repo, '.github/actions/branchline-sandbox/action.yml'), 'utf8')).toBe(
      readFileSync(join(root, 'deploy/github/sandbox/action.yml'), 'utf8'),
    );
    expect(readFileSync(join(repo, '.github/workflows/sandbox.yml'), 'utf8')).toContain(
      'uses: ./.github/actions/branchline-sandbox',
    );
  }, 120_000);

  it('links resolve and the exit codes it names are the ones docs/cli.md lists', () => {
    const text = readFileSync(DOC, 'utf8');
    for (const [, target] of text.matchAll(/\]\(([^)#]+)(#[^)]*)?\)/g)) {
      if (target!.startsWith('http')) continue;
      expect(() => readFileSync(join(root, 'docs', target!)), target).not.toThrow();
    }
    const cli = readFileSync(join(root, 'docs/cli.md'), 'utf8');
    for (const [, code] of text.matchAll(/\b([2-8]) (?:for|when)\b/g))
      expect(cli).toMatch(new RegExp(`\\| ${code}\\s+\\|`));
  });

  it('docs/cli.md documents every command the CLI has', () => {
    const cli = readFileSync(join(root, 'docs/cli.md'), 'utf8');
    const program = createProgram({ log: () => {}, err: () => {}, isTTY: false });
    const leaves = program.commands.flatMap((c) =>
      c.commands.length ? c.commands.map((s) => `${c.name()} ${s.name()}`) : [c.name()],
    );
    expect(leaves).toContain('sandbox apply');
    for (const command of leaves) expect(cli, command).toContain(`\`branchline ${command}`);
    expect(cli).toContain('branchline sandbox delete -f FILE');
  });
});
