import { loadConfig } from '../config.js';

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

interface ResourceAnswer<T> {
  status?: string;
  error?: string;
  progress?: { phase?: string; done?: number; total?: number; unit?: string };
  outputs?: T | null;
}

/**
 * The private outputs of this sandbox's database `resource`, read from the registry with the
 * sandbox's token (they are never in the public sandbox document). `driver` names the adapter
 * in error messages (`branchline <driver>: …`). The database packages wrap this as
 * `fetchSandboxDatabase`, typed with their own outputs.
 */
export async function fetchDatabaseOutputs<T>(
  driver: string,
  resource: string,
  options: FetchSandboxDatabaseOptions = {},
): Promise<T> {
  const tag = `branchline ${driver}:`;
  const cfg = loadConfig({ registry: options.registry, token: options.token, sandbox: options.sandbox });
  if (!cfg.registry || !cfg.sandbox) {
    throw new TypeError(
      `${tag} fetchSandboxDatabase needs the registry URL and the sandbox name (options registry/sandbox or BRANCHLINE_REGISTRY/BRANCHLINE_SANDBOX)`,
    );
  }
  const url = `${cfg.registry.replace(/\/$/, '')}/v1/sandboxes/${encodeURIComponent(cfg.sandbox)}/resources/${encodeURIComponent(resource)}`;
  const until = Date.now() + (options.waitMs ?? 0);
  for (;;) {
    const res = await fetch(url, { headers: cfg.token ? { authorization: `Bearer ${cfg.token}` } : {} });
    if (res.status === 401 || res.status === 403) {
      throw new Error(
        `${tag} the registry refused the connection details of ${cfg.sandbox}/${resource} (HTTP ${res.status}); use the sandbox's token (BRANCHLINE_TOKEN) or a write token`,
      );
    }
    if (res.status === 404) {
      throw new Error(
        `${tag} sandbox ${cfg.sandbox} has no resource "${resource}" (HTTP 404); check the sandbox's resources`,
      );
    }
    if (!res.ok) throw new Error(`${tag} the registry answered HTTP ${res.status} for ${url}`);
    const body = (await res.json()) as ResourceAnswer<T>;
    if (body.status === 'ready' && body.outputs) return body.outputs;
    if (body.status === 'failed')
      throw new Error(
        `${tag} the database ${cfg.sandbox}/${resource} failed to provision: ${body.error ?? 'no reason given'}`,
      );
    if (Date.now() >= until) {
      const p = body.progress;
      throw new Error(
        `${tag} the database ${cfg.sandbox}/${resource} is not ready (status ${body.status ?? 'unknown'}${p?.phase ? `, ${p.phase}${p.total ? ` ${p.done ?? 0}/${p.total}${p.unit ? ` ${p.unit}` : ''}` : ''}` : ''}); retry later or pass waitMs`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
