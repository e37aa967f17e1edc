// biome-ignore-all lint/suspicious/noTemplateCurlyInString: templates spell ${PR} and friends
// `branchline registry --github-sandbox-template`: a real registry process creates a pull
// request's sandbox from signed GitHub deliveries, refreshes it on a push and refuses events the
// template cannot name.
import { execFile } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startRegistryProcess } from '@branchline/test-utils/registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningProcess } from './helpers/processes.js';

const root = resolve(import.meta.dirname, '..');
const BIN = join(root, 'packages/cli/dist/bin.js');
const SECRET = 'template-webhook-secret-42';
const dir = mkdtempSync(join(tmpdir(), 'branchline-webhook-template-'));
let registry: RunningProcess;
let url: string;
// biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
type Json = any;

function event(action: string, pr: number, sha: string, branch = 'feature-x'): string {
  return JSON.stringify({
    action,
    number: pr,
    pull_request: {
      number: pr,
      head: { sha, ref: branch },
      closed_at: new Date(Date.now() + 60_000).toISOString(),
    },
    repository: { full_name: 'acme/shop', name: 'shop', owner: { login: 'acme' } },
  });
}

async function deliver(body: string, delivery = randomUUID()): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${url}/v1/webhooks/github`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'pull_request',
      'x-github-delivery': delivery,
      'x-hub-signature-256': `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`,
    },
    body,
  });
  return { status: res.status, json: await res.json() };
}

async function sandboxes(): Promise<Json[]> {
  return ((await (await fetch(`${url}/v1/sandboxes`)).json()) as Json).sandboxes;
}

beforeAll(async () => {
  const template = join(dir, 'pr-sandbox.yaml');
  writeFileSync(
    template,
    [
      '# the sandbox of one pull request',
      'name: pr-${PR}',
      'labels:',
      '  branch: ${BRANCH}',
      'overrides:',
      '  orders:',
      '    http: http://orders-pr-${PR}.shop.svc.cluster.local:8080',
      'ttl: 6h',
      '',
    ].join('\n'),
  );
  ({ proc: registry, url } = await startRegistryProcess({
    args: ['--store', join(dir, 'registry.db'), '--github-sandbox-template', template],
    env: { BRANCHLINE_GITHUB_WEBHOOK_SECRET: SECRET },
  }));
});
afterAll(async () => {
  await registry?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('branchline registry --github-sandbox-template', () => {
  it('opened creates the sandbox once, a push refreshes it, the close deletes it', async () => {
    const sha1 = '1'.repeat(40);
    const sha2 = '2'.repeat(40);
    const opened = await deliver(event('opened', 42, sha1));
    expect(opened.status).toBe(201);
    expect(opened.json).toMatchObject({ created: true, sandbox: 'pr-42' });
    // The same event again under a new delivery id (GitHub's redelivery, a second hook).
    const again = await deliver(event('opened', 42, sha1));
    expect(again.status).toBe(200);
    expect(again.json.created).toBe(false);
    let list = await sandboxes();
    expect(list.map((s) => s.name)).toEqual(['pr-42']);
    const before = list[0];
    expect(before.labels).toEqual({ branch: 'feature-x', pr: '42', repo: 'acme/shop', sha: sha1 });
    expect(before.overrides.orders.http).toBe('http://orders-pr-42.shop.svc.cluster.local:8080');
    await new Promise((r) => setTimeout(r, 20));
    const sync = await deliver(event('synchronize', 42, sha2));
    expect(sync.status).toBe(200);
    expect(sync.json.refreshed).toBe(true);
    list = await sandboxes();
    expect(list).toHaveLength(1);
    expect(list[0].key).toBe(before.key);
    expect(list[0].createdAt).toBe(before.createdAt);
    expect(list[0].labels.sha).toBe(sha2);
    expect(list[0].expiresAt).toBeGreaterThan(before.expiresAt);
    const closed = await deliver(event('closed', 42, sha2));
    expect(closed.json.deleted).toEqual(['pr-42']);
    expect(await sandboxes()).toEqual([]);
  });

  it('an event whose values do not fit is 422, and the registry logs why', async () => {
    const r = await deliver(event('opened', 43, 'z'.repeat(40)));
    expect(r.status).toBe(400);
    expect(r.json.message).toContain('pull_request.head.sha');
    const tooLong = `f${'-x'.repeat(140)}`;
    const bad = await deliver(event('opened', 44, '3'.repeat(40), tooLong));
    expect(bad.status).toBe(422);
    expect(bad.json.error).toBe('template_invalid');
    expect(bad.json.message).toContain('labels.branch');
    await registry.waitFor(/sandbox template does not fit this pull request[^\n]*"pr":44/);
    expect(await sandboxes()).toEqual([]);
  });

  it('refuses to start with a template that names an unknown variable (exit 2, the field named)', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ name: 'pr-${PULL}' }));
    const r = await new Promise<{ code: number; stderr: string }>((done) =>
      execFile(
        process.execPath,
        [BIN, 'registry', '--port', '0', '--store', ':memory:', '--github-sandbox-template', bad],
        (err, _out, stderr) => done({ code: (err as { code?: number } | null)?.code ?? 0, stderr }),
      ),
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('bad.json');
    expect(r.stderr).toContain('${PULL} is not a template variable');
  });
});
