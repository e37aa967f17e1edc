import { type BranchlineConfig, loadConfig, readRoutesDocument } from './config.js';
import { getBaggageKey, setBaggageKey } from './context.js';
import { BAGGAGE_KEY_ENV, createKeyReader, type KeyAliases, type KeyReader } from './extract.js';
import { logger, renamedOption } from './log.js';
import { RegistryRouteSource } from './registry-source.js';
import type { RouteSource } from './route-source.js';
import { RouteTable, type RouteTableSpec } from './routes.js';
import { StaticRouteSource } from './static-source.js';

export interface RuntimeOptions extends Partial<Omit<BranchlineConfig, 'routes'>> {
  /** Extra places to read a key from (all off by default). */
  aliases?: KeyAliases;
  /**
   * Where routes come from, instead of what the environment describes: a route source, a route
   * table or its spec, or (as `BRANCHLINE_ROUTES`) a JSON file path or inline JSON.
   */
  routes?: RouteSource | RouteTable | RouteTableSpec | string;
  /** @deprecated Use `routes`. */
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
  const { aliases, routeSource: oldRouteSource, routes: routesOption, ...configOptions } = options;
  const given = renamedOption('createRuntime', routesOption, oldRouteSource, 'routeSource', 'routes');
  // A string is a routes document, like BRANCHLINE_ROUTES; anything else is the routes themselves.
  const routeSource = typeof given === 'string' ? undefined : given;
  // A runtime configured with no name uses the one the process already carries.
  if (configOptions.baggageKey === undefined && !process.env[BAGGAGE_KEY_ENV]?.trim())
    configOptions.baggageKey = getBaggageKey();
  const config = loadConfig({ ...configOptions, routes: typeof given === 'string' ? given : undefined });
  const keys = createKeyReader({ ...aliases, baggageKey: config.baggageKey });
  claimBaggageKey(config.baggageKey);
  let routes: RouteSource;
  if (routeSource === undefined) routes = createRouteSource(config);
  else if (isRouteSource(routeSource)) routes = routeSource;
  else
    routes = new StaticRouteSource(
      routeSource instanceof RouteTable ? routeSource : RouteTable.from(routeSource),
    );
  return { config, routes, keys };
}

let baggageKeyClaimed = false;

/**
 * The baggage member name is a wire-level setting and the active context is process-wide
 * (`getRoutingKey()` takes no runtime), so one name serves the whole process: the first runtime
 * configured with a name sets it, runtimes configured with none follow it, and a later runtime
 * configured with a different one is told that it cannot change it.
 */
function claimBaggageKey(name: string): void {
  if (name === getBaggageKey()) return;
  if (!baggageKeyClaimed) {
    setBaggageKey(name);
    baggageKeyClaimed = true;
    return;
  }
  logger().warn(
    'branchline: this process already carries the routing key under another baggage member name; use one name per process (set BRANCHLINE_BAGGAGE_KEY once)',
    { requested: name, inUse: getBaggageKey() },
  );
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

/**
 * The route source the configuration asks for: the registry when `BRANCHLINE_REGISTRY` is set,
 * the static table from `BRANCHLINE_ROUTES` when that is set, otherwise an empty table (every
 * request is served by baseline).
 */
export function createRouteSource(config: BranchlineConfig): RouteSource {
  if (config.registry !== undefined)
    return new RegistryRouteSource({ registry: config.registry, token: config.token });
  if (config.routes !== undefined)
    return new StaticRouteSource(RouteTable.from(readRoutesDocument(config.routes)));
  return new StaticRouteSource(RouteTable.empty);
}
