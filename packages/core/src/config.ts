import { readFileSync } from 'node:fs';
import { BAGGAGE_KEY_ENV, DEFAULT_BAGGAGE_KEY } from './extract.js';
import {
  HTTP_TOKEN_RULE,
  isHttpToken,
  isValidSandboxName,
  isValidServiceName,
  SANDBOX_NAME_RULE,
  SERVICE_NAME_RULE,
} from './rules.js';

/** Runtime identity and wiring. Every field can come from the environment; code wins. */
export interface BranchlineConfig {
  /** `BRANCHLINE_SERVICE`: this process's service name. */
  service?: string;
  /** `BRANCHLINE_SANDBOX`: the sandbox this process belongs to; unset = baseline. */
  sandbox?: string;
  /** `BRANCHLINE_REGISTRY`: registry base URL. */
  registry?: string;
  /** `BRANCHLINE_TOKEN`: bearer token for the registry. */
  token?: string;
  /** `BRANCHLINE_ROUTES`: a route table as a JSON file path or inline JSON. */
  routes?: string;
  /** `BRANCHLINE_BAGGAGE_KEY`: baggage member name, default `branchline`. */
  baggageKey: string;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

const ENV = {
  service: 'BRANCHLINE_SERVICE',
  sandbox: 'BRANCHLINE_SANDBOX',
  registry: 'BRANCHLINE_REGISTRY',
  token: 'BRANCHLINE_TOKEN',
  routes: 'BRANCHLINE_ROUTES',
  baggageKey: BAGGAGE_KEY_ENV,
} as const;

function pick(code: string | undefined, env: NodeJS.ProcessEnv, name: string): string | undefined {
  if (code !== undefined) return code;
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

/**
 * The baggage member name to use, the one rule every package follows: `name` when given in code,
 * else `BRANCHLINE_BAGGAGE_KEY` from `env`, else `DEFAULT_BAGGAGE_KEY`. A name given in code is
 * used as given, so a blank one is refused like any other invalid name rather than quietly
 * replaced; the variable is trimmed, and set but blank counts as unset (as `VAR=` does in a
 * shell). Throws a ConfigError naming the option or the variable when the name is not an HTTP
 * token.
 */
export function resolveBaggageKey(name?: string, env: NodeJS.ProcessEnv = process.env): string {
  const fromCode = name !== undefined;
  const value = fromCode ? name : pick(undefined, env, ENV.baggageKey);
  if (value === undefined) return DEFAULT_BAGGAGE_KEY;
  if (!isHttpToken(value)) {
    throw new ConfigError(
      ENV.baggageKey,
      `branchline: ${fromCode ? 'option baggageKey' : ENV.baggageKey}=${JSON.stringify(value)} is not a valid baggage member name: use ${HTTP_TOKEN_RULE}`,
    );
  }
  return value;
}

/**
 * Reads the configuration from `env` with `options` taking precedence, and validates it.
 * Throws a ConfigError that names the variable (or option) and the bad value.
 */
export function loadConfig(
  options: Partial<BranchlineConfig> = {},
  env: NodeJS.ProcessEnv = process.env,
): BranchlineConfig {
  const where = (field: keyof typeof ENV) => (options[field] !== undefined ? `option ${field}` : ENV[field]);
  const cfg: BranchlineConfig = {
    service: pick(options.service, env, ENV.service),
    sandbox: pick(options.sandbox, env, ENV.sandbox),
    registry: pick(options.registry, env, ENV.registry),
    token: pick(options.token, env, ENV.token),
    routes: pick(options.routes, env, ENV.routes),
    baggageKey: resolveBaggageKey(options.baggageKey, env),
  };
  if (cfg.service !== undefined && !isValidServiceName(cfg.service)) {
    throw new ConfigError(
      ENV.service,
      `branchline: ${where('service')}=${JSON.stringify(cfg.service)} is not a service name: use ${SERVICE_NAME_RULE}`,
    );
  }
  if (cfg.sandbox !== undefined && !isValidSandboxName(cfg.sandbox)) {
    throw new ConfigError(
      ENV.sandbox,
      `branchline: ${where('sandbox')}=${JSON.stringify(cfg.sandbox)} is not a sandbox name: use ${SANDBOX_NAME_RULE}`,
    );
  }
  if (cfg.registry !== undefined) {
    let u: URL | undefined;
    try {
      u = new URL(cfg.registry);
    } catch {
      u = undefined;
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
      throw new ConfigError(
        ENV.registry,
        `branchline: ${where('registry')}=${JSON.stringify(cfg.registry)} must be an http(s) URL such as http://branchline-registry:7070`,
      );
    }
  }
  return cfg;
}

/** Reads `BRANCHLINE_ROUTES`: inline JSON when it starts with `{`, else a file path. */
export function readRoutesDocument(routes: string): unknown {
  const text = routes.trimStart().startsWith('{') ? routes : readRoutesFile(routes);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(
      ENV.routes,
      `branchline: BRANCHLINE_ROUTES is not valid JSON: ${(err as Error).message}`,
    );
  }
}

function readRoutesFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(
      ENV.routes,
      `branchline: BRANCHLINE_ROUTES=${JSON.stringify(path)} could not be read (${(err as NodeJS.ErrnoException).code ?? err}); give a JSON file path or inline JSON`,
    );
  }
}
