import { spawn } from 'node:child_process';
import pg from 'pg';
import { SandboxDatabaseError } from './names.js';
import type { Report } from './requests.js';
import type { DatabaseServer } from './server.js';

// Copying a database in use: pg_dump | pg_restore, with progress by table.

/**
 * Streams `pg_dump -Fc source | pg_restore -d target`, reporting tables as they are loaded.
 * Uncompressed: the stream never leaves the machine, and compressing costs more CPU than it saves.
 */
export async function dumpInto(
  s: DatabaseServer,
  source: string,
  target: string,
  report: Report,
  signal?: AbortSignal,
): Promise<void> {
  const total = await tableCount(s, source);
  report({ phase: 'snapshot', done: 0, total, unit: 'tables', message: `dumping ${source}` });
  const env = clientEnv(s);
  const dump = spawn(
    s.pgDumpPath,
    ['--format=custom', '--compress=0', '--no-password', `--dbname=${source}`],
    {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const restore = spawn(
    s.pgRestorePath,
    ['--no-password', '--exit-on-error', '--verbose', `--dbname=${target}`],
    { env, stdio: ['pipe', 'ignore', 'pipe'] },
  );
  dump.stdout.pipe(restore.stdin);
  restore.stdin.on('error', () => {}); // pg_restore exited early; its exit code says why
  const dumpErr: string[] = [];
  const restoreErr: string[] = [];
  const keep = (list: string[], line: string) => {
    list.push(line);
    if (list.length > 20) list.shift();
  };
  let pending = '';
  let done = 0;
  dump.stderr.setEncoding('utf8').on('data', (d: string) => {
    for (const l of d.split('\n')) if (l.trim()) keep(dumpErr, l);
  });
  restore.stderr.setEncoding('utf8').on('data', (d: string) => {
    pending += d;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const m = /processing data for table "(.+)"/.exec(line);
      if (m) {
        done = Math.min(done + 1, total);
        report({ phase: 'snapshot', done, total, unit: 'tables', message: `copying ${m[1]}` });
      } else if (!/^pg_restore: (creating|processing|executing|connecting|implied|from TOC)/.test(line)) {
        keep(restoreErr, line);
      }
    }
  });
  const onAbort = () => {
    dump.kill('SIGKILL');
    restore.kill('SIGKILL');
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const exited = (p: ReturnType<typeof spawn>, name: string) =>
      new Promise<number>((resolve, reject) => {
        p.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new SandboxDatabaseError(
              'snapshot-failed',
              err.code === 'ENOENT'
                ? `branchline pg: ${name} was not found; install the PostgreSQL client tools matching the server (or set option ${name === s.pgDumpPath ? 'pgDumpPath' : 'pgRestorePath'}), or use snapshotMethod "template" with the baseline idle`
                : `branchline pg: could not run ${name}: ${err.message}`,
            ),
          ),
        );
        p.once('close', (code, sig) => resolve(code ?? (sig ? 128 : 1)));
      });
    const [dumpCode, restoreCode] = await Promise.all([
      exited(dump, s.pgDumpPath),
      exited(restore, s.pgRestorePath),
    ]);
    signal?.throwIfAborted();
    if (dumpCode !== 0 || restoreCode !== 0) {
      throw new SandboxDatabaseError(
        'snapshot-failed',
        `branchline pg: copying "${source}" with pg_dump | pg_restore failed (pg_dump exit ${dumpCode}, pg_restore exit ${restoreCode}): ${[...dumpErr, ...restoreErr].join(' | ') || 'no output'}`,
      );
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

async function tableCount(s: DatabaseServer, source: string): Promise<number> {
  const c = new pg.Client({ ...s.admin, database: source });
  c.on('error', () => {});
  await c.connect();
  try {
    const r = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`,
    );
    return r.rows[0]?.n ?? 0;
  } finally {
    await c.end().catch(() => {});
  }
}

/** Environment for pg_dump/pg_restore: the admin connection's host, port, user and password. */
function clientEnv(s: DatabaseServer): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (s.admin.host) env.PGHOST = s.admin.host;
  if (s.admin.port) env.PGPORT = String(s.admin.port);
  if (s.admin.user) env.PGUSER = s.admin.user;
  if (typeof s.admin.password === 'string') env.PGPASSWORD = s.admin.password;
  return env;
}
