import { type BranchlineConfig, loadConfig } from './config.js';
import { setBaggageKey } from './context.js';
import { createKeyReader, type KeyAliases, type KeyReader } from './extract.js';
import { createRouteSource, type RouteSource, StaticRouteSource } from './route-source.js';
import { RouteTable, type RouteTableSpec } from './routes.js';

export interface RuntimeOptions extends Partial<BranchlineConfig> {
  /** Extra places to read a key from (all off by default). */
  aliases?: KeyAliases;
  /** A route source or table to use instead of the one the env describes. */
  routeSource?: RouteSource | RouteTable | RouteTableSpec;
}

/** What every transport adapter needs: who this process is, where routes come from, how keys are read. */
export interface BranchlineRuntime {
  readonly config: BranchlineConfig;
  readonly routes: RouteSource;
  readonly keys: KeyReader;
}

function isRouteSource(v: unknown): v is RouteSource {
  return typeof v === 'object' && v !== null && typeof (v as RouteSource).subscribe === 'function';
}

/** Builds a runtime from options and the environment (code wins); validates everything now. */
export function createRuntime(options: RuntimeOptions = {}): BranchlineRuntime {
  const { aliases, routeSource, ...configOptions } = options;
  const config = loadConfig(configOptions);
  const keys = createKeyReader({ ...aliases, baggageKey: config.baggageKey });
  setBaggageKey(config.baggageKey);
  let routes: RouteSource;
  if (routeSource === undefined) routes = createRouteSource(config);
  else if (isRouteSource(routeSource)) routes = routeSource;
  else
    routes = new StaticRouteSource(
      routeSource instanceof RouteTable ? routeSource : RouteTable.from(routeSource),
    );
  return { config, routes, keys };
}

let shared: BranchlineRuntime | undefined;

/** The process-wide runtime built from the environment on first use (never at import time). */
export function defaultRuntime(): BranchlineRuntime {
  shared ??= createRuntime();
  return shared;
}

/** Replaces the process-wide runtime (tests, or apps that configure Branchline in code). */
export function setDefaultRuntime(runtime: BranchlineRuntime | undefined): void {
  shared = runtime;
}
