// The per-pull-request GitHub Action (deploy/github/sandbox/action.yml) as the example workflow
// (docs/examples/github-sandbox.yml) uses it: its shell step runs here with the inputs and the
// variables GitHub would give it, against a registry process that requires a token.
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: spec files and workflows spell ${VAR} and ${{ … }}
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { RunningProcess } from './helpers/processes.js';

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const dir = mkdtempSync(join(tmpdir(), 'branchline-action-'));
const TOKEN = 'ci-write-token-for-tests';
let registry: RunningProcess;
let url: string;

// Workflow and action files are untyped YAML documents.
// biome-ignore lint/suspicious/noExplicitAny: YAML documents under test
type Doc = any;
const action: Doc = parse(readFileSync(join(root, 'deploy/github/sandbox/action.yml'), 'utf8'));
const workflow: Doc = parse(readFileSync(join(root, 'docs/examples/github-sandbox.yml'), 'utf8'));

/** Evaluates the `${{ a.b.c }}` expressions of a value the way GitHub does for plain property paths. */
function evaluate(text: string, context: Record<string, unknown>): string {
  return String(text).replace(/\$\{\{\s*([\w.-]+)\s*\}\}/g, (_m, path: string) => {
    let v: unknown = context;
    for (const part of path.split('.')) v = (v as Record<string, unknown> | undefined)?.[part];
    if (v === undefined) throw new Error(`no value for \${{ ${path} }} in this test's context`);
    return String(v);
  });
}

/** Runs the action's `run:` steps as GitHub's runner would (bash -eo pipefail, env from the step). */
async function runAction(
  withInputs: Record<string, string>,
  github: Record<string, unknown>,
  callerEnv: Record<string, string>,
  workspace: string,
): Promise<{ code: number; output: string; outputs: Record<string, string>; summary: string }> {
  const inputs: Record<string, string> = {};
  for (const [name, def] of Object.entries(action.inputs as Record<string, { default?: string }>))
    inputs[name] = withInputs[name] ?? evaluate(def.default ?? '', { github });
  const outputFile = join(workspace, 'github-output');
  const summaryFile = join(workspace, 'step-summary');
  writeFileSync(outputFile, '');
  writeFileSync(summaryFile, '');
  let output = '';
  for (const step of action.runs.steps as Doc[]) {
    if (!step.run) continue;
    const env: Record<string, string> = {
      PATH: process.env.PATH!,
      HOME: process.env.HOME ?? dir,
      ...callerEnv,
      GITHUB_OUTPUT: outputFile,
      GITHUB_STEP_SUMMARY: summaryFile,
      RUNNER_TEMP: workspace,
      GITHUB_WORKSPACE: workspace,
    };
    for (const [k, v] of Object.entries(step.env ?? {})) env[k] = evaluate(String(v), { inputs, github });
    const r = await new Promise<{ code: number; out: string }>((done) =>
      execFile(
        'bash',
        ['--noprofile', '--norc', '-eo', 'pipefail', '-c', step.run],
        { cwd: workspace, env },
        (err, stdout, stderr) =>
          done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      ),
    );
    output += r.out;
    if (r.code !== 0) return { code: r.code, output, outputs: {}, summary: '' };
  }
  const outputs = Object.fromEntries(
    readFileSync(outputFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  return { code: 0, output, outputs, summary: readFileSync(summaryFile, 'utf8') };
}

/** The `with:` of the workflow's step that uses the action, in job `job`. */
function actionStep(job: string): { with: Record<string, string>; env?: Record<string, string> } {
  return (workflow.jobs[job].steps as Doc[]).find((s) => String(s.uses).includes('branchline-sandbox'));
}

beforeAll(async () => {
  ({ proc: registry, url } = await startRegistryProcess({
    args: ['--store', join(dir, 'action.db')],
    env: { BRANCHLINE_REGISTRY_TOKENS: `${TOKEN} read,write ci` },
  }));
});
afterAll(async () => {
  await registry?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the sandbox GitHub Action, run as the example workflow runs it', () => {
  it('on a push creates the sandbox and outputs the header; on close deletes it', async () => {
    const workspace = join(dir, 'repo');
    mkdirSync(join(workspace, '.branchline'), { recursive: true });
    // The spec of docs/ci.md's first step, with an endpoint instead of a Kubernetes fork.
    writeFileSync(
      join(workspace, '.branchline/sandbox.yaml'),
      [
        'name: pr-${PR_NUMBER}',
        'ttl: 3d',
        'labels:',
        '  pr: ${PR_NUMBER}',
        '  repo: ${GITHUB_REPOSITORY}',
        '  owner: ${GITHUB_ACTOR:-unknown}',
        'services:',
        '  orders:',
        '    http: http://orders-pr-${PR_NUMBER}.shop.svc.cluster.local:8080',
        '  image-check:',
        '    http: http://127.0.0.1:9/${IMAGE_TAG}',
        '',
      ].join('\n'),
    );
    const github = { event: { pull_request: { number: 77 } }, sha: 'abc123' };
    const context = { github, vars: { BRANCHLINE_REGISTRY: url }, secrets: { BRANCHLINE_TOKEN: TOKEN } };
    // What GitHub sets on every runner; the CLI comes from this checkout instead of npm.
    const runner = {
      GITHUB_REPOSITORY: 'acme/shop',
      GITHUB_ACTOR: 'ana',
      GITHUB_SHA: 'abc123',
    };
    const cli = `${process.execPath} ${BIN}`;

    const apply = actionStep('apply');
    expect(workflow.on.pull_request.types).toEqual(['opened', 'synchronize', 'reopened', 'closed']);
    expect(action.runs.steps[0].uses).toMatch(/^actions\/setup-node@/);
    const inputs = Object.fromEntries(Object.entries(apply.with).map(([k, v]) => [k, evaluate(v, context)]));
    const stepEnv = Object.fromEntries(
      Object.entries(apply.env ?? {}).map(([k, v]) => [k, evaluate(v, context)]),
    );
    const first = await runAction({ ...inputs, command: cli }, github, { ...runner, ...stepEnv }, workspace);
    expect(first.output).not.toContain('branchline:');
    expect(first.code).toBe(0);
    expect(first.outputs).toEqual({
      name: 'pr-77',
      key: 'pr-77',
      header: 'baggage: branchline=pr-77',
      baggage: 'branchline=pr-77',
    });
    expect(first.summary).toContain('baggage: branchline=pr-77');
    const headers = { authorization: `Bearer ${TOKEN}` };
    const s = (await (await fetch(`${url}/v1/sandboxes/pr-77`, { headers })).json()) as Doc;
    expect(s.labels).toEqual({ pr: '77', repo: 'acme/shop', owner: 'ana' });
    expect(s.overrides['image-check']).toEqual({ http: 'http://127.0.0.1:9/abc123' });

    // A second push (synchronize): the same sandbox, updated.
    const again = await runAction(
      { ...inputs, command: cli },
      { ...github, sha: 'def456' },
      { ...runner, IMAGE_TAG: 'def456' },
      workspace,
    );
    expect(again.code).toBe(0);
    expect(again.output).toContain('sandbox pr-77: updated');
    const s2 = (await (await fetch(`${url}/v1/sandboxes/pr-77`, { headers })).json()) as Doc;
    expect(s2.overrides['image-check']).toEqual({ http: 'http://127.0.0.1:9/def456' });

    // Without the token the registry refuses, and the step fails.
    const denied = await runAction(
      { ...inputs, token: '', command: cli },
      github,
      { ...runner, ...stepEnv },
      workspace,
    );
    expect(denied.code).toBe(4);

    // Closed: the delete job, twice (a re-run finds nothing and still succeeds).
    const del = actionStep('delete');
    expect(workflow.jobs.delete.if).toContain("'closed'");
    const delInputs = Object.fromEntries(Object.entries(del.with).map(([k, v]) => [k, evaluate(v, context)]));
    for (const expected of ['sandbox pr-77 deleted', 'no sandbox named pr-77; nothing to delete']) {
      // The image tag is gone by then; delete needs only the name.
      const r = await runAction({ ...delInputs, command: cli }, github, runner, workspace);
      expect(r.code).toBe(0);
      expect(r.output).toContain(expected);
    }
    expect((await fetch(`${url}/v1/sandboxes/pr-77`, { headers })).status).toBe(404);
  }, 120_000);
});
