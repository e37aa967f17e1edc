import { join } from 'node:path';
import { freePort, type RunningProcess, startNode } from './processes.js';

/** The built CLI (`branchline`); `npm run build` makes it. */
export const CLI_BIN = join(import.meta.dirname, '..', '..', 'cli', 'dist', 'bin.js');

export interface RegistryProcess {
  proc: RunningProcess;
  url: string;
  port: number;
}

export interface RegistryProcessOptions {
  /** More `branchline registry` arguments, e.g. `['--store', file, '--token-file', tokens]`. */
  args?: string[];
  /** Extra environment; `BRANCHLINE_LOG_LEVEL` is `warn` unless set here. */
  env?: Record<string, string | undefined>;
  /** The port to listen on (default: a free one). */
  port?: number;
}

/**
 * Starts `branchline registry` as a real process on loopback and resolves once it listens.
 * Stop it with `proc.stop()`; it is killed anyway when the test process exits.
 */
export async function startRegistryProcess(options: RegistryProcessOptions = {}): Promise<RegistryProcess> {
  const port = options.port ?? (await freePort());
  const proc = startNode(CLI_BIN, ['registry', '--port', String(port), ...(options.args ?? [])], {
    BRANCHLINE_LOG_LEVEL: 'warn',
    ...options.env,
  });
  await proc.waitFor('listening on', 30_000);
  return { proc, url: `http://127.0.0.1:${port}`, port };
}

/**
 * One JSON request to a registry: returns the status and the parsed body (undefined when empty).
 * It does not throw on 4xx/5xx; tests assert on the status.
 */
export async function registryRequest<Body = unknown>(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; body: Body }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(url + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: hand the text back as it came
  }
  return { status: res.status, body: parsed as Body };
}
