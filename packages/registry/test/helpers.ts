import { request } from 'node:http';
import { createRegistryServer, type RegistryServer, type RegistryServerOptions } from '../src/index.js';

export interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

export interface Running {
  registry: RegistryServer;
  url: string;
  logs: LogLine[];
}

const running: Running[] = [];

/** A registry on an in-memory store and port 0, its log lines collected. */
export async function startRegistry(options: RegistryServerOptions = {}): Promise<Running> {
  const logs: LogLine[] = [];
  const registry = createRegistryServer({
    store: ':memory:',
    log: (level, msg, fields) => logs.push({ level, msg, fields }),
    ...options,
  });
  const url = await registry.listen(0);
  const r = { registry, url, logs };
  running.push(r);
  return r;
}

export async function stopRegistries(): Promise<void> {
  for (const r of running.splice(0)) await r.registry.close();
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  // biome-ignore lint/suspicious/noExplicitAny: JSON documents under test
  json: any;
}

/**
 * One request through node:http, so every header (Origin included) goes out exactly as given
 * and the path is sent as written, malformed escapes and all.
 */
export function send(
  url: string,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, headers: options.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = text;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A JSON write, as the CLI and the SDKs send it. */
export function sendJson(
  url: string,
  method: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return send(url, method, path, {
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}
