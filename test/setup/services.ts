import { execSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

/**
 * The real servers tests talk to. Each entry says how to check it (a TCP connect) and how an
 * operator starts it when it is down; the global setup runs `start` only when the check fails,
 * and only for the projects that name the service in `test: { provide: { services: [...] } }`.
 * Adding a broker is one more entry here.
 */
export interface ServiceEntry {
  name: string;
  host: string;
  port: number;
  /** Shell command an operator would run to start it. */
  start: () => string;
  /** How long to wait for the port after starting, ms. */
  startTimeoutMs: number;
  /** Where the server writes why it did not start, named in the error when it stays down. */
  log?: string;
}

// Shell-quoted absolute paths: package test runs start in packages/<name>, not the repository root.
const script = (name: string) => JSON.stringify(join(import.meta.dirname, '..', '..', 'scripts', name));

export const services = {
  postgres: {
    name: 'PostgreSQL',
    host: '127.0.0.1',
    port: 5432,
    start: () => {
      const version = readdirSync('/etc/postgresql')[0];
      return `pg_ctlcluster --skip-systemctl-redirect ${version} main start`;
    },
    startTimeoutMs: 30_000,
  },
  rabbitmq: {
    name: 'RabbitMQ',
    host: '127.0.0.1',
    port: 5672,
    start: () => 'rabbitmq-server -detached',
    startTimeoutMs: 90_000,
  },
  kafka: {
    name: 'Apache Kafka',
    host: '127.0.0.1',
    port: 9092,
    // Fetches the broker with Maven on first use, formats a KRaft store, waits until ready.
    start: () => `bash ${script('kafka.sh')} start`,
    startTimeoutMs: 300_000,
  },
  nats: {
    name: 'NATS (JetStream)',
    host: '127.0.0.1',
    port: 4222,
    start: () =>
      'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- ' +
      '-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log',
    startTimeoutMs: 30_000,
    log: '/var/log/nats-server.log',
  },
  redis: {
    name: 'Redis',
    host: '127.0.0.1',
    port: 6379,
    // Keeps nothing on disk: a restarted Redis starts empty.
    start: () =>
      'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no ' +
      '--dir /var/lib/redis --logfile /var/log/redis/ci.log',
    startTimeoutMs: 30_000,
    log: '/var/log/redis/ci.log',
  },
  mariadb: {
    name: 'MariaDB',
    host: '127.0.0.1',
    port: 3306,
    // mariadbd switches to the mysql user itself (user = mysql in /etc/mysql) and needs its
    // socket directory, which a reboot empties from /run.
    start: () =>
      'install -d -o mysql -g mysql /run/mysqld && ' +
      'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd',
    startTimeoutMs: 60_000,
    log: '/var/log/mysql/error.log',
  },
  elasticmq: {
    name: 'ElasticMQ (SQS)',
    host: '127.0.0.1',
    port: 9324,
    // Fetches the server with Maven on first use, waits until it answers SQS requests.
    start: () => `bash ${script('elasticmq.sh')} start`,
    startTimeoutMs: 300_000,
  },
} satisfies Record<string, ServiceEntry>;

export type ServiceName = keyof typeof services;

export function canConnect(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export async function waitForPort(host: string, port: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await canConnect(host, port)) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

/** Makes sure a service accepts connections, starting it with the operator's command if not. */
export async function ensureService(entry: ServiceEntry): Promise<void> {
  if (await canConnect(entry.host, entry.port)) return;
  const cmd = entry.start();
  process.stderr.write(
    `[test setup] ${entry.name} is down on ${entry.host}:${entry.port}; starting it: ${cmd}\n`,
  );
  try {
    execSync(cmd, { stdio: 'inherit', timeout: entry.startTimeoutMs });
  } catch (err) {
    throw new Error(`[test setup] could not start ${entry.name} with "${cmd}": ${(err as Error).message}`);
  }
  if (!(await waitForPort(entry.host, entry.port, entry.startTimeoutMs))) {
    throw new Error(
      `[test setup] ${entry.name} did not accept connections on ${entry.host}:${entry.port} within ${entry.startTimeoutMs} ms after "${cmd}"${entry.log ? `; see ${entry.log}` : ''}`,
    );
  }
}
