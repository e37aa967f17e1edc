import { formatDuration } from '@branchline/registry';
import { printable } from './format.js';

/** Exit codes of the `branchline` command (docs/cli.md). */
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  notFound: 3,
  auth: 4,
  unreachable: 5,
  conflict: 6,
  notReady: 7,
  timeout: 8,
} as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    /** The registry's answer when it refused the request: its status and JSON body. */
    readonly response?: { status: number; body: { error?: string; message?: string } },
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** Default of `--timeout`: how long one request to the registry may take. */
export const DEFAULT_TIMEOUT_MS = 10_000;

// setTimeout (and so AbortSignal.timeout) holds at most this many milliseconds; more would
// fire at once.
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Checks a `--timeout` in milliseconds: 0 (no limit) up to about 24 days. */
export function checkTimeout(ms: number | undefined, text: string): number {
  if (ms === undefined || !Number.isFinite(ms) || ms < 0 || ms > MAX_TIMEOUT_MS)
    throw new CliError(
      `--timeout ${JSON.stringify(text)} is not a duration between 0 (no limit) and 24d; use e.g. 10s, 500ms, 2m`,
      EXIT.usage,
    );
  return ms;
}

function isTimeout(err: unknown): boolean {
  return (err as { name?: string })?.name === 'TimeoutError';
}

/** The `<title>` of an HTML page, or the start of any other text, for an error message. */
function glimpse(text: string): string {
  const title = /<title[^>]*>([^<]*)<\/title>/i.exec(text)?.[1]?.trim();
  const shown = (title ?? text.replace(/\s+/g, ' ').trim()).slice(0, 80);
  return shown
    ? ` (${title === undefined ? 'starting' : 'page title'} ${JSON.stringify(printable(shown))})`
    : '';
}

/**
 * A thin JSON client for the registry API; errors become CliErrors with an exit code. Every
 * request is bounded by `timeoutMs` (0 = none), the response body included.
 */
export class RegistryClient {
  readonly base: string;

  constructor(
    url: string,
    private readonly token?: string,
    readonly timeoutMs: number = DEFAULT_TIMEOUT_MS,
  ) {
    this.base = url.replace(/\/+$/, '');
  }

  headers(): Record<string, string> {
    const h: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  /** A signal that aborts after the timeout, or undefined when there is none. */
  signal(): AbortSignal | undefined {
    return this.timeoutMs > 0 ? AbortSignal.timeout(this.timeoutMs) : undefined;
  }

  /** The error for a request that took longer than the timeout. */
  timedOut(what: string): CliError {
    return new CliError(
      `the registry at ${this.base} did not answer ${what} within ${formatDuration(this.timeoutMs)} (--timeout or BRANCHLINE_TIMEOUT); check that it is the registry's address and that it is not overloaded`,
      EXIT.timeout,
    );
  }

  /** The error for a request that could not be sent at all. */
  unreachable(err: unknown): CliError {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return new CliError(
      `cannot reach the registry at ${this.base} (${cause?.code ?? cause?.message ?? (err as Error).message}); is it running? set --registry or BRANCHLINE_REGISTRY`,
      EXIT.unreachable,
    );
  }

  /** The error for an answer that is not the registry's JSON (a web page, another service). */
  notARegistry(method: string, path: string, res: Response, text: string, why: string): CliError {
    const type = res.headers.get('content-type')?.split(';')[0]?.trim() || 'no content type';
    return new CliError(
      `${this.base} does not answer like a Branchline registry: ${method} ${path} gave ${res.status} ${printable(res.statusText)} with ${printable(type)}, ${why}${glimpse(text)}. Check --registry (BRANCHLINE_REGISTRY): it should be the registry's base URL, e.g. http://127.0.0.1:7070; a proxy in front of a registry that is down answers like this too`,
      EXIT.unreachable,
    );
  }

  /**
   * Sends one request and returns the parsed JSON. `expect` names a property a real registry's
   * answer always has, so a JSON answer from something else is caught too.
   */
  async request<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    expect?: string,
  ): Promise<{ status: number; body: T }> {
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: this.headers(),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: this.signal(),
      });
    } catch (err) {
      throw isTimeout(err) ? this.timedOut(`${method} ${path}`) : this.unreachable(err);
    }
    try {
      text = await res.text();
    } catch (err) {
      throw isTimeout(err) ? this.timedOut(`${method} ${path}`) : this.unreachable(err);
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      throw this.notARegistry(method, path, res, text, 'not JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw this.notARegistry(method, path, res, text, 'not a JSON object');
    if (res.status >= 400) {
      const b = parsed as { message?: string; error?: string };
      const reason = b.message ?? b.error;
      if (typeof reason !== 'string')
        throw this.notARegistry(method, path, res, text, 'a JSON error without a message');
      const msg = `${method} ${path}: ${res.status} ${printable(reason)}`;
      const code =
        res.status === 401 || res.status === 403
          ? EXIT.auth
          : res.status === 404
            ? EXIT.notFound
            : res.status === 409
              ? EXIT.conflict
              : res.status === 400 || res.status === 413
                ? EXIT.usage
                : EXIT.error;
      throw new CliError(msg, code, { status: res.status, body: b });
    }
    if (expect !== undefined && !(expect in parsed))
      throw this.notARegistry(method, path, res, text, `JSON without "${expect}"`);
    return { status: res.status, body: parsed as T };
  }
}

/** Whether `err` is the registry saying it has no `what` (e.g. "sandbox") of that name. */
export function isNoSuch(err: unknown, what: string): boolean {
  return (
    err instanceof CliError &&
    err.response?.status === 404 &&
    err.response.body.message?.startsWith(`no ${what} named `) === true
  );
}
