// Reading request bodies and writing JSON answers: the registry's HTTP plumbing, shared by the
// router and the webhook handler.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { ClientGoneError, checkJsonBody } from './http-guards.js';
import { RegistryError } from './state.js';

export type LogFn = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** Log lines as JSON on stderr (the default of the `log` option). */
export function defaultLog(level: string, msg: string, fields?: Record<string, unknown>): void {
  process.stderr.write(
    `${JSON.stringify({ level, time: Date.now(), name: 'branchline-registry', msg, ...fields })}\n`,
  );
}

/** A comma-separated list from an environment variable. */
export function listFromEnv(name: string): string[] {
  return (process.env[name] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

export function notFound(what: string, name: string): RegistryError {
  return new RegistryError(404, 'not_found', `no ${what} named ${JSON.stringify(name)}`);
}

export function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (req.destroyed && !req.complete) {
      reject(new ClientGoneError());
      return;
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      req.resume();
      reject(
        new RegistryError(413, 'body_too_large', `the body is ${declared} bytes; the limit is ${limit}`),
      );
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(new RegistryError(413, 'body_too_large', `the body exceeds the limit of ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    // A client that goes away mid-body is no failure of the registry (see ClientGoneError).
    req.once('error', (err) => reject(req.complete ? err : new ClientGoneError()));
    req.once('close', () => {
      if (!req.complete) reject(new ClientGoneError());
    });
  });
}

export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const raw = await readBody(req, limit);
  checkJsonBody(req, raw);
  if (raw.length === 0) return {};
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw new RegistryError(400, 'invalid_json', `the body is not valid JSON: ${(err as Error).message}`);
  }
}
