/** Where one request or call is routed: the rule's sandbox, the service, the chosen endpoint. */
export interface SandboxTarget {
  readonly endpoint: string;
  readonly sandbox: string;
  readonly service: string;
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'ETIMEDOUT']);

/** Whether a failure to reach an endpoint was a timeout (504) rather than a refusal (502). */
export function isTimeoutFailure(err: { code?: string }): boolean {
  return TIMEOUT_CODES.has(err.code ?? '');
}

/**
 * The one sentence every sandbox failure starts with, in the forwarder's 502/504 and in the
 * errors of routed outgoing calls: `sandbox "pr-42" (service "payments") at http://… could not
 * be reached (ECONNREFUSED)`.
 */
export function describeSandboxFailure(target: SandboxTarget, err: Error & { code?: string }): string {
  const what = isTimeoutFailure(err) ? 'did not answer in time' : 'could not be reached';
  return `sandbox "${target.sandbox}" (service "${target.service}") at ${target.endpoint} ${what} (${err.code ?? err.message})`;
}

/**
 * A routed outgoing call (fetch/undici or node:http) whose sandbox endpoint failed before it
 * answered. It names the sandbox, the service and the endpoint; `cause` is the original error
 * and `code` is copied from it, so retry logic that checks codes keeps working. Global `fetch`
 * rejects with its own `TypeError: fetch failed`, with this error as its `cause`.
 */
export class SandboxUnreachableError extends Error {
  readonly code: string | undefined;
  readonly sandbox: string;
  readonly service: string;
  readonly endpoint: string;

  constructor(target: SandboxTarget, cause: Error & { code?: string }, baseline?: string) {
    super(
      `branchline: ${describeSandboxFailure(target, cause)}. The call carried that sandbox's routing key, so it went there instead of the baseline of ${target.service}${baseline ? ` (${baseline})` : ''}. Start the sandbox, or make the call without the key.`,
      { cause },
    );
    this.name = 'SandboxUnreachableError';
    this.code = cause.code;
    this.sandbox = target.sandbox;
    this.service = target.service;
    this.endpoint = target.endpoint;
  }
}

const ABORT_CODES = new Set(['ABORT_ERR', 'UND_ERR_ABORTED', 'UND_ERR_ABORT']);

/**
 * Whether a failed routed call's error is about reaching the sandbox: a network or protocol
 * error (one with a code), not the caller's own abort or an error it passed to `destroy()`.
 */
export function isEndpointFailure(err: unknown): err is Error & { code: string } {
  if (!(err instanceof Error) || err instanceof SandboxUnreachableError) return false;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && !ABORT_CODES.has(code) && err.name !== 'AbortError';
}
