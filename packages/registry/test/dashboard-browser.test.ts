/// <reference lib="dom" />
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRegistryServer, type RegistryServer } from '../src/index.js';

// The dashboard in a real browser: Debian's Chromium driven by playwright-core, against a real
// registry (SQLite in a temporary directory). The screenshot in docs/ is refreshed with
// BRANCHLINE_UPDATE_SCREENSHOT=1.
const CHROMIUM = process.env.BRANCHLINE_CHROMIUM ?? '/usr/bin/chromium';
const WRITE = 'dash-write-token-0123456789';
const READ = 'dash-read-token-0123456789';
const SCREENSHOT = join(dirname(fileURLToPath(import.meta.url)), '../../../docs/images/dashboard.png');

let dir: string;
let registry: RegistryServer;
let url: string;
let context: BrowserContext;
let page: Page;
/** Script errors and Content-Security-Policy violations seen by the page. */
const problems: string[] = [];

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

/** expect.poll with a timeout that suits a loaded 2-core machine. */
const poll = <T>(fn: () => Promise<T> | T) => expect.poll(fn, { timeout: 10_000 });

/** When the page inserted (`shown`) or removed a sandbox's card, by the page's own clock. */
function shownAt(name: string, what: 'shown' | 'removed'): Promise<number> {
  return page.evaluate(
    ([n, w]) =>
      (window as unknown as { branchlineDashboard: Record<string, Record<string, number>> })
        .branchlineDashboard[w!]![n!]!,
    [name, what],
  );
}

/** The registry under test; created again on the same store to test a restart. */
function newRegistry() {
  return createRegistryServer({
    store: join(dir, 'registry.db'),
    tokens: [
      { token: WRITE, scopes: ['write'], name: 'ci' },
      { token: READ, scopes: ['read'], name: 'dashboard' },
    ],
    heartbeatIntervalMs: 250,
    log: () => {},
  });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}: the dashboard test needs a real browser. ` +
        'Run `bash scripts/install-browser.sh` (apt-get install -y chromium), or set BRANCHLINE_CHROMIUM to a Chromium binary.',
    );
  dir = await mkdtemp(join(tmpdir(), 'branchline-dashboard-'));
  registry = newRegistry();
  url = await registry.listen(0);
  context = await chromium.launchPersistentContext(join(dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    viewport: { width: 1360, height: 900 },
    timeout: 60_000,
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (err) => problems.push(String(err)));
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) problems.push(m.text());
  });
}, 90_000);

afterAll(async () => {
  await context?.close();
  await registry?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the registry dashboard in headless Chromium', () => {
  it('asks for a read token when reads need one, then goes live with it', async () => {
    await page.goto(url);
    await page.locator('html[data-connection="needs-token"]').waitFor({ timeout: 10_000 });
    await page.fill('#token-input', READ);
    await page.click('#token-form button');
    await page.locator('html[data-connection="live"]').waitFor({ timeout: 10_000 });
  });

  it('takes the token from ?token= and removes it from the address bar', async () => {
    await page.evaluate(() => sessionStorage.clear());
    await page.goto(`${url}/?token=${READ}&services=gateway,orders,payments,shipping`);
    await page.locator('html[data-connection="live"]').waitFor({ timeout: 10_000 });
    expect(page.url()).toBe(`${url}/?services=gateway%2Corders%2Cpayments%2Cshipping`);
    // The pinned baseline services are drawn before any sandbox exists.
    await poll(() =>
      page
        .locator('[data-map-service]')
        .evaluateAll((els) => els.map((e) => e.getAttribute('data-map-service'))),
    ).toEqual(['gateway', 'orders', 'payments', 'shipping']);
  });

  it('shows a sandbox created through the API within a second, with its key, labels, TTL and overrides', async () => {
    const before = Date.now();
    const created = await api('PUT', '/v1/sandboxes/pay-fee', {
      overrides: { payments: { http: 'http://127.0.0.1:4001' } },
      labels: { owner: 'ada', pr: '412', repo: 'acme/shop' },
      ttl: '2h',
    });
    expect(created.status).toBe(201);
    const card = page.locator('[data-sandbox="pay-fee"]');
    await card.waitFor({ timeout: 10_000 });
    // Measured by the page itself (same machine clock), so a slow test harness cannot blur it.
    expect(await shownAt('pay-fee', 'shown')).toBeLessThan(before + 1000);
    expect(await card.getAttribute('data-key')).toBe('pay-fee');
    expect(await card.locator('[data-label="owner"]').textContent()).toBe('owner: ada');
    expect(await card.locator('[data-label="pr"] a').getAttribute('href')).toBe(
      'https://github.com/acme/shop/pull/412',
    );
    expect(await card.locator('tr[data-service="payments"] .badge').textContent()).toBe('declared');
    await poll(() => card.locator('.ttl').textContent()).toMatch(/^expires in 1h 59m \d\ds$/);
    expect(
      await page
        .locator('[data-map-sandbox="pay-fee"] [data-map-override]')
        .getAttribute('data-map-override'),
    ).toBe('payments');
  });

  it('marks an override live once the sandbox workload sends a heartbeat', async () => {
    const hb = await api('POST', '/v1/sandboxes/pay-fee/heartbeat', {
      service: 'shipping',
      http: 'http://127.0.0.1:4002',
    });
    expect(hb.status).toBe(200);
    const row = page.locator('[data-sandbox="pay-fee"] tr[data-service="shipping"]');
    await row.waitFor({ timeout: 5000 });
    expect(await row.locator('.badge').textContent()).toBe('heartbeat');
    expect(await row.locator('.ep').textContent()).toBe('http://127.0.0.1:4002');
  });

  it('copies the header that selects the sandbox', async () => {
    const button = page.locator('[data-sandbox="pay-fee"] button[data-copy]');
    await button.click();
    await poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe('baggage: branchline=pay-fee');
  });

  it('shows the activity the SDKs report for the sandbox', async () => {
    const posted = await api('POST', '/v1/activity', {
      entries: [
        { sandbox: 'pay-fee', service: 'payments', kind: 'forwarded', count: 7, at: Date.now() },
        { sandbox: 'pay-fee', service: 'shipping', kind: 'consumed', count: 3, at: Date.now() },
      ],
    });
    expect(posted.status).toBe(202);
    const activity = page.locator('[data-sandbox="pay-fee"] [data-activity]');
    await poll(() => activity.locator('[data-kind="forwarded"] .n').textContent()).toBe('7');
    expect(await activity.locator('[data-kind="consumed"] .n').textContent()).toBe('3');
  });

  it('shows a route group with its members and copies its header', async () => {
    await api('PUT', '/v1/sandboxes/ship-dhl', {
      overrides: { shipping: { http: 'http://127.0.0.1:4003' } },
      labels: { owner: 'lin', feature: 'checkout' },
      ttl: '45m',
    });
    const put = await api('PUT', '/v1/routegroups/checkout', { match: { labels: { feature: 'checkout' } } });
    expect(put.status).toBe(201);
    const group = page.locator('[data-group="checkout"]');
    await group.waitFor({ timeout: 5000 });
    await poll(() => group.locator('[data-members]').getAttribute('data-members')).toBe('ship-dhl');
    await group.locator('button[data-copy]').click();
    await poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe(
      'baggage: branchline=checkout',
    );
  });

  it('removes a deleted sandbox within a second and lists it as recently deleted', async () => {
    await api('PUT', '/v1/sandboxes/old-idea', { overrides: { orders: { http: 'http://127.0.0.1:4009' } } });
    await page.locator('[data-sandbox="old-idea"]').waitFor({ timeout: 5000 });
    const before = Date.now();
    const del = await api('DELETE', '/v1/sandboxes/old-idea');
    expect(del.status).toBe(200);
    await page.locator('[data-sandbox="old-idea"]').waitFor({ state: 'detached', timeout: 10_000 });
    expect(await shownAt('old-idea', 'removed')).toBeLessThan(before + 1000);
    await page.locator('[data-tombstone="old-idea"]').waitFor({ state: 'attached', timeout: 5000 });
    expect(await page.locator('[data-map-sandbox="old-idea"]').count()).toBe(0);
    expect(await page.locator('[data-sandbox="pay-fee"]').count()).toBe(1);
  });

  it('keeps following the registry across a restart', async () => {
    const port = Number(new URL(url).port);
    await registry.close();
    await page
      .locator('html[data-connection="reconnecting"]')
      .waitFor({ state: 'attached', timeout: 10_000 });
    registry = newRegistry(); // the same store: the restarted registry has the same sandboxes
    await registry.listen(port);
    await page.locator('html[data-connection="live"]').waitFor({ state: 'attached', timeout: 15_000 });
    expect((await api('PUT', '/v1/sandboxes/after-restart', {})).status).toBe(201);
    await page.locator('[data-sandbox="after-restart"]').waitFor({ timeout: 5000 });
    expect(await page.locator('[data-sandbox="pay-fee"]').count()).toBe(1);
    await api('DELETE', '/v1/sandboxes/after-restart');
    await page.locator('[data-sandbox="after-restart"]').waitFor({ state: 'detached', timeout: 5000 });
  });

  it('renders a full page a team can leave open (screenshot)', async () => {
    await api('PUT', '/v1/sandboxes/orders-v2', {
      overrides: { orders: { http: 'http://127.0.0.1:4011' } },
      labels: { owner: 'sam', pr: '418', repo: 'acme/shop', feature: 'checkout' },
      ttl: '6h',
    });
    // Reports stamped over the last ten minutes, as SDK reporters would have sent them.
    const t = Date.now();
    const past = (sandbox: string, service: string, kind: string, counts: number[]) =>
      counts.map((count, i) => ({ sandbox, service, kind, count, at: t - (counts.length - 1 - i) * 20_000 }));
    const wave = [
      3, 5, 4, 8, 12, 9, 6, 4, 7, 11, 15, 13, 9, 6, 8, 10, 14, 18, 12, 9, 7, 5, 9, 12, 16, 11, 8, 6, 10, 13,
    ];
    await api('POST', '/v1/activity', [
      ...past(
        'ship-dhl',
        'shipping',
        'consumed',
        wave.slice(12).map((n) => Math.ceil(n / 3)),
      ),
      ...past('orders-v2', 'orders', 'forwarded', wave),
      ...past(
        'pay-fee',
        'payments',
        'forwarded',
        wave.slice(4, 20).map((n) => Math.ceil(n / 2)),
      ),
      ...past(
        'orders-v2',
        'payments',
        'routed',
        wave.slice(20).map((n) => Math.ceil(n / 4)),
      ),
    ]);
    await page.locator('[data-sandbox="orders-v2"] [data-kind="forwarded"]').waitFor({ timeout: 10_000 });
    await poll(() =>
      page.locator('[data-group="checkout"] [data-members]').getAttribute('data-members'),
    ).toBe('ship-dhl,orders-v2');
    expect(await page.evaluate(() => document.documentElement.dataset.connection)).toBe('live');
    expect(problems).toEqual([]);
    const target = process.env.BRANCHLINE_UPDATE_SCREENSHOT ? SCREENSHOT : join(dir, 'dashboard.png');
    await mkdir(dirname(target), { recursive: true });
    const png = await page.screenshot({ path: target, fullPage: true });
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  });
});
