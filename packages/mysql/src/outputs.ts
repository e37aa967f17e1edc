import { loadConfig } from '@branchline/core';
import type { SandboxDatabaseOutputs } from './types.js';

export interface FetchSandboxDatabaseOptions {
  /** Registry URL. Default `BRANCHLINE_REGISTRY`. */
  registry?: string;
  /** The sandbox's own token (returned once at creation) or a write token. Default `BRANCHLINE_TOKEN`. */
  token?: string;
  /** Default `BRANCHLINE_SANDBOX`. */
  sandbox?: string;
  /** Wait this long for the database to become ready. Default 0 (fail at once when not ready). */
  waitMs?: number;
}

interface ResourceAnswer {
  status?: string;
  error?: string;
  progress?: { phase?: string; done?: number; total?: number; unit?: string };
  outputs?: SandboxDatabaseOutputs | null;
}

/**
 * The connection details of this sandbox's database `resource`, read from the registry with
 * the sandbox's token (they are never in the public sandbox document). For a sandbox workload:
 *
 * ```ts
 * const { url } = await fetchSandboxDatabase('orders-db'); // mysql://…, from BRANCHLINE_REGISTRY/_TOKEN/_SANDBOX
 * ```
 */
export async function fetchSandboxDatabase(
  resource: string,
  options: FetchSandboxDatabaseOptions = {},
): Promise<SandboxDatabaseOutputs> {
  const cfg = loadConfig({ registry: options.registry, token: options.token, sandbox: options.sandbox });
  if (!cfg.registry || !cfg.sandbox) {
    throw new TypeError(
      'branchline mysql: fetchSandboxDatabase needs the registry URL and the sandbox name (options registry/sandbox or BRANCHLINE_REGISTRY/BRANCHLINE_SANDBOX)',
    );
  }
  const url = `${cfg.registry.replace(/\/$/, '')}/v1/sandboxes/${encodeURIComponent(cfg.sandbox)}/resources/${encodeURIComponent(resource)}`;
  const until = Date.now() + (options.waitMs ?? 0);
  for (;;) {
    const res = await fetch(url, { headers: cfg.token ? { authorization: `Bearer ${cfg.token}` } : {} });
    if (res.status === 401 || res.status === 403) {
      throw new Error(
        `branchline mysql: the registry refused the connection details of ${cfg.sandbox}/${resource} (HTTP ${res.status}); use the sandbox's token (BRANCHLINE_TOKEN) or a write token`,
      );
    }
    if (res.status === 404) {
      throw new Error(
        `branchline mysql: sandbox ${cfg.sandbox} has no resource "${resource}" (HTTP 404); check the sandbox's resources`,
      );
    }
    if (!res.ok) throw new Error(`branchline mysql: the registry answered HTTP ${res.status} for ${url}`);
    const body = (await res.json()) as ResourceAnswer;
    if (body.status === 'ready' && body.outputs) return body.outputs;
    if (body.status === 'failed')
      throw new Error(
        `branchline mysql: the database ${cfg.sandbox}/${resource} failed to provision: ${body.error ?? 'no reason given'}`,
      );
    if (Date.now() >= until) {
      const p = body.progress;
      throw new Error(
        `branchline mysql: the database ${cfg.sandbox}/${resource} is not ready (status ${body.status ?? 'unknown'}${p?.phase ? `, ${p.phase}${p.total ? ` ${p.done ?? 0}/${p.total}${p.unit ? ` ${p.unit}` : ''}` : ''}` : ''}); retry later or pass waitMs`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
