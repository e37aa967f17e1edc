// `POST /v1/webhooks/github`: a closed pull request deletes its sandboxes.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { verifyGithubSignature } from './auth.js';
import { isJsonType } from './http-guards.js';
import { readBody, send } from './http-io.js';
import { labelValue, RegistryError, type RegistryState } from './state.js';
import type { Store } from './store.js';

/** How many processed GitHub delivery ids the store remembers, to refuse replays. */
const DELIVERY_MEMORY = 10_000;
/** GitHub's delivery ids are GUIDs; this also admits other senders' ids of the same alphabet. */
const DELIVERY_ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
/** A sandbox created up to this long after a pull request's closed_at is still deleted by it. */
const CLOSED_AT_MARGIN_MS = 5 * 60_000;

export interface GithubWebhookDeps {
  /** The webhook's secret; without one every delivery gets 401. */
  secret: string | undefined;
  maxBodyBytes: number;
  store: Store;
  state: RegistryState;
  /** Deletes a sandbox without waiting for its resources; true when it was live. */
  deleteSandbox(name: string): Promise<boolean>;
}

export async function githubWebhook(
  req: IncomingMessage,
  res: ServerResponse,
  d: GithubWebhookDeps,
): Promise<void> {
  const raw = await readBody(req, Math.max(d.maxBodyBytes, 1024 * 1024));
  const secret = d.secret;
  if (!secret)
    throw new RegistryError(
      401,
      'unauthorized',
      'the GitHub webhook is disabled: start the registry with a webhook secret (--github-webhook-secret)',
    );
  const sig = req.headers['x-hub-signature-256'];
  if (!verifyGithubSignature(secret, raw, typeof sig === 'string' ? sig : undefined))
    throw new RegistryError(
      401,
      'unauthorized',
      'missing or wrong X-Hub-Signature-256 signature (expected "sha256=" and 64 hex digits: the HMAC-SHA256 of the body with the webhook secret)',
    );
  const type = req.headers['content-type'];
  if (type !== undefined && !isJsonType(type))
    throw new RegistryError(
      415,
      'unsupported_media_type',
      `the webhook body is ${JSON.stringify(type)}: set the webhook's content type to application/json in the repository's webhook settings`,
    );
  const delivery = req.headers['x-github-delivery'];
  if (typeof delivery !== 'string' || !DELIVERY_ID_RE.test(delivery))
    throw new RegistryError(
      400,
      'invalid_request',
      `the X-GitHub-Delivery header is ${delivery === undefined ? 'missing' : `not a delivery id: ${JSON.stringify(String(delivery).slice(0, 140))}`}; GitHub sends one with every delivery, and the registry needs it to refuse replays`,
    );
  let payload: unknown;
  try {
    payload = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new RegistryError(400, 'invalid_json', 'the webhook body is not JSON');
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload))
    throw new RegistryError(
      400,
      'invalid_request',
      `the webhook body must be a JSON object (a GitHub event payload), got ${payload === null ? 'null' : Array.isArray(payload) ? 'an array' : typeof payload}`,
    );
  const p = payload as {
    action?: unknown;
    number?: unknown;
    pull_request?: { number?: unknown; merged?: unknown; closed_at?: unknown } | null;
    repository?: { full_name?: unknown } | null;
  };
  const event = req.headers['x-github-event'];
  if (event !== 'pull_request' || p.action !== 'closed')
    return send(res, 200, { ignored: true, event, action: p.action });
  const number = p.pull_request?.number ?? p.number;
  if (!Number.isSafeInteger(number) || (number as number) <= 0)
    throw new RegistryError(
      400,
      'invalid_request',
      `a closed pull_request event needs pull_request.number, a positive integer; got ${JSON.stringify(number) ?? 'none'}`,
    );
  const pr = String(number);
  const repo = typeof p.repository?.full_name === 'string' ? p.repository.full_name : undefined;
  // A replayed "closed" must not delete a sandbox the pull request got after it was closed
  // (reopened): only sandboxes created before closed_at (and a margin for clock skew) go.
  const closedAt = typeof p.pull_request?.closed_at === 'string' ? Date.parse(p.pull_request.closed_at) : NaN;
  const createdBefore = Number.isFinite(closedAt) ? closedAt + CLOSED_AT_MARGIN_MS : Number.POSITIVE_INFINITY;
  if (!(await d.store.recordDelivery(delivery, DELIVERY_MEMORY)))
    throw new RegistryError(
      409,
      'duplicate_delivery',
      `GitHub delivery ${delivery} was already processed; a repeat is refused (a replayed "closed" event could delete a newer sandbox of pull request ${pr})`,
    );
  const matching = d.state.liveSandboxes().filter((s) => {
    const sRepo = labelValue(s.labels, 'repo');
    return labelValue(s.labels, 'pr') === pr && (sRepo === undefined || sRepo === repo);
  });
  const kept = matching.filter((s) => s.createdAt > createdBefore).map((s) => s.name);
  const deleted: string[] = [];
  try {
    for (const s of matching)
      if (s.createdAt <= createdBefore && (await d.deleteSandbox(s.name))) deleted.push(s.name);
  } catch (err) {
    // Not processed after all: let GitHub's redelivery (same id) try again.
    await d.store.forgetDelivery(delivery).catch(() => undefined);
    throw err;
  }
  return send(res, 200, {
    deleted,
    kept,
    pr: Number(pr),
    repo,
    merged: p.pull_request?.merged === true,
  });
}
