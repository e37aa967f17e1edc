// `npm run demo`: a small shop of real services, each a separate Node process instrumented only
// through the Branchline packages, one embedded registry (SQLite in a temporary directory), two
// sandboxes, and a trace of which version served each hop and consumed each message.
//
//   node examples/demo.mjs [--verbose] [--keep]     (npm run demo -- --keep)
//
//   --verbose  show every service's log
//   --keep     leave the shop running after the tour, to send your own requests (Ctrl-C ends it)
//
// Legs that need a broker run when it is reachable: Kafka on 127.0.0.1:9092
// (`bash scripts/kafka.sh start`) and RabbitMQ on 127.0.0.1:5672. PostgreSQL on 127.0.0.1:5432
// holds the orders (database `branchline_demo`, created on first run); the sandbox pr-103 gets a
// copy of it for a schema change (@branchline/pg), dropped with the sandbox. Four more legs,
// each in a module of its own, show pr-101's key choosing its consumer on NATS JetStream
// (127.0.0.1:4222, examples/nats-leg.mjs), its worker on BullMQ (Redis on 127.0.0.1:6379,
// examples/bullmq-leg.mjs) and its consumer on Amazon SQS (ElasticMQ on 127.0.0.1:9324,
// examples/sqs-leg.mjs), and its database through a routed MySQL pool (MariaDB on
// 127.0.0.1:3306, examples/mysql-leg.mjs). Without a broker or database, the demo says what it
// skipped and how to enable it. Ctrl-C stops everything it started.
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { postgresResourceHook } from '@branchline/pg';
import { createRegistryServer } from '@branchline/registry';
import { bullmqLeg } from './bullmq-leg.mjs';
import { mysqlLeg } from './mysql-leg.mjs';
import { natsLeg } from './nats-leg.mjs';
import { reachable } from './reachable.mjs';
import { sqsLeg } from './sqs-leg.mjs';

const verbose = process.argv.includes('--verbose');
const keep = process.argv.includes('--keep');

// kafkajs 2.2 schedules a negative timeout on Node 24 (harmless); keep every other warning.
process.removeAllListeners('warning');
process.on('warning', (w) => {
  if (w.name !== 'TimeoutNegativeWarning') process.stderr.write(`${w.name}: ${w.message}\n`);
});
const tty = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code) => (s) => (tty ? `\x1b[${code}m${s}\x1b[0m` : String(s));
const bold = paint(1);
const dim = paint(2);
const green = paint(32);
const yellow = paint(33);
const cyan = paint(36);
const red = paint(31);
const say = (s = '') => process.stdout.write(`${s}\n`);
const step = (s) => say(`\n${bold('▸')} ${bold(s)}`);
const ok = (s) => say(`  ${green('✓')} ${s}`);
const skip = (s) => say(`  ${yellow('–')} ${s}`);

const shop = (file) => fileURLToPath(new URL(`./shop/${file}`, import.meta.url));
const runId = `${Date.now().toString(36).slice(-4)}${Math.random().toString(36).slice(2, 5)}`;
const PG = {
  host: process.env.PGHOST ?? '127.0.0.1',
  port: Number(process.env.PGPORT ?? 5432),
  user: process.env.PGUSER ?? 'postgres',
  database: 'branchline_demo',
};
// The demo's own names for sandbox databases and their snapshot, so it never touches others'.
const PG_NAMES = {
  prefix: 'bldemo_sb_',
  snapshotPrefix: 'bldemo_snap_',
  catalogue: 'branchline_demo_databases',
};
const KAFKA = process.env.BRANCHLINE_KAFKA_BROKER ?? '127.0.0.1:9092';
const AMQP = process.env.BRANCHLINE_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const names = {
  topic: `shop.orders.${runId}`,
  group: `shop-shipping-${runId}`,
  exchange: `shop.events.${runId}`,
  queue: `shop.notifications.${runId}`,
};

// ---- interruption --------------------------------------------------------------------------

const abort = new AbortController();
class Interrupted extends Error {}
let interrupts = 0;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    interrupts++;
    if (interrupts === 1) {
      say(`\n${yellow(`${signal === 'SIGINT' ? 'Ctrl-C' : signal}: stopping the demo and cleaning up…`)}`);
      abort.abort(new Interrupted());
    } else {
      killAll('SIGKILL');
      process.exit(130);
    }
  });
}
const checkAbort = () => {
  if (abort.signal.aborted) throw new Interrupted();
};

// ---- processes -----------------------------------------------------------------------------

/** Every trace line, ready line and rules report from the services. */
const bus = new EventEmitter();
bus.setMaxListeners(100);
const traces = [];
const children = [];

function killAll(signal) {
  for (const c of children) {
    if (c.exited) continue;
    try {
      process.kill(-c.child.pid, signal); // its whole process group
    } catch {
      try {
        c.child.kill(signal);
      } catch {}
    }
  }
}
process.on('exit', () => killAll('SIGKILL'));

function startService(file, service, sandbox, env) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BRANCHLINE_')));
  const childEnv = {
    ...base,
    BRANCHLINE_SERVICE: service,
    BRANCHLINE_REGISTRY: registryUrl,
    BRANCHLINE_LOG_LEVEL: verbose ? 'info' : 'error',
    DEMO_VERBOSE: verbose ? '1' : '0',
    KAFKAJS_NO_PARTITIONER_WARNING: '1',
    ...env,
  };
  if (sandbox) childEnv.BRANCHLINE_SANDBOX = sandbox;
  // Own process group (Ctrl-C reaches only the demo, which stops them in order); an IPC channel
  // that closes if the demo dies, so a service never outlives it.
  const child = spawn(process.execPath, [shop(file)], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    detached: true,
  });
  const entry = {
    name: `${service}@${sandbox ?? 'baseline'}`,
    service,
    sandbox,
    child,
    ready: undefined,
    rules: [],
    stderr: [],
    exited: false,
  };
  children.push(entry);
  createInterface({ input: child.stdout }).on('line', (line) => {
    const space = line.indexOf(' ');
    const tag = line.slice(0, space);
    if (tag === '@@trace') traces.push(JSON.parse(line.slice(space + 1)));
    else if (tag === '@@ready') entry.ready = JSON.parse(line.slice(space + 1)).detail;
    else if (tag === '@@rules') entry.rules = JSON.parse(line.slice(space + 1)).rules;
    else if (verbose) say(dim(`  [${entry.name}] ${line}`));
    bus.emit('update');
  });
  createInterface({ input: child.stderr }).on('line', (line) => {
    entry.stderr.push(line);
    if (entry.stderr.length > 40) entry.stderr.shift();
    if (verbose) say(dim(`  [${entry.name}] ${line}`));
  });
  child.on('exit', (code, signal) => {
    entry.exited = true;
    entry.exitCode = code ?? signal;
    bus.emit('update');
  });
  return entry;
}

/** Resolves when `check()` returns a truthy value; rejects after `ms` with `what()` explained. */
function waitFor(check, ms, what) {
  return new Promise((resolve, reject) => {
    let timer;
    const done = (fn, v) => {
      clearTimeout(timer);
      bus.off('update', test);
      abort.signal.removeEventListener('abort', onAbort);
      fn(v);
    };
    const test = () => {
      try {
        const v = check();
        if (v) done(resolve, v);
      } catch (err) {
        done(reject, err);
      }
    };
    const onAbort = () => done(reject, new Interrupted());
    if (abort.signal.aborted) {
      reject(new Interrupted());
      return;
    }
    timer = setTimeout(
      () => done(reject, new Error(`timed out after ${ms / 1000} s waiting for ${what()}`)),
      ms,
    );
    abort.signal.addEventListener('abort', onAbort);
    bus.on('update', test);
    test();
  });
}

function failedStart(entry) {
  const tail = entry.stderr.slice(-15).join('\n    ');
  return new Error(
    `${entry.name} exited (${entry.exitCode}) before it was ready:\n    ${tail || '(no output)'}`,
  );
}

async function waitReady(entries, ms = 45_000) {
  await waitFor(
    () => {
      for (const e of entries) if (e.exited && !e.ready) throw failedStart(e);
      return entries.every((e) => e.ready);
    },
    ms,
    () =>
      `${entries
        .filter((e) => !e.ready)
        .map((e) => e.name)
        .join(', ')} to start (run with --verbose to see their logs)`,
  );
}

async function stopAll() {
  const alive = children.filter((c) => !c.exited);
  for (const c of alive) {
    try {
      c.child.kill('SIGTERM');
    } catch {}
  }
  const deadline = setTimeout(() => killAll('SIGKILL'), 8000);
  await Promise.all(alive.map((c) => (c.exited ? undefined : once(c.child, 'exit'))));
  clearTimeout(deadline);
  killAll('SIGKILL'); // anything a service itself started, in its process group
  return alive.length;
}

// ---- infrastructure ------------------------------------------------------------------------

async function freePort() {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

const withTimeout = (p, ms, what) =>
  Promise.race([
    p,
    new Promise((_, rej) => setTimeout(() => rej(new Error(`${what} took over ${ms / 1000} s`)), ms).unref()),
  ]);

async function preparePostgres() {
  if (!(await reachable(PG.host, PG.port)))
    return {
      skipped: `PostgreSQL is not reachable on ${PG.host}:${PG.port}; orders keeps them in memory. Start PostgreSQL (pg_ctlcluster <version> main start) to store them.`,
    };
  const { default: pg } = await import('pg');
  try {
    const admin = new pg.Client({ ...PG, database: 'postgres', connectionTimeoutMillis: 5000 });
    await admin.connect();
    try {
      const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [PG.database]);
      if (!rowCount)
        await admin.query(`CREATE DATABASE ${PG.database}`).catch((err) => {
          if (err.code !== '42P04') throw err; // created concurrently by another demo run
        });
    } finally {
      await admin.end();
    }
    const db = new pg.Client({ ...PG, connectionTimeoutMillis: 5000 });
    await db.connect();
    try {
      await db.query(
        'CREATE TABLE IF NOT EXISTS demo_orders (id text PRIMARY KEY, item text NOT NULL, cents integer NOT NULL, routing_key text, created_at timestamptz NOT NULL DEFAULT now())',
      );
    } finally {
      await db.end();
    }
    return { url: `postgres://${encodeURIComponent(PG.user)}@${PG.host}:${PG.port}/${PG.database}` };
  } catch (err) {
    return {
      skipped: `PostgreSQL on ${PG.host}:${PG.port} refused the demo (${err.message}); orders keeps them in memory. Set PGUSER to a role that may create databases.`,
    };
  }
}

async function prepareKafka() {
  const [host, port] = KAFKA.split(':');
  const how =
    'start a broker with `bash scripts/kafka.sh start` (needs Java 17 and Maven) and run the demo again';
  if (!(await reachable(host, Number(port)))) return { skipped: `no Kafka broker on ${KAFKA}; ${how}` };
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({
    clientId: 'branchline-demo',
    brokers: [KAFKA],
    logLevel: logLevel.NOTHING,
    retry: { retries: 3 },
  });
  const admin = kafka.admin();
  try {
    await withTimeout(admin.connect(), 15_000, 'connecting to Kafka');
    // LogAppendTime: the broker stamps each message, so every consumer judges ownership by
    // one clock (see docs/kafka.md).
    await withTimeout(
      admin.createTopics({
        waitForLeaders: true,
        topics: [
          {
            topic: names.topic,
            numPartitions: 1,
            replicationFactor: 1,
            configEntries: [{ name: 'message.timestamp.type', value: 'LogAppendTime' }],
          },
        ],
      }),
      20_000,
      'creating the Kafka topic',
    );
    return { admin };
  } catch (err) {
    await admin.disconnect().catch(() => {});
    return {
      skipped: `the Kafka broker on ${KAFKA} did not accept the demo's topic (${err.message}); ${how}`,
    };
  }
}

async function prepareRabbit() {
  const u = new URL(AMQP);
  const how = 'start RabbitMQ (rabbitmq-server -detached) and run the demo again';
  if (!(await reachable(u.hostname, Number(u.port || 5672))))
    return { skipped: `no RabbitMQ broker on ${u.host}; ${how}` };
  const { default: amqplib } = await import('amqplib');
  try {
    const connection = await withTimeout(amqplib.connect(AMQP), 10_000, 'connecting to RabbitMQ');
    connection.on('error', () => {});
    return { connection };
  } catch (err) {
    return { skipped: `RabbitMQ on ${u.host} refused the demo (${err.message}); ${how}` };
  }
}

// ---- registry API (what a CI job or `branchline sandbox create` does) ----------------------

let registryUrl;
async function api(method, path, body) {
  const res = await fetch(`${registryUrl}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** Waits until the sandbox's database resource is ready, printing the phases it went through. */
async function waitForDatabase(sb) {
  const started = Date.now();
  const phases = [];
  for (;;) {
    checkAbort();
    const doc = await api('GET', `/v1/sandboxes/${sb.name}`);
    const r = doc.resources?.[sb.database];
    const phase = r?.progress?.phase;
    if (phase && phases.at(-1) !== phase) phases.push(phase);
    if (r?.status === 'failed') throw new Error(`the database of ${sb.name} failed: ${r.error}`);
    if (r?.status === 'ready') break;
    if (Date.now() - started > 60_000)
      throw new Error(`the database of ${sb.name} was not ready within 60 s (status ${r?.status})`);
    await new Promise((res) => setTimeout(res, 100));
  }
  const database = pgHook.databases.databaseName(PG.database, sb.name);
  ok(
    `resource ${sb.database}: ${cyan(database)}, a copy of ${PG.database}, ready in ${((Date.now() - started) / 1000).toFixed(1)} s  ${dim(`(${phases.join(' → ') || 'ready'})`)}`,
  );
  return { database };
}

/** The columns of demo_orders in each database that exists, by database. */
async function tableColumns(databases) {
  const { default: pg } = await import('pg');
  const out = {};
  for (const database of databases) {
    const c = new pg.Client({ ...PG, database, connectionTimeoutMillis: 5000 });
    try {
      await c.connect();
    } catch (err) {
      if (err.code === '3D000') continue; // no such database
      throw err;
    }
    try {
      const r = await c.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'demo_orders' ORDER BY ordinal_position",
      );
      out[database] = r.rows.map((x) => x.column_name);
    } finally {
      await c.end().catch(() => {});
    }
  }
  return out;
}

// ---- the demo ------------------------------------------------------------------------------

const SERVICES = ['gateway', 'orders', 'payments', 'shipping', 'notifications'];
const SANDBOXES = [
  {
    name: 'pr-101',
    service: 'payments',
    file: 'payments.mjs',
    what: 'payments with a new fee rule',
    labels: { pr: '101', owner: 'alice' },
  },
  {
    name: 'pr-102',
    service: 'shipping',
    file: 'shipping.mjs',
    what: 'shipping with a new carrier',
    labels: { pr: '102', owner: 'bob' },
  },
  {
    name: 'pr-103',
    service: 'orders',
    file: 'orders.mjs',
    what: 'orders with a new schema, cents → amount_cents + currency',
    labels: { pr: '103', owner: 'carol' },
    // Its own copy of the orders database: the schema change would break the baseline's code.
    database: 'orders-db',
  },
];
const REQUESTS = [
  { key: undefined, item: 'coffee beans', cents: 1850 },
  { key: 'pr-101', item: 'espresso machine', cents: 34900 },
  { key: 'pr-102', item: 'milk frother', cents: 4500 },
  { key: 'pr-103', item: 'tea kettle', cents: 2900 },
];

let tmp;
let registry;
let pgHook;
const created = [];
const legs = {};

async function main() {
  const started = Date.now();
  say(bold('Branchline demo — five services, three sandboxes, one registry'));
  say(
    dim(
      'Each service is its own Node process; routing happens inside them, through the Branchline packages.',
    ),
  );

  step('Checking the infrastructure');
  const [pg, kafka, rabbit] = await Promise.all([preparePostgres(), prepareKafka(), prepareRabbit()]);
  checkAbort();
  legs.pg = pg;
  legs.kafka = kafka;
  legs.rabbit = rabbit;
  if (pg.url) ok(`PostgreSQL  ${PG.host}:${PG.port}, database ${PG.database}, table demo_orders`);
  else skip(`PostgreSQL  skipped: ${pg.skipped}`);
  if (kafka.admin) ok(`Kafka       ${KAFKA}, topic ${names.topic}`);
  else skip(`Kafka leg skipped (shipping and its sandbox): ${kafka.skipped}`);
  if (rabbit.connection) ok(`RabbitMQ    ${new URL(AMQP).host}, exchange ${names.exchange}`);
  else skip(`RabbitMQ leg skipped (notifications): ${rabbit.skipped}`);

  step('Starting the registry (embedded, SQLite)');
  tmp = mkdtempSync(join(tmpdir(), 'branchline-demo-'));
  // Sandbox databases: a sandbox that declares { type: 'postgres', spec: { from } } gets a copy.
  if (pg.url)
    pgHook = postgresResourceHook({
      connection: { host: PG.host, port: PG.port, user: PG.user },
      ...PG_NAMES,
      allowSources: [PG.database],
    });
  registry = createRegistryServer({
    resourceHooks: pgHook ? [pgHook] : [],
    store: join(tmp, 'registry.db'),
    heartbeatIntervalMs: 200,
    defaultTtlMs: 30 * 60_000,
    log: (level, msg, fields) => {
      if (verbose || level === 'error')
        say(dim(`  [registry] ${level} ${msg} ${fields ? JSON.stringify(fields) : ''}`));
    },
  });
  registryUrl = await registry.listen(0, '127.0.0.1');
  ok(`registry    ${registryUrl}  ${dim(`(store ${join(tmp, 'registry.db')}; dashboard at /)`)}`);

  checkAbort();
  step('Starting the baseline');
  const ports = Object.fromEntries(await Promise.all(SERVICES.map(async (s) => [s, await freePort()])));
  const common = {
    KAFKA_BROKER: kafka.admin ? KAFKA : '',
    KAFKA_TOPIC: names.topic,
    KAFKA_GROUP: names.group,
    AMQP_URL: rabbit.connection ? AMQP : '',
    AMQP_EXCHANGE: names.exchange,
    AMQP_QUEUE: names.queue,
    PG_PREFIX: PG_NAMES.prefix,
  };
  const baseline = [
    startService('payments.mjs', 'payments', undefined, { ...common, PORT: String(ports.payments) }),
    startService('orders.mjs', 'orders', undefined, {
      ...common,
      PORT: String(ports.orders),
      PAYMENTS_TARGET: `127.0.0.1:${ports.payments}`,
      PG_URL: pg.url ?? '',
    }),
    startService('gateway.mjs', 'gateway', undefined, {
      ...common,
      PORT: String(ports.gateway),
      ORDERS_URL: `http://127.0.0.1:${ports.orders}`,
    }),
  ];
  if (kafka.admin)
    baseline.push(
      startService('shipping.mjs', 'shipping', undefined, { ...common, PORT: String(ports.shipping) }),
    );
  if (rabbit.connection) baseline.push(startService('notifications.mjs', 'notifications', undefined, common));
  await waitReady(baseline);
  const kinds = {
    gateway: 'Express',
    orders: 'Fastify',
    payments: 'gRPC',
    shipping: 'Kafka consumer',
    notifications: 'RabbitMQ consumer',
  };
  for (const e of baseline)
    ok(
      `${e.service.padEnd(13)} baseline  ${kinds[e.service].padEnd(17)} ${dim(`${e.ready} (pid ${e.child.pid})`)}`,
    );

  step('Creating three sandboxes through the registry API');
  const sandboxProcs = [];
  for (const sb of SANDBOXES) {
    checkAbort();
    if (sb.service === 'shipping' && !kafka.admin) {
      skip(`sandbox ${sb.name} (${sb.what}) skipped: it needs the Kafka leg`);
      continue;
    }
    if (sb.database && !pg.url) {
      skip(`sandbox ${sb.name} (${sb.what}) skipped: it needs PostgreSQL`);
      continue;
    }
    const resources = sb.database
      ? { [sb.database]: { type: 'postgres', spec: { from: PG.database, services: ['orders'] } } }
      : undefined;
    const doc = await api('PUT', `/v1/sandboxes/${sb.name}`, {
      key: sb.name,
      labels: sb.labels,
      ttl: '30m',
      resources,
    });
    created.push(sb.name);
    ok(
      `PUT /v1/sandboxes/${sb.name} → key ${cyan(doc.key)}  ${dim(
        `(${sb.what}; labels ${Object.entries(sb.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ')})`,
      )}`,
    );
    if (sb.database) legs.sandboxDb = await waitForDatabase(sb);
    const port = await freePort();
    const proc = startService(sb.file, sb.service, sb.name, {
      ...common,
      PORT: String(port),
      PAYMENTS_TARGET: `127.0.0.1:${ports.payments}`,
      PG_URL: pg.url ?? '',
    });
    sandboxProcs.push(proc);
  }
  await waitReady(sandboxProcs);
  for (const p of sandboxProcs)
    ok(
      `${p.service}@${p.sandbox} started and announced itself (POST /v1/sandboxes/${p.sandbox}/heartbeat)  ${dim(`${p.ready} (pid ${p.child.pid})`)}`,
    );

  // Every service learns about the new rules from the registry's watch stream.
  const expected = sandboxProcs.map((p) => `${p.service}=${p.sandbox}`);
  await waitFor(
    () => baseline.every((e) => expected.every((r) => e.rules.includes(r))),
    15_000,
    () =>
      `every baseline service to see the rules ${expected.join(', ')} (seen: ${baseline.map((e) => `${e.service}: ${e.rules.join(' ') || 'none'}`).join('; ')})`,
  );
  ok(
    `every service sees the rules ${expected.map((r) => cyan(r.replace('=', ' ← key '))).join(', ')} ${dim("(from the registry's watch stream)")}`,
  );

  step("Sending traffic: one order with no key, one with each sandbox's key");
  const results = [];
  let n = 0;
  for (const r of REQUESTS) {
    checkAbort();
    if (r.key && !created.includes(r.key)) continue;
    n++;
    const order = `${runId}-${n}`;
    const headers = { 'content-type': 'application/json' };
    if (r.key) headers.baggage = `branchline=${r.key}`;
    say(
      `\n  ${bold(`order ${order}`)} — POST /checkout ${r.key ? `with header ${cyan(`baggage: branchline=${r.key}`)}` : dim('with no routing key')}`,
    );
    const res = await fetch(`http://127.0.0.1:${ports.gateway}/checkout`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ order, item: r.item, cents: r.cents }),
      signal: AbortSignal.any([abort.signal, AbortSignal.timeout(20_000)]),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`the gateway answered ${res.status}: ${JSON.stringify(body)}`);
    const want = [
      'gateway',
      'orders',
      'payments',
      ...(kafka.admin ? ['shipping'] : []),
      ...(rabbit.connection ? ['notifications'] : []),
    ];
    const hops = () => traces.filter((t) => t.order === order);
    let complete = true;
    await waitFor(
      () => want.every((s) => hops().some((t) => t.service === s)),
      25_000,
      () => 'the messages to be consumed',
    ).catch((err) => {
      if (err instanceof Interrupted) throw err;
      complete = false;
    });
    const served = {};
    for (const s of SERVICES) {
      const mine = hops().filter((t) => t.service === s);
      if (!want.includes(s)) {
        served[s] = 'skipped';
        say(`    ${s.padEnd(14)} ${dim('skipped (no broker)')}`);
        continue;
      }
      if (mine.length === 0) {
        served[s] = 'MISSING';
        say(`    ${s.padEnd(14)} ${red('nothing seen within 25 s')}`);
        continue;
      }
      served[s] = mine.map((t) => t.version).join('+');
      for (const t of mine) {
        const who = t.version === 'baseline' ? 'baseline' : yellow(`${t.version} (sandbox)`);
        say(
          `    ${t.service.padEnd(14)} ${who}${' '.repeat(Math.max(1, 20 - `${t.version}${t.version === 'baseline' ? '' : ' (sandbox)'}`.length))}${t.transport.padEnd(6)} ${t.detail}`,
        );
      }
    }
    results.push({ key: r.key, order, served, complete });
  }

  if (legs.sandboxDb) {
    step('One schema change, two databases');
    const columns = await tableColumns([PG.database, legs.sandboxDb.database]);
    const show = (db) => (columns[db] ?? []).join(', ');
    ok(
      `baseline ${PG.database}.demo_orders: ${show(PG.database)}  ${dim('(the baseline code keeps working)')}`,
    );
    ok(`pr-103   ${legs.sandboxDb.database}.demo_orders: ${show(legs.sandboxDb.database)}`);
  }

  // Legs of their own (examples/*-leg.mjs), each using sandbox pr-101's routes from the registry.
  let legsOk = true;
  if (created.includes('pr-101'))
    for (const leg of [natsLeg, bullmqLeg, sqsLeg, mysqlLeg]) {
      checkAbort();
      const out = { step, ok, skip, fail: (m) => say(`  ${red('✗')} ${m}`) };
      if (!(await leg({ registryUrl, runId, out }))) legsOk = false;
    }

  step('Which version served what');
  say(`  ${'key'.padEnd(8)} ${SERVICES.map((s) => s.padEnd(14)).join('')}`.trimEnd());
  for (const r of results)
    say(
      `  ${(r.key ?? '(none)').padEnd(8)} ${SERVICES.map((s) => {
        const v = r.served[s];
        const cell = v.padEnd(14);
        return v === 'baseline'
          ? cell
          : v === 'skipped'
            ? dim(cell)
            : v === 'MISSING'
              ? red(cell)
              : yellow(cell);
      }).join('')}`.trimEnd(),
    );
  say(
    dim(
      `  One shared baseline; each key reached its sandbox's version only where that sandbox overrides a service.`,
    ),
  );
  say(dim(`  Took ${((Date.now() - started) / 1000).toFixed(1)} s.`));
  if (keep) {
    step('The shop keeps running (--keep); Ctrl-C ends it');
    const url = `http://127.0.0.1:${ports.gateway}/checkout`;
    const body = (n) => `'{"order":"mine-${n}","item":"tea","cents":900}'`;
    say(`  curl -s -XPOST ${url} -H 'content-type: application/json' -d ${body(1)}`);
    for (const [i, name] of created.entries())
      say(
        `  curl -s -XPOST ${url} -H 'content-type: application/json' -H 'baggage: branchline=${name}' -d ${body(i + 2)}`,
      );
    say(`  registry: ${registryUrl}  (dashboard at /)`);
    say(
      `  npx branchline --registry ${registryUrl} sandbox list    ${dim('(with Node.js 22 or 24 on PATH: source scripts/node-env.sh)')}`,
    );
    say(dim('  Traces of your requests appear below.'));
    let shown = traces.length;
    bus.on('update', () => {
      for (; shown < traces.length; shown++) {
        const t = traces[shown];
        say(
          `    ${t.order.padEnd(10)} ${t.service.padEnd(14)} ${t.version.padEnd(9)} ${t.transport.padEnd(6)} ${t.detail}`,
        );
      }
    });
    await new Promise((resolve) => abort.signal.addEventListener('abort', resolve));
  }
  return results.every((r) => r.complete) && legsOk;
}

async function cleanup() {
  step('Cleaning up');
  for (const name of created) {
    try {
      await api('DELETE', `/v1/sandboxes/${name}`);
      ok(`DELETE /v1/sandboxes/${name} — its rules stopped routing`);
    } catch (err) {
      skip(`could not delete sandbox ${name}: ${err.message}`);
    }
  }
  if (legs.sandboxDb) {
    const { database } = legs.sandboxDb;
    const left = await tableColumns([database]).catch(() => ({}));
    if (left[database]) say(red(`  database ${database} is still there`));
    else ok(`database ${database} was dropped with sandbox pr-103`);
  }
  if (pgHook) {
    // The snapshot sandbox databases are cloned from (taken on first use); the demo leaves none.
    await pgHook.databases
      .dropSnapshot(PG.database)
      .then(() => ok(`snapshot ${pgHook.databases.snapshotName(PG.database)} removed`))
      .catch((err) => skip(`could not remove the snapshot: ${err.message}`));
  }
  const stopped = await stopAll();
  if (stopped) ok(`stopped ${stopped} service process${stopped === 1 ? '' : 'es'}`);
  if (registry) {
    await registry.close().catch(() => {});
    ok('registry stopped');
  }
  if (legs.kafka?.admin) {
    const admin = legs.kafka.admin;
    try {
      await withTimeout(admin.deleteTopics({ topics: [names.topic] }), 10_000, 'deleting the topic');
      const { groups } = await withTimeout(admin.listGroups(), 10_000, 'listing groups');
      const mine = groups.map((g) => g.groupId).filter((g) => g.startsWith(names.group));
      if (mine.length) await withTimeout(admin.deleteGroups(mine), 10_000, 'deleting groups').catch(() => {});
      ok(`Kafka topic ${names.topic} and consumer groups removed`);
    } catch (err) {
      skip(`Kafka cleanup incomplete: ${err.message}`);
    }
    await admin.disconnect().catch(() => {});
  }
  if (legs.rabbit?.connection) {
    const conn = legs.rabbit.connection;
    try {
      const ch = await conn.createChannel();
      await ch.deleteQueue(names.queue);
      await ch.deleteExchange(names.exchange);
      await ch.close();
      ok(`RabbitMQ queue and exchange removed`);
    } catch (err) {
      skip(`RabbitMQ cleanup incomplete: ${err.message}`);
    }
    await conn.close().catch(() => {});
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  const left = children.filter((c) => !c.exited).length;
  if (left === 0) ok('nothing left running');
  else say(red(`  ${left} process(es) did not stop; killed`));
}

let code = 0;
try {
  code = (await main()) ? 0 : 1;
} catch (err) {
  if (err instanceof Interrupted || abort.signal.aborted) code = 130;
  else {
    say(`\n${red('The demo failed:')} ${err.message}`);
    if (!verbose) say(dim("Run `npm run demo -- --verbose` to see every service's log."));
    code = 1;
  }
} finally {
  await cleanup().catch((err) => say(red(`cleanup failed: ${err.message}`)));
}
process.exit(code);
