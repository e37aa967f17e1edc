// A sandbox as the registry answers it, and waiting for its resources to become ready.
import { CliError, EXIT, type RegistryClient } from '../client.js';
import { printable } from '../format.js';
import type { Out } from './context.js';

export interface SandboxJson {
  name: string;
  key: string;
  status: string;
  overrides: Record<string, { http?: string | string[]; grpc?: string | string[] }>;
  /** The overrides the last PUT gave (`overrides` adds what workloads announced). */
  declared?: Record<string, { http?: string | string[]; grpc?: string | string[] }>;
  labels: Record<string, string>;
  expiresAt: number | null;
  deletedAt?: number | null;
  resources?: Record<
    string,
    {
      type: string;
      spec?: Record<string, unknown>;
      status: string;
      error?: string;
      progress?: Record<string, unknown>;
    }
  >;
  header?: string;
  sandboxToken?: string;
}

/** One line saying where each resource stands, e.g. `db: provisioning [####......] 3/10 MB`. */
export function progressLine(s: SandboxJson): string {
  const parts = Object.entries(s.resources ?? {}).map(([n, r]) => {
    const p = r.progress as { done?: number; total?: number; unit?: string; phase?: string } | undefined;
    const pr = p?.total
      ? ` ${progressBar(p.done ?? 0, p.total)} ${p.done ?? 0}/${p.total}${p.unit ? ` ${p.unit}` : ''}`
      : p?.phase
        ? ` ${p.phase}`
        : '';
    return `${n}: ${r.status}${pr}`;
  });
  return printable(parts.length ? parts.join(', ') : s.status);
}

/** Why the sandbox failed: each failed resource with the error its hook reported. */
export function failureText(name: string, s: SandboxJson): string {
  const failed = Object.entries(s.resources ?? {})
    .filter(([, r]) => r.status === 'failed')
    .map(([n, r]) => `${n} (${r.type}): ${r.error ?? 'failed without an error message'}`);
  return printable(
    `sandbox ${name} failed to become ready: ${failed.length ? failed.join('; ') : progressLine(s)}`,
  );
}

/** A 20-cell text bar, e.g. `[#########...........]`. */
function progressBar(done: number, total: number): string {
  const cells = 20;
  const filled = Math.max(0, Math.min(cells, Math.round((done / total) * cells)));
  return `[${'#'.repeat(filled)}${'.'.repeat(cells - filled)}]`;
}

/**
 * Polls the sandbox until it is ready; throws (exit 7) when it failed or `timeoutMs` passed.
 * Progress goes to stderr (a spinner on a terminal, one line per change otherwise) unless quiet.
 */
export async function waitReady(
  c: RegistryClient,
  name: string,
  s: SandboxJson,
  timeoutMs: number,
  out: Out,
  quiet: boolean,
): Promise<SandboxJson> {
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  const deadline = Date.now() + timeoutMs;
  let i = 0;
  let lastLine = '';
  while (s.status !== 'ready') {
    if (s.status === 'failed') throw new CliError(failureText(name, s), EXIT.notReady);
    if (Date.now() > deadline)
      throw new CliError(
        `sandbox ${name} not ready after ${timeoutMs} ms: ${progressLine(s)}`,
        EXIT.notReady,
      );
    const line = `${frames[i++ % frames.length]} waiting for ${name}: ${progressLine(s)}`;
    if (!quiet) {
      if (out.isTTY) process.stderr.write(`\r\x1b[2K${line}`);
      else if (line.slice(2) !== lastLine) out.err(line);
      lastLine = line.slice(2);
    }
    await new Promise((r) => setTimeout(r, 250));
    const token = s.sandboxToken;
    s = {
      ...(await c.request<SandboxJson>('GET', `/v1/sandboxes/${encodeURIComponent(name)}`, undefined, 'name'))
        .body,
      sandboxToken: token,
      header: s.header,
    };
  }
  if (!quiet && out.isTTY) process.stderr.write('\r\x1b[2K');
  return s;
}
