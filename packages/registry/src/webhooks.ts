// `POST /v1/webhooks/github`: a closed pull request deletes its sandboxes; with a sandbox
// template (`githubSandboxTemplate`), an opened or reopened one gets a sandbox and a push to it
// (`synchronize`) refreshes that sandbox's TTL and `sha` label.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { verifyGithubSignature } from './auth.js';
import { isJsonType } from './http-guards.js';
import { type LogFn, readBody, send } from './http-io.js';
import { labelValue, RegistryError, type RegistryState } from './state.js';
import type { Store } from './store.js';
import type { SandboxDoc } from './types.js';
import {
  branchSlug,
  type SandboxTemplate,
  TemplateRenderError,
  type TemplateValues,
} from './webhook-template.js';

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
  /** What an opened pull request's sandbox looks like; without one, opened and synchronize are ignored. */
  template?: SandboxTemplate;
  log: LogFn;
  /** Creates the sandbox unless a live one has this name (decided inside one serialised write). */
  createSandboxIfAbsent(name: string, body: unknown): Promise<{ sandbox: SandboxDoc; created: boolean }>;
  /**
   * Sets the labels and a new expiry on the live sandbox `name` if its `pr` label is `pr` and its
   * `repo` label (when it has one) is `repo`; undefined otherwise.
   */
  refreshSandbox(
    name: string,
    match: { pr: string; repo: string },
    labels: Record<string, string>,
    ttl: string | number | undefined,
  ): Promise<SandboxDoc | undefined>;
}

/** Pull request actions a sandbox template acts on. */
const TEMPLATE_ACTIONS = new Set(['opened', 'reopened', 'synchronize']);
/** A commit id: SHA-1 or SHA-256, hexadecimal. */
const SHA_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

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
  const p = payload as PullRequestPayload;
  const event = req.headers['x-github-event'];
  if (event === 'pull_request' && d.template && TEMPLATE_ACTIONS.has(p.action as string))
    return pullRequestOpened(res, d, d.template, p, delivery);
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

type PullRequestPayload = {
  action?: unknown;
  number?: unknown;
  pull_request?: {
    number?: unknown;
    merged?: unknown;
    closed_at?: unknown;
    head?: { sha?: unknown; ref?: unknown } | null;
  } | null;
  repository?: { full_name?: unknown; name?: unknown; owner?: { login?: unknown } | null } | null;
};

/** The template's values from an opened, reopened or synchronize event, or a 400 naming the field. */
function templateValues(p: PullRequestPayload): TemplateValues & { fullName: string } {
  const need = (field: string, ok: boolean, got: unknown, what: string) => {
    if (!ok)
      throw new RegistryError(
        400,
        'invalid_request',
        `a ${String(p.action)} pull_request event needs ${field}, ${what}; got ${JSON.stringify(got) ?? 'none'}`,
      );
  };
  const number = p.pull_request?.number ?? p.number;
  need(
    'pull_request.number',
    Number.isSafeInteger(number) && (number as number) > 0,
    number,
    'a positive integer',
  );
  const sha = p.pull_request?.head?.sha;
  need(
    'pull_request.head.sha',
    typeof sha === 'string' && SHA_RE.test(sha),
    sha,
    'a commit id (40 or 64 hex digits)',
  );
  const ref = p.pull_request?.head?.ref;
  need('pull_request.head.ref', typeof ref === 'string' && ref !== '', ref, 'the branch name');
  const fullName = p.repository?.full_name;
  need('repository.full_name', typeof fullName === 'string' && fullName !== '', fullName, '"owner/name"');
  const name = p.repository?.name;
  need('repository.name', typeof name === 'string' && name !== '', name, 'the repository name');
  const owner = p.repository?.owner?.login;
  need('repository.owner.login', typeof owner === 'string' && owner !== '', owner, 'the owner name');
  return {
    PR: String(number),
    SHA: sha as string,
    BRANCH: ref as string,
    BRANCH_SLUG: branchSlug(ref as string, String(number)),
    REPO: name as string,
    OWNER: owner as string,
    fullName: fullName as string,
  };
}

/**
 * `opened`/`reopened`: the template's sandbox is created unless it exists (a second delivery of
 * the same event, whatever its id, finds it and creates nothing). `synchronize`: the sandbox's
 * `sha` label and expiry are renewed; it is not created again.
 */
async function pullRequestOpened(
  res: ServerResponse,
  d: GithubWebhookDeps,
  template: SandboxTemplate,
  p: PullRequestPayload,
  delivery: string,
): Promise<void> {
  const action = p.action as string;
  const values = templateValues(p);
  const { fullName, ...vars } = values;
  const pr = vars.PR;
  let rendered: ReturnType<SandboxTemplate['render']>;
  try {
    rendered = template.render(vars);
  } catch (err) {
    if (!(err instanceof TemplateRenderError)) throw err;
    throw refuse(d, action, pr, fullName, err.message);
  }
  const { name, body } = rendered;
  // The registry's labels: the close of this pull request finds the sandbox by them.
  const labels = {
    ...((body.labels as Record<string, string> | undefined) ?? {}),
    pr,
    repo: fullName,
    sha: vars.SHA,
  };
  if (!(await d.store.recordDelivery(delivery, DELIVERY_MEMORY)))
    throw new RegistryError(
      409,
      'duplicate_delivery',
      `GitHub delivery ${delivery} was already processed; a repeat is refused`,
    );
  try {
    if (action === 'synchronize') {
      const s = await d.refreshSandbox(
        name,
        { pr, repo: fullName },
        { sha: vars.SHA },
        body.ttl as string | number | undefined,
      );
      if (!s) {
        d.log('info', 'GitHub webhook: no sandbox to refresh', {
          sandbox: name,
          pr: Number(pr),
          repo: fullName,
        });
        return send(res, 200, {
          refreshed: false,
          sandbox: name,
          pr: Number(pr),
          repo: fullName,
          message: `no live sandbox ${name} labelled pr=${pr}, repo=${fullName}; a push does not create one (the pull request's "opened" or "reopened" does)`,
        });
      }
      d.log('info', 'GitHub webhook: sandbox refreshed', { sandbox: name, pr: Number(pr), sha: vars.SHA });
      return send(res, 200, {
        refreshed: true,
        sandbox: name,
        pr: Number(pr),
        repo: fullName,
        sha: vars.SHA,
        expiresAt: s.expiresAt,
      });
    }
    let r: { sandbox: SandboxDoc; created: boolean };
    try {
      r = await d.createSandboxIfAbsent(name, { ...body, labels });
    } catch (err) {
      if (err instanceof RegistryError && err.status === 400)
        throw refuse(d, action, pr, fullName, err.message, err.details);
      throw err;
    }
    if (r.created)
      d.log('info', 'GitHub webhook: sandbox created', { sandbox: name, pr: Number(pr), repo: fullName });
    return send(res, r.created ? 201 : 200, {
      created: r.created,
      sandbox: name,
      key: r.sandbox.key,
      pr: Number(pr),
      repo: fullName,
      sha: vars.SHA,
      ...(r.created ? {} : { message: `sandbox ${name} already exists; left as it is` }),
    });
  } catch (err) {
    // Not processed after all: let GitHub's redelivery (same id) try again.
    await d.store.forgetDelivery(delivery).catch(() => undefined);
    throw err;
  }
}

/** A 422 for an event the template cannot turn into a valid sandbox; the reason is logged too. */
function refuse(
  d: GithubWebhookDeps,
  action: string,
  pr: string,
  repo: string,
  reason: string,
  details?: Record<string, unknown>,
): RegistryError {
  d.log('warn', 'GitHub webhook: the sandbox template does not fit this pull request; no sandbox created', {
    action,
    pr: Number(pr),
    repo,
    reason,
  });
  return new RegistryError(
    422,
    'template_invalid',
    `the GitHub sandbox template does not give pull request ${pr} of ${repo} a valid sandbox: ${reason}. Change the template (--github-sandbox-template) so these values fit, then redeliver`,
    details,
  );
}
