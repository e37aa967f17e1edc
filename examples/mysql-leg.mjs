// The MySQL leg of `npm run demo`: a small baseline database of the payments service's fee
// rules on MariaDB (or MySQL), a copy of it for sandbox pr-101 that gets pr-101's new fee rule
// and column, and a routed mysql2 pool (@branchline/mysql) that sends a query with no key to the
// baseline and the same query inside the key pr-101 to the copy. Routes (which key belongs to
// which sandbox) come from the demo's registry.
//
// The copy is made with the package's provisioning API directly (`createSandboxDatabases`), not
// through the registry's `mysql` resource hook: the demo's registry is started before it knows
// whether MariaDB is reachable, and pr-101 is created without resources, so the leg provisions
// and drops the copy itself and tells the pool which database is pr-101's (`resolveDatabase`).
// In a real setup, `mysqlResourceHook` does both with the sandbox's lifecycle.
//
// Runs when MariaDB/MySQL is reachable on 127.0.0.1:3306 as root without a password
// (BRANCHLINE_MYSQL_URL), and drops both databases it created afterwards.
import { reachable } from './reachable.mjs';

const MYSQL = process.env.BRANCHLINE_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306';

/** The admin URL pointed at `database`. */
function urlOf(database) {
  const u = new URL(MYSQL);
  u.pathname = `/${database}`;
  return u.toString();
}

/**
 * Runs the leg and prints through `out` ({ step, ok, skip, fail }). Returns true when the query
 * with no key read the baseline and the query with the key read the sandbox's copy (or the leg
 * was skipped), false otherwise; never throws.
 */
export async function mysqlLeg({ registryUrl, runId, sandbox = 'pr-101', service = 'payments', out }) {
  out.step(`MySQL: the same query reads the ${service} database of its key`);
  let server;
  try {
    server = new URL(MYSQL);
    if (server.protocol !== 'mysql:' && server.protocol !== 'mariadb:') throw new Error('not mysql:');
  } catch {
    out.fail(`MySQL leg: BRANCHLINE_MYSQL_URL=${MYSQL} is not a URL such as mysql://root@127.0.0.1:3306`);
    return false;
  }
  const host = server.hostname || '127.0.0.1';
  const port = Number(server.port || 3306);
  if (!(await reachable(host, port))) {
    out.skip(
      `MySQL leg skipped: no MariaDB or MySQL on ${host}:${port}; start MariaDB (mariadbd) and run the demo again`,
    );
    return true;
  }
  const base = `bldemo_fees_${runId}`;
  let admin;
  let databases;
  let copy;
  let routes;
  let pool;
  let baseCreated = false;
  let good = false;
  try {
    const [{ createRuntime, withRoutingKey }, { createRegistrySource }, bl, { default: mysql }] =
      await Promise.all([
        import('@branchline/core'),
        import('@branchline/core/transport'),
        import('@branchline/mysql'),
        import('mysql2/promise'),
      ]);
    admin = await mysql.createConnection({ uri: MYSQL, connectTimeout: 5000 });
    await admin.query(`CREATE DATABASE \`${base}\``);
    baseCreated = true;
    await admin.query(
      `CREATE TABLE \`${base}\`.fee_rules (id int PRIMARY KEY, rule varchar(40) NOT NULL, percent decimal(4,2) NOT NULL)`,
    );
    await admin.query(
      `INSERT INTO \`${base}\`.fee_rules VALUES (1, 'standard', 2.90), (2, 'wholesale', 1.50)`,
    );
    out.ok(`baseline database ${base}: fee_rules (id, rule, percent), 2 rows`);

    // The demo's own names, so its copies never mix with other sandbox databases on the server.
    databases = bl.createSandboxDatabases({
      connection: MYSQL,
      prefix: 'bldemo_sb_',
      catalogue: 'branchline_demo_databases',
      allowSources: [base],
    });
    const started = Date.now();
    const outputs = await databases.provision({ sandbox, source: base });
    copy = outputs.database;
    // pr-101's migration: a new column and its new rule, in its copy only.
    await admin.query(`ALTER TABLE \`${copy}\`.fee_rules ADD COLUMN fixed_cents int NOT NULL DEFAULT 0`);
    await admin.query(`INSERT INTO \`${copy}\`.fee_rules VALUES (3, 'new rule', 2.00, 200)`);
    out.ok(
      `sandbox database ${copy}: a copy of ${base} for ${sandbox} in ${((Date.now() - started) / 1000).toFixed(1)} s, plus a column and a row of its own`,
    );

    routes = createRegistrySource({ registry: registryUrl });
    await routes.ready(5000);
    pool = bl.createRoutedPool({
      uri: urlOf(base),
      connectionLimit: 2,
      runtime: createRuntime({ routes, service }),
      resolveDatabase: (s) => (s.name === sandbox ? copy : undefined),
    });
    pool.on('error', () => {}); // a pooled connection ended by the drop below
    const sql = 'SELECT *, DATABASE() AS db FROM fee_rules ORDER BY id';
    const read = async () => {
      const [rows, fields] = await pool.query(sql);
      return {
        db: rows[0]?.db,
        rows: rows.map((r) => r.rule),
        columns: fields.map((f) => f.name).filter((n) => n !== 'db'),
      };
    };
    const plain = await read();
    const keyed = await withRoutingKey(sandbox, read);
    good = true;
    for (const [text, got, want] of [
      ['no key', plain, base],
      [`key ${sandbox}`, keyed, copy],
    ]) {
      const line = `query with ${text.padEnd(10)} → ${got.db}: ${got.rows.length} rows (${got.rows.join(', ')}); columns ${got.columns.join(', ')}`;
      if (got.db === want) out.ok(line);
      else {
        out.fail(`${line}; expected ${want}`);
        good = false;
      }
    }
  } catch (err) {
    out.fail(`MySQL leg failed: ${err.message}`);
    good = false;
  } finally {
    await pool?.end().catch(() => {});
    await routes?.close().catch(() => {});
    if (copy)
      await databases.drop({ sandbox, source: base }).catch((err) => {
        out.fail(`could not drop ${copy}: ${err.message}`);
        good = false;
      });
    if (admin) {
      try {
        if (baseCreated) await admin.query(`DROP DATABASE IF EXISTS \`${base}\``);
        const [left] = await admin.query(
          'SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?, ?)',
          [base, copy ?? base],
        );
        if (left.length) {
          out.fail(`databases left behind: ${left.map((r) => r.name).join(', ')}`);
          good = false;
        } else out.ok(`${copy ? `${copy} and ` : ''}${base} dropped`);
      } catch (err) {
        out.fail(`could not drop ${base}: ${err.message}`);
        good = false;
      }
      await admin.end().catch(() => {});
    }
  }
  return good;
}
