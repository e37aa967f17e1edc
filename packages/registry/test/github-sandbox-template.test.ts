// biome-ignore-all lint/suspicious/noTemplateCurlyInString: templates spell ${PR} and friends
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createRegistryServer, type GithubSandboxTemplate } from '../src/index.js';
import { send, sendJson, startRegistry, stopRegistries } from './helpers.js';

const SECRET = 'webhook-secret-0123456789';
const SHA1 = 'a'.repeat(40);
const SHA2 = 'b'.repeat(40);
const dirs: string[] = [];
afterAll(async () => {
  await stopRegistries();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const sign = (body: string) => `sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`;

function event(action: string, pr: number, o: { sha?: string; branch?: string } = {}): string {
  return JSON.stringify({
    action,
    number: pr,
    pull_request: { number: pr, head: { sha: o.sha ?? SHA1, ref: o.branch ?? 'feature-x' } },
    repository: { full_name: 'acme/shop', name: 'shop', owner: { login: 'acme' } },
  });
}

function deliver(url: string, body: string, delivery = randomUUID()) {
  return send(url, 'POST', '/v1/webhooks/github', {
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'pull_request',
      'x-github-delivery': delivery,
      'x-hub-signature-256': sign(body),
    },
    body,
  });
}

const TEMPLATE: GithubSandboxTemplate = {
  name: 'pr-${PR}',
  labels: { team: 'shop', branch: '${BRANCH}' },
  overrides: { orders: { http: 'http://orders-pr-${PR}.shop.svc:8080' } },
  ttl: '2h',
};

async function live(url: string) {
  return (await send(url, 'GET', '/v1/sandboxes')).json.sandboxes as {
    name: string;
    key: string;
    labels: Record<string, string>;
    expiresAt: number;
    overrides: Record<string, { http: string }>;
  }[];
}

describe('GitHub webhook with a sandbox template', () => {
  it('without a template, opened and synchronize stay ignored', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET });
    for (const action of ['opened', 'reopened', 'synchronize']) {
      const r = await deliver(url, event(action, 4));
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ ignored: true, action });
    }
    expect(await live(url)).toEqual([]);
  });

  it('opened creates the sandbox once (labels pr, repo, sha); a second delivery of it creates nothing', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: TEMPLATE });
    const first = await deliver(url, event('opened', 42));
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({ created: true, sandbox: 'pr-42', pr: 42, repo: 'acme/shop' });
    expect(first.json.sandboxToken).toBeUndefined();
    const [s] = await live(url);
    expect(s!.name).toBe('pr-42');
    expect(s!.labels).toEqual({ team: 'shop', branch: 'feature-x', pr: '42', repo: 'acme/shop', sha: SHA1 });
    expect(s!.overrides.orders!.http).toBe('http://orders-pr-42.shop.svc:8080');
    const revision = (await send(url, 'GET', '/v1/sandboxes')).json.revision;
    // GitHub redelivers with a new id, or sends opened and reopened close together.
    const again = await deliver(url, event('opened', 42, { sha: SHA2 }));
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ created: false, sandbox: 'pr-42', key: s!.key });
    const reopened = await deliver(url, event('reopened', 42));
    expect(reopened.json.created).toBe(false);
    const after = await live(url);
    expect(after.map((x) => x.name)).toEqual(['pr-42']);
    expect(after[0]!.key).toBe(s!.key);
    // Left as it was: no write at all, so not even its sha label changed.
    expect(after[0]!.labels.sha).toBe(SHA1);
    expect((await send(url, 'GET', '/v1/sandboxes')).json.revision).toBe(revision);
  });

  it('many deliveries of one opened event at once create one sandbox', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: TEMPLATE });
    const answers = await Promise.all(Array.from({ length: 8 }, () => deliver(url, event('opened', 8))));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201]);
    expect((await live(url)).map((x) => x.name)).toEqual(['pr-8']);
  });

  it('synchronize renews the TTL and the sha label, keeping the sandbox; it does not create one', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: TEMPLATE });
    const none = await deliver(url, event('synchronize', 5, { sha: SHA2 }));
    expect(none.status).toBe(200);
    expect(none.json).toMatchObject({ refreshed: false, sandbox: 'pr-5' });
    expect(await live(url)).toEqual([]);
    await deliver(url, event('opened', 5));
    const [before] = await live(url);
    await new Promise((r) => setTimeout(r, 30));
    const sync = await deliver(url, event('synchronize', 5, { sha: SHA2 }));
    expect(sync.status).toBe(200);
    expect(sync.json).toMatchObject({ refreshed: true, sandbox: 'pr-5', sha: SHA2 });
    const [after] = await live(url);
    expect(after!.key).toBe(before!.key);
    expect(after!.labels.sha).toBe(SHA2);
    expect(after!.labels.team).toBe('shop');
    expect(after!.expiresAt).toBeGreaterThan(before!.expiresAt);
    expect(after!.expiresAt - Date.now()).toBeGreaterThan(2 * 3_600_000 - 60_000);
  });

  it('synchronize leaves alone a sandbox of that name that belongs to another pull request', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: TEMPLATE });
    await sendJson(url, 'PUT', '/v1/sandboxes/pr-6', { labels: { pr: '99' } });
    const r = await deliver(url, event('synchronize', 6, { sha: SHA2 }));
    expect(r.json.refreshed).toBe(false);
    expect((await live(url))[0]!.labels).toEqual({ pr: '99' });
  });

  it('a branch that does not fit the sandbox name gets 422 with the reason, logged, and no sandbox', async () => {
    const { url, logs } = await startRegistry({
      githubWebhookSecret: SECRET,
      githubSandboxTemplate: { name: 'pr-${BRANCH}' },
    });
    const r = await deliver(url, event('opened', 3, { branch: 'Feature/Login' }));
    expect(r.status).toBe(422);
    expect(r.json.error).toBe('template_invalid');
    expect(r.json.message).toContain('"pr-Feature/Login"');
    expect(r.json.message).toContain('BRANCH="Feature/Login"');
    expect(r.json.message).toContain('lowercase letters');
    const warn = logs.find((l) => l.level === 'warn' && l.msg.includes('sandbox template'));
    expect(warn?.fields).toMatchObject({ pr: 3, repo: 'acme/shop', action: 'opened' });
    expect(String(warn?.fields?.reason)).toContain('pr-Feature/Login');
    expect(await live(url)).toEqual([]);
    // A branch that fits works with the same template.
    expect((await deliver(url, event('opened', 3, { branch: 'login' }))).status).toBe(201);
    expect((await live(url)).map((s) => s.name)).toEqual(['pr-login']);
  });

  it('${BRANCH_SLUG} turns any branch into a valid sandbox name and key; ${BRANCH} stays as it was', async () => {
    const { url } = await startRegistry({
      githubWebhookSecret: SECRET,
      githubSandboxTemplate: {
        name: '${BRANCH_SLUG}',
        key: '${BRANCH_SLUG}',
        labels: { branch: '${BRANCH}' },
      },
    });
    const long = `${'a'.repeat(62)}/b`; // 64 characters once slugged: the cut leaves a '-' to trim
    const cases: [branch: string, pr: number, name: string][] = [
      ['feature/Foo_bar', 21, 'feature-foo-bar'],
      ['--Release//2024__Q1--', 22, 'release-2024-q1'],
      ['fix.Ünïcode-name', 23, 'fix-n-code-name'],
      [long, 24, 'a'.repeat(62)],
      ['___', 25, 'pr-25'],
      ['日本', 26, 'pr-26'],
    ];
    for (const [branch, pr, name] of cases) {
      const r = await deliver(url, event('opened', pr, { branch }));
      expect(r.status, `${branch}: ${JSON.stringify(r.json)}`).toBe(201);
      expect(r.json).toMatchObject({ created: true, sandbox: name, key: name });
    }
    const byName = new Map((await live(url)).map((s) => [s.name, s]));
    for (const [branch, , name] of cases) {
      expect(byName.get(name)?.key).toBe(name);
      expect(byName.get(name)?.labels.branch).toBe(branch);
    }
    expect(byName.size).toBe(cases.length);
  });

  it('a template value the create body refuses (an endpoint URL) is 422, and the delivery can be redelivered', async () => {
    const { url } = await startRegistry({
      githubWebhookSecret: SECRET,
      githubSandboxTemplate: { name: 'pr-${PR}', overrides: { orders: { http: 'http://${BRANCH}:8080' } } },
    });
    const id = randomUUID();
    const r = await deliver(url, event('opened', 11, { branch: 'a b' }), id);
    expect(r.status).toBe(422);
    expect(r.json.message).toContain('overrides.orders.http');
    expect(await live(url)).toEqual([]);
    const again = await deliver(url, event('opened', 11, { branch: 'a b' }), id);
    expect(again.status).toBe(422);
  });

  it('the close of the pull request deletes the sandbox the template created', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: TEMPLATE });
    await deliver(url, event('opened', 12));
    const closed = JSON.stringify({
      action: 'closed',
      number: 12,
      pull_request: { number: 12, merged: true, closed_at: new Date(Date.now() + 60_000).toISOString() },
      repository: { full_name: 'acme/shop' },
    });
    const r = await deliver(url, closed);
    expect(r.json.deleted).toEqual(['pr-12']);
  });

  it('an opened event without head.sha is 400 naming the field', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: TEMPLATE });
    const body = JSON.parse(event('opened', 2));
    delete body.pull_request.head.sha;
    const r = await deliver(url, JSON.stringify(body));
    expect(r.status).toBe(400);
    expect(r.json.message).toContain('pull_request.head.sha');
  });

  it('reads a YAML template file and refuses a bad one at start-up, naming the field', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'branchline-template-'));
    dirs.push(dir);
    const good = join(dir, 'sandbox.yaml');
    await writeFile(good, 'name: ${OWNER}-${REPO}-${PR}\nlabels:\n  commit: "${SHA}"\nttl: 3h\n');
    const { url } = await startRegistry({ githubWebhookSecret: SECRET, githubSandboxTemplate: good });
    expect((await deliver(url, event('opened', 7))).status).toBe(201);
    const [s] = await live(url);
    expect(s!.name).toBe('acme-shop-7');
    expect(s!.labels.commit).toBe(SHA1);
    const make = (t: string | GithubSandboxTemplate) => () =>
      createRegistryServer({ store: ':memory:', githubSandboxTemplate: t });
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'name: pr-${PR}\nlabel: {a: b}\n');
    expect(make(bad)).toThrow(/bad\.yaml: label: not a field/);
    expect(make({ name: 'pr-${NUMBER}' })).toThrow(/\$\{NUMBER\} is not a template variable/);
    expect(make({ name: 'pr-${PR}', ttl: 'forever' })).toThrow(/ttl: must be a duration/);
    expect(make({ name: 'PR-${PR}' })).toThrow(/name: "PR-1"/);
    expect(make(join(dir, 'missing.yaml'))).toThrow(/no such file/);
  });
});
