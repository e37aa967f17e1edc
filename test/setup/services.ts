import { execSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

/**
 * The real servers tests talk to. Each entry says how to check it (a TCP connect) and how an
 * operator starts it when it is down; the global setup runs `start` only when the check fails.
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
}

export const services: Record<string, ServiceEntry> = {
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
    // An absolute path: package test runs start in packages/<name>, not the repository root.
    start: () => `bash ${JSON.stringify(join(import.meta.dirname, '..', '..', 'scripts', 'kafka.sh'))} start`,
    startTimeoutMs: 300_000,
  },
};

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
      `[test setup] ${entry.name} did not accept connections on ${entry.host}:${entry.port} within ${entry.startTimeoutMs} ms after "${cmd}"`,
    );
  }
}
