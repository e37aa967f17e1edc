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
} as const;

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** A thin JSON client for the registry API; errors become CliErrors with an exit code. */
export class RegistryClient {
  readonly base: string;

  constructor(
    url: string,
    private readonly token?: string,
  ) {
    this.base = url.replace(/\/+$/, '');
  }

  headers(): Record<string, string> {
    const h: Record<string, string> = { 'content-type': 'application/json' };
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  async request<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, {
        method,
        headers: this.headers(),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(
        `cannot reach the registry at ${this.base} (${cause?.code ?? cause?.message ?? (err as Error).message}); is it running? set --registry or BRANCHLINE_REGISTRY`,
        EXIT.unreachable,
      );
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = { message: text };
    }
    if (res.status >= 400) {
      const b = parsed as { message?: string; error?: string };
      const msg = `${method} ${path}: ${res.status} ${b.message ?? b.error ?? text}`;
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
      throw new CliError(msg, code);
    }
    return { status: res.status, body: parsed as T };
  }
}
