import { createHmac, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { send, sendJson, startRegistry, stopRegistries } from './helpers.js';

const SECRET = 'webhook-secret-0123456789';
const dirs: string[] = [];
afterAll(async () => {
  await stopRegistries();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

const sign = (body: string, secret = SECRET) =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

function closed(pr: number, closedAt = new Date().toISOString()): string {
  return JSON.stringify({
    action: 'closed',
    number: pr,
    pull_request: { number: pr, merged: true, closed_at: closedAt },
    repository: { full_name: 'acme/shop' },
  });
}

function deliver(
  url: string,
  body: string,
  headers: Record<string, string | undefined> = {},
): ReturnType<typeof send> {
  const h: Record<string, string> = {
    'content-type': 'application/json',
    'x-github-event': 'pull_request',
    'x-github-delivery': randomUUID(),
    'x-hub-signature-256': sign(body),
  };
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) delete h[k];
    else h[k] = v;
  }
  return send(url, 'POST', '/v1/webhooks/github', { headers: h, body });
}

async function names(url: string): Promise<string[]> {
  return (await send(url, 'GET', '/v1/sandboxes')).json.sandboxes.map((s: { name: string }) => s.name);
}

describe('POST /v1/webhooks/github', () => {
  it('refuses a repeated X-GitHub-Delivery with 409, also after a restart, so a replay cannot delete a new sandbox', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'branchline-webhook-'));
    dirs.push(dir);
    const store = join(dir, 'registry.db');
    const first = await startRegistry({ store, githubWebhookSecret: SECRET });
    await sendJson(first.url, 'PUT', '/v1/sandboxes/pr-7', { labels: { pr: '7' } });
    // closed_at lies ahead, so only the delivery id can tell the replay from the original.
    const body = closed(7, new Date(Date.now() + 3_600_000).toISOString());
    const id = randomUUID();
    const ok = await deliver(first.url, body, { 'x-github-delivery': id });
    expect(ok.status).toBe(200);
    expect(ok.json.deleted).toEqual(['pr-7']);
    // The pull request is reopened and gets a new sandbox; the captured delivery is replayed.
    await sendJson(first.url, 'PUT', '/v1/sandboxes/pr-7', { labels: { pr: '7' } });
    const replay = await deliver(first.url, body, { 'x-github-delivery': id });
    expect(replay.status).toBe(409);
    expect(replay.json.error).toBe('duplicate_delivery');
    expect(replay.json.message).toContain(id);
    expect(await names(first.url)).toEqual(['pr-7']);
    await first.registry.close();
    const second = await startRegistry({ store, githubWebhookSecret: SECRET });
    expect((await deliver(second.url, body, { 'x-github-delivery': id })).status).toBe(409);
    expect(await names(second.url)).toEqual(['pr-7']);
  });

  it('a replayed close (its delivery id forgotten) deletes no sandbox created after the pull request closed', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET });
    await sendJson(url, 'PUT', '/v1/sandboxes/pr-9', { labels: { pr: '9' } });
    const r = await deliver(url, closed(9, new Date(Date.now() - 3_600_000).toISOString()));
    expect(r.status).toBe(200);
    expect(r.json.deleted).toEqual([]);
    expect(r.json.kept).toEqual(['pr-9']);
    expect(await names(url)).toEqual(['pr-9']);
  });

  it('refuses a delivery without an X-GitHub-Delivery id with 400', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET });
    const r = await deliver(url, closed(1), { 'x-github-delivery': undefined });
    expect(r.status).toBe(400);
    expect(r.json.message).toContain('X-GitHub-Delivery');
  });

  it('a signed body that is not a JSON object (null, a number, a list) or lacks a PR number gets 400', async () => {
    const { url, logs } = await startRegistry({ githubWebhookSecret: SECRET });
    await sendJson(url, 'PUT', '/v1/sandboxes/empty-pr', { labels: { pr: '' } });
    for (const body of ['null', '42', '[]', '"closed"', JSON.stringify({ action: 'closed' })]) {
      const r = await deliver(url, body);
      expect(r.status, body).toBe(400);
      expect(r.json.error).toBe('invalid_request');
    }
    expect(await names(url)).toEqual(['empty-pr']);
    expect(logs.filter((l) => l.level === 'error')).toEqual([]);
  });

  it('parses X-Hub-Signature-256 strictly: exactly "sha256=" and 64 hex digits', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET });
    await sendJson(url, 'PUT', '/v1/sandboxes/pr-3', { labels: { pr: '3' } });
    const body = closed(3, new Date(Date.now() + 60_000).toISOString());
    const good = sign(body);
    for (const sig of [
      `${good}zz`,
      `${good}0`,
      `${good};`,
      `sha256= ${good.slice(7)}`,
      `SHA256=${good.slice(7)}`,
      `sha256=${good.slice(7, 70)}`,
      `sha256=${good.slice(7)}, ${good}`,
    ]) {
      const r = await deliver(url, body, { 'x-hub-signature-256': sig });
      expect(r.status, JSON.stringify(sig)).toBe(401);
    }
    expect(await names(url)).toEqual(['pr-3']);
    const upper = await deliver(url, body, {
      'x-hub-signature-256': `sha256=${good.slice(7).toUpperCase()}`,
    });
    expect(upper.status).toBe(200);
    expect(upper.json.deleted).toEqual(['pr-3']);
  });

  it('says to switch the webhook to application/json when GitHub sends it form-encoded', async () => {
    const { url } = await startRegistry({ githubWebhookSecret: SECRET });
    const body = `payload=${encodeURIComponent(closed(5))}`;
    const r = await deliver(url, body, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.status).toBe(415);
    expect(r.json.message).toContain('application/json');
  });
});
