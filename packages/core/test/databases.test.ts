// The driver-neutral part of the database adapters (@branchline/pg, @branchline/mysql): names,
// spec reading, which database a routing key selects, and reading a sandbox database's connection
// outputs from a registry over HTTP.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RouteTableSpec, type SandboxSpec, setLogger, withRoutingKey } from '../src/index.js';
import {
  checkBaselineDatabaseName,
  checkDatabasePrefix,
  checkDatabaseSandboxName,
  DEFAULT_SANDBOX_DATABASE_PREFIX,
  fetchDatabaseOutputs,
  guardProgressReport,
  parseDatabaseSpec,
  parseSandboxDatabaseName,
  RouteTable,
  SandboxDatabasePools,
  SandboxDatabaseSelection,
  StaticRouteSource,
  sandboxDatabaseName,
} from '../src/transport.js';

const PREFIX = DEFAULT_SANDBOX_DATABASE_PREFIX;
const fail = (message: string) => new RangeError(message);
const nameRules = {
  driver: 'testdb',
  maxLength: 63,
  sourcePattern: /^[a-z0-9_][a-z0-9_-]*$/,
  sourceChars: 'lowercase letters, digits, "_" or "-"',
  fail,
};

describe('sandbox database names', () => {
  it('are <prefix><sandbox>__<source> when that fits, and name their sandbox', () => {
    const name = sandboxDatabaseName('orders', 'pr-42', PREFIX, 63);
    expect(name).toBe('bl_sb_pr-42__orders');
    expect(parseSandboxDatabaseName(name)).toBe('pr-42');
  });

  it('replace a source that does not fit with a stable digest, still naming the sandbox', () => {
    const source = 'o'.repeat(60);
    const name = sandboxDatabaseName(source, 'pr-42', PREFIX, 63);
    expect(name).toMatch(/^bl_sb_pr-42__h[0-9a-f]{10}$/);
    expect(sandboxDatabaseName(source, 'pr-42', PREFIX, 63)).toBe(name);
    expect(sandboxDatabaseName(`${source}x`, 'pr-42', PREFIX, 63)).not.toBe(name);
    expect(sandboxDatabaseName(source, 'pr-43', PREFIX, 63)).not.toBe(name.replace('pr-42', 'pr-43'));
    expect(parseSandboxDatabaseName(name)).toBe('pr-42');
  });

  it('shorten the sandbox too when even the digest does not fit, at exactly the limit', () => {
    const sandbox = 's'.repeat(63);
    const name = sandboxDatabaseName('orders', sandbox, PREFIX, 63);
    expect(name).toHaveLength(63);
    expect(name.startsWith(`${PREFIX}sss`)).toBe(true);
    expect(name).toMatch(/_x[0-9a-f]{10}$/);
    // Two long sandboxes that share their first characters still get different databases.
    expect(sandboxDatabaseName('orders', `${'s'.repeat(62)}t`, PREFIX, 63)).not.toBe(name);
  });

  it('do not claim databases of another prefix or whose owner part is not a sandbox name', () => {
    expect(parseSandboxDatabaseName('orders')).toBeUndefined();
    expect(parseSandboxDatabaseName('bl_sb___orders')).toBeUndefined();
    expect(parseSandboxDatabaseName('bl_sb_PR-42__orders')).toBeUndefined();
    expect(parseSandboxDatabaseName('team_sb_pr-42__orders', 'team_sb_')).toBe('pr-42');
    expect(parseSandboxDatabaseName('bl_sb_pr-42__orders', 'team_sb_')).toBeUndefined();
  });

  it('checks say which name is wrong and what to use', () => {
    expect(checkBaselineDatabaseName('orders', 'spec.from', nameRules)).toBe('orders');
    expect(() => checkBaselineDatabaseName('', 'spec.from', nameRules)).toThrow(
      'branchline testdb: spec.from must name the baseline database to copy, e.g. "orders" (got "")',
    );
    expect(() => checkBaselineDatabaseName('Or ders', 'spec.from', nameRules)).toThrow(RangeError);
    expect(() => checkBaselineDatabaseName('x'.repeat(64), 'spec.from', nameRules)).toThrow(/at most 63/);
    expect(checkDatabaseSandboxName('pr-42', 'sandbox', nameRules)).toBe('pr-42');
    expect(() => checkDatabaseSandboxName('PR_42', 'sandbox', nameRules)).toThrow(
      /branchline testdb: sandbox "PR_42" is not a sandbox name: use lowercase letters/,
    );
    expect(checkDatabasePrefix('team_sb_', 'prefix', 'testdb')).toBe('team_sb_');
    for (const bad of ['', 'bl', 'Bl_sb_', 'bl-sb_', 'bl_sb', `b${'_'.repeat(24)}`])
      expect(() => checkDatabasePrefix(bad, 'prefix', 'testdb'), bad).toThrow(/option prefix=/);
  });
});

describe('database resource specs', () => {
  const rules = {
    type: 'testdb',
    driver: 'testdb',
    checkSource: (name: unknown, where: string) => checkBaselineDatabaseName(name, where, nameRules),
    fail,
  };

  it('read { from, services } from spec or, hand-written, from the resource itself', () => {
    expect(parseDatabaseSpec({ spec: { from: 'orders', services: ['api'] } }, rules)).toEqual({
      from: 'orders',
      services: ['api'],
    });
    expect(parseDatabaseSpec({ type: 'testdb', from: 'orders' }, rules)).toEqual({ from: 'orders' });
  });

  it('accept refresh only from adapters that keep snapshots', () => {
    expect(parseDatabaseSpec({ spec: { from: 'orders', refresh: true } }, rules)).toEqual({ from: 'orders' });
    expect(
      parseDatabaseSpec({ spec: { from: 'orders', refresh: true } }, { ...rules, refresh: true }),
    ).toEqual({
      from: 'orders',
      refresh: true,
    });
    expect(() =>
      parseDatabaseSpec({ spec: { from: 'orders', refresh: 'yes' } }, { ...rules, refresh: true }),
    ).toThrow(/spec.refresh must be true or false/);
  });

  it('refuse a missing spec, a bad source and a services value that is not a list of names', () => {
    expect(() => parseDatabaseSpec(null, rules)).toThrow(
      /a testdb resource needs a spec like \{"from": "orders"\}/,
    );
    expect(() => parseDatabaseSpec({ spec: {} }, rules)).toThrow(/spec.from must name the baseline database/);
    expect(() => parseDatabaseSpec({ spec: { from: 'orders', services: 'api' } }, rules)).toThrow(
      /spec.services must be a list of service names/,
    );
    expect(() => parseDatabaseSpec({ spec: { from: 'orders', services: [''] } }, rules)).toThrow(RangeError);
  });
});

/** A sandbox with one `testdb` resource copying `from`. */
function sandbox(
  name: string,
  resource: Record<string, unknown> | undefined,
  extra: Partial<SandboxSpec> = {},
): SandboxSpec {
  return {
    name,
    key: name,
    overrides: { api: { http: `http://${name}.internal:8080` } },
    ...(resource ? { resources: { db: { type: 'testdb', ...resource } } } : {}),
    ...extra,
  };
}

const dbName = (source: string, sb: string, prefix: string) => sandboxDatabaseName(source, sb, prefix, 63);
const selectionOptions = {
  driver: 'testdb',
  type: 'testdb',
  source: 'orders',
  prefix: PREFIX,
  service: 'api',
  databaseName: dbName,
};

describe('which database a routing key selects', () => {
  const table = RouteTable.from({
    sandboxes: [
      sandbox('ready', { spec: { from: 'orders' }, status: 'ready' }),
      sandbox('copying', { spec: { from: 'orders' }, status: 'provisioning' }),
      sandbox('other-source', { spec: { from: 'billing' }, status: 'ready' }),
      sandbox('other-service', { spec: { from: 'orders', services: ['web'] }, status: 'ready' }),
      sandbox('for-api', { spec: { from: 'orders', services: ['api'] }, status: 'ready' }),
      sandbox('going', { spec: { from: 'orders' }, status: 'deleting' }),
      sandbox('no-db', undefined),
      sandbox('static', { from: 'orders' }),
    ],
  } satisfies RouteTableSpec);

  it('is the sandbox database when the key sandbox has a ready one for this source and service', () => {
    const selection = new SandboxDatabaseSelection(selectionOptions);
    const wanted = selection.apply(table);
    expect([...wanted].sort()).toEqual(
      [
        dbName('orders', 'ready', PREFIX),
        dbName('orders', 'for-api', PREFIX),
        dbName('orders', 'static', PREFIX),
      ].sort(),
    );
    expect(selection.databaseFor('ready')).toBe('bl_sb_ready__orders');
    expect(selection.databaseFor('for-api')).toBe('bl_sb_for-api__orders');
    // A resource written without a status (a static route table) counts as ready.
    expect(selection.databaseFor('static')).toBe('bl_sb_static__orders');
    for (const key of ['copying', 'other-source', 'other-service', 'going', 'no-db', 'unknown'])
      expect(selection.databaseFor(key), key).toBe('orders');
    expect(selection.databaseFor(undefined)).toBe('orders');
    expect(selection.own).toBeUndefined();
  });

  it('follows the active routing key, and sends a key whose database is not ready to the baseline, saying so', () => {
    const warnings: string[] = [];
    setLogger({ debug() {}, info() {}, warn: (msg) => warnings.push(msg), error() {} });
    try {
      const selection = new SandboxDatabaseSelection(selectionOptions);
      selection.apply(table);
      expect(selection.select()).toBeUndefined();
      expect(withRoutingKey('ready', () => selection.select())).toBe('bl_sb_ready__orders');
      expect(withRoutingKey('no-db', () => selection.select())).toBeUndefined();
      expect(warnings).toEqual([]);
      expect(withRoutingKey('copying', () => selection.select())).toBeUndefined();
      expect(warnings).toEqual([
        'branchline testdb: the sandbox database for this key is not ready; the query goes to the baseline database',
      ]);
    } finally {
      setLogger(undefined);
    }
  });

  it('in a sandbox workload is always its own sandbox database, ready or not', () => {
    const selection = new SandboxDatabaseSelection({ ...selectionOptions, sandbox: 'copying' });
    expect([...selection.apply(table)]).toContain('bl_sb_copying__orders');
    expect(selection.own).toBe('bl_sb_copying__orders');
    expect(selection.databaseFor(undefined)).toBe('bl_sb_copying__orders');
    expect(selection.databaseFor('ready')).toBe('bl_sb_copying__orders');
    expect(selection.select()).toBe('bl_sb_copying__orders');
  });

  it('for a route group key is the database of the member that serves this service, not the oldest one', () => {
    const grouped = RouteTable.from({
      sandboxes: [
        sandbox(
          'web-change',
          { spec: { from: 'orders' }, status: 'ready' },
          {
            overrides: { web: { http: 'http://web-change.internal:8080' } },
            labels: { story: 's1' },
            createdAt: 1,
          },
        ),
        sandbox(
          'api-change',
          { spec: { from: 'orders' }, status: 'ready' },
          { labels: { story: 's1' }, createdAt: 2 },
        ),
      ],
      groups: [{ name: 'story-1', key: 'story-1', match: { labels: { story: 's1' } } }],
    });
    const selection = new SandboxDatabaseSelection(selectionOptions);
    selection.apply(grouped);
    expect(selection.databaseFor('story-1')).toBe('bl_sb_api-change__orders');
    // A service no member overrides gets the oldest member's database.
    const forWorker = new SandboxDatabaseSelection({ ...selectionOptions, service: 'worker' });
    forWorker.apply(grouped);
    expect(forWorker.databaseFor('story-1')).toBe('bl_sb_web-change__orders');
  });

  it('uses resolveDatabase instead of the built-in rule when given', () => {
    const selection = new SandboxDatabaseSelection({
      ...selectionOptions,
      resolveDatabase: (s) => (s.name === 'no-db' ? 'hand_picked' : undefined),
    });
    expect([...selection.apply(table)]).toEqual(['hand_picked']);
    expect(selection.databaseFor('no-db')).toBe('hand_picked');
    expect(selection.databaseFor('ready')).toBe('orders');
  });
});

describe('SandboxDatabasePools', () => {
  it('opens a sandbox database pool on first use and closes it when the route table drops the sandbox', async () => {
    const routes = new StaticRouteSource({
      sandboxes: [sandbox('pr-1', { spec: { from: 'orders' }, status: 'ready' })],
    });
    const opened: string[] = [];
    const closed: string[] = [];
    const pools = new SandboxDatabasePools<string>('baseline', {
      ...selectionOptions,
      routes,
      open: (db) => {
        opened.push(db);
        return `pool:${db}`;
      },
      close: async (p) => {
        closed.push(p);
      },
    });
    expect(pools.poolFor(undefined)).toBe('baseline');
    expect(opened).toEqual([]);
    expect(withRoutingKey('pr-1', () => pools.pick())).toBe('pool:bl_sb_pr-1__orders');
    expect(pools.poolFor('pr-1')).toBe('pool:bl_sb_pr-1__orders');
    expect(opened).toEqual(['bl_sb_pr-1__orders']);
    routes.update({ sandboxes: [] });
    expect(closed).toEqual(['pool:bl_sb_pr-1__orders']);
    expect(pools.sandboxPools().size).toBe(0);
    expect(withRoutingKey('pr-1', () => pools.pick())).toBe('baseline');
    await pools.end();
    expect(closed).toEqual(['pool:bl_sb_pr-1__orders', 'baseline']);
  });
});

describe('guardProgressReport', () => {
  it('passes progress on, and logs and swallows a callback that throws', () => {
    const errors: string[] = [];
    setLogger({ debug() {}, info() {}, warn() {}, error: (msg) => errors.push(msg) });
    try {
      const seen: unknown[] = [];
      guardProgressReport('testdb', (p) => seen.push(p))({ phase: 'copying' });
      expect(seen).toEqual([{ phase: 'copying' }]);
      expect(() =>
        guardProgressReport('testdb', () => {
          throw new Error('listener bug');
        })({ phase: 'copying' }),
      ).not.toThrow();
      expect(errors).toEqual(['branchline testdb: the progress callback threw; ignoring it']);
      expect(() => guardProgressReport('testdb', undefined)({ phase: 'copying' })).not.toThrow();
    } finally {
      setLogger(undefined);
    }
  });
});

describe('fetchDatabaseOutputs, against a registry-shaped HTTP server', () => {
  type Answer = { status: number; body?: unknown };
  const answers = new Map<string, Answer[]>();
  const requests: { url: string; authorization?: string }[] = [];
  let server: Server;
  let registry: string;
  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      requests.push({ url: req.url ?? '', authorization: req.headers.authorization });
      const queue = answers.get(req.url ?? '') ?? [];
      const answer =
        queue.length > 1 ? queue.shift()! : (queue[0] ?? { status: 404, body: { error: 'not_found' } });
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer.body ?? {}));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    registry = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    server.close();
    await once(server, 'close');
  });

  const outputs = {
    host: 'db',
    port: 5432,
    database: 'bl_sb_pr-7__orders',
    user: 'u',
    url: 'x',
    source: 'orders',
  };
  const path = (sb: string, resource: string) => `/v1/sandboxes/${sb}/resources/${resource}`;
  const fetchFor = (sb: string, resource: string, waitMs?: number) =>
    fetchDatabaseOutputs<typeof outputs>('testdb', resource, {
      registry,
      sandbox: sb,
      token: 'sb-token',
      waitMs,
    });

  it('returns the outputs of a ready resource, asked for with the sandbox token at the resource path', async () => {
    answers.set(path('pr-7', 'orders-db'), [{ status: 200, body: { status: 'ready', outputs } }]);
    expect(await fetchFor('pr-7', 'orders-db')).toEqual(outputs);
    expect(requests.at(-1)).toEqual({ url: path('pr-7', 'orders-db'), authorization: 'Bearer sb-token' });
  });

  it('waits up to waitMs for a database that is still being copied', async () => {
    answers.set(path('pr-8', 'db'), [
      { status: 200, body: { status: 'provisioning', progress: { phase: 'copying' } } },
      { status: 200, body: { status: 'ready', outputs } },
    ]);
    expect(await fetchFor('pr-8', 'db', 10_000)).toEqual(outputs);
  });

  it('says what is wrong: not ready (with progress), failed, unknown resource, refused token, other errors', async () => {
    answers.set(path('pr-9', 'db'), [
      {
        status: 200,
        body: { status: 'provisioning', progress: { phase: 'copying', done: 3, total: 8, unit: 'tables' } },
      },
    ]);
    await expect(fetchFor('pr-9', 'db')).rejects.toThrow(
      'branchline testdb: the database pr-9/db is not ready (status provisioning, copying 3/8 tables); retry later or pass waitMs',
    );
    answers.set(path('pr-10', 'db'), [{ status: 200, body: { status: 'failed', error: 'disk full' } }]);
    await expect(fetchFor('pr-10', 'db')).rejects.toThrow('failed to provision: disk full');
    await expect(fetchFor('pr-11', 'db')).rejects.toThrow('sandbox pr-11 has no resource "db" (HTTP 404)');
    answers.set(path('pr-12', 'db'), [{ status: 403 }]);
    await expect(fetchFor('pr-12', 'db')).rejects.toThrow(
      /refused the connection details of pr-12\/db \(HTTP 403\)/,
    );
    answers.set(path('pr-13', 'db'), [{ status: 503 }]);
    await expect(fetchFor('pr-13', 'db')).rejects.toThrow('the registry answered HTTP 503');
  });

  it('needs a registry and a sandbox, and checks the sandbox name before asking', async () => {
    const before = requests.length;
    await expect(
      fetchDatabaseOutputs('testdb', 'db', { registry, sandbox: 'Not_A_Sandbox', token: 't' }),
    ).rejects.toThrow(/option sandbox="Not_A_Sandbox" is not a sandbox name/);
    const saved = { registry: process.env.BRANCHLINE_REGISTRY, sandbox: process.env.BRANCHLINE_SANDBOX };
    delete process.env.BRANCHLINE_REGISTRY;
    delete process.env.BRANCHLINE_SANDBOX;
    try {
      await expect(fetchDatabaseOutputs('testdb', 'db', { registry })).rejects.toThrow(
        /fetchSandboxDatabase needs the registry URL and the sandbox name/,
      );
    } finally {
      if (saved.registry !== undefined) process.env.BRANCHLINE_REGISTRY = saved.registry;
      if (saved.sandbox !== undefined) process.env.BRANCHLINE_SANDBOX = saved.sandbox;
    }
    expect(requests.length).toBe(before);
  });
});
