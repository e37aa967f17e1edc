import type { EventEmitter } from 'node:events';
import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  type BranchlineRuntime,
  contextWithRoutingKey,
  createRuntime,
  defaultRuntime,
  getRoutingKey,
} from '@branchline/core';
import {
  activeContext,
  counters,
  decideIncoming,
  HOP_MARKER,
  hasOtelContextManager,
  type RouteTable,
  runInContext,
  warnRateLimited,
} from '@branchline/core/transport';
import { type Context, context as otelContext, ROOT_CONTEXT } from '@opentelemetry/api';
import { type ForwardTarget, hasBody, rawHeadersGetter, SandboxForwarder } from './forward.js';
import type { BranchlineRequestInfo, IncomingRoutingOptions } from './types.js';

/** The outcome of routing one incoming request. */
export interface IncomingRoute {
  readonly info: BranchlineRequestInfo;
  /** Set when the request must be forwarded to a sandbox. */
  readonly target: ForwardTarget | undefined;
  /** The context that carries the key, set whenever there is a key. Frameworks restore it around handlers. */
  readonly context: Context | undefined;
  /** The key came from a header, not from the active context: the rest of the request must enter `context`. */
  readonly enter: boolean;
}

const NO_KEY_INFO: BranchlineRequestInfo = Object.freeze({
  key: undefined,
  sandbox: undefined,
  forwarded: false,
});
const NO_KEY: IncomingRoute = Object.freeze({
  info: NO_KEY_INFO,
  target: undefined,
  context: undefined,
  enter: false,
});

const kRouted = Symbol.for('branchline.incoming-route');
interface RoutedRequest extends IncomingMessage {
  [kRouted]?: IncomingRoute;
}

const FORWARD_KEYS = new Set([
  'runtime',
  'connectTimeoutMs',
  'responseTimeoutMs',
  'bodyTimeoutMs',
  'connectTimeout',
  'responseTimeout',
  'bodyTimeout',
  'fallbackToBaseline',
  'connections',
  'pipelining',
  'preserveHost',
]);

/**
 * The incoming side shared by @branchline/express and @branchline/fastify: reads the key (the
 * OpenTelemetry context's baggage first, the headers only when it has none), decides with core's
 * `decideIncoming`, and forwards through a SandboxForwarder.
 */
export class IncomingRouter {
  readonly runtime: BranchlineRuntime;
  readonly forwarder: SandboxForwarder;
  private readonly service: string | undefined;
  private readonly sandbox: string | undefined;

  constructor(options: IncomingRoutingOptions = {}) {
    const runtimeOptions: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(options)) if (!FORWARD_KEYS.has(k)) runtimeOptions[k] = v;
    // With no runtime options, share the process-wide runtime: one registry watch stream per
    // process, whether routes are read by the middleware, fetch routing or a consumer.
    this.runtime =
      options.runtime ??
      (Object.keys(runtimeOptions).length === 0 ? defaultRuntime() : createRuntime(runtimeOptions));
    this.service = this.runtime.config.service;
    this.sandbox = this.runtime.config.sandbox;
    this.forwarder = new SandboxForwarder({
      ...options,
      routes: this.runtime.routes,
      service: this.service,
    });
    if (this.service === undefined && this.sandbox === undefined)
      warnRateLimited(
        'no-service',
        'branchline: BRANCHLINE_SERVICE is not set, so this process never forwards requests to sandboxes; set it (or the service option) to the name the route table uses',
      );
  }

  private lastForward: { table: RouteTable; key: string; route: IncomingRoute } | undefined = undefined;

  /** Routes one request. Without a key this is a context lookup and one header lookup. */
  route(req: IncomingMessage): IncomingRoute {
    const ctx = activeContext();
    let key = getRoutingKey(ctx);
    let fromHeader = false;
    if (key === undefined) {
      // rawHeaders, not req.headers: Node builds the headers object lazily, and a framework that
      // never reads it (Fastify on a GET) should not pay for it because of us.
      key = this.runtime.keys.read(req.rawHeaders, rawHeadersGetter);
      if (key === undefined) return NO_KEY;
      fromHeader = true;
    }
    const forwarded = rawHeadersGetter.get(req.rawHeaders, HOP_MARKER) !== undefined;
    const table = this.runtime.routes.table;
    const context = fromHeader ? contextWithRoutingKey(ctx, key) : ctx;
    const enter = fromHeader;
    if (table === undefined || this.service === undefined)
      return { info: { key, sandbox: undefined, forwarded }, target: undefined, context, enter };
    const d = decideIncoming({
      table,
      service: this.service,
      sandbox: this.sandbox,
      key,
      forwarded,
      transport: 'http',
    });
    if (d.action === 'forward') {
      // Requests with the same key under the same table and a single endpoint get the same
      // (frozen) route: no route, info and target objects per forwarded request.
      const cached = this.lastForward;
      if (
        cached !== undefined &&
        cached.table === table &&
        cached.key === key &&
        cached.route.context === context &&
        cached.route.target!.endpoint === d.endpoint
      )
        return cached.route;
      const route: IncomingRoute = Object.freeze({
        info: Object.freeze({ key, sandbox: d.rule.sandbox, forwarded }),
        target: Object.freeze({ endpoint: d.endpoint, sandbox: d.rule.sandbox, service: this.service }),
        context,
        enter,
      });
      // Not remembered when context is per request (OpenTelemetry) or endpoints rotate.
      if (enter && ctx === ROOT_CONTEXT && d.rule.http.length === 1) this.lastForward = { table, key, route };
      return route;
    }
    if (d.reason === 'loop') {
      counters.loopPrevented++;
      warnRateLimited(
        'loop',
        'branchline: a request already forwarded once would have been forwarded again; serving it here',
        { sandbox: d.rule.sandbox, service: this.service, key },
      );
    }
    const sandbox = d.reason === 'sandbox-instance' ? this.sandbox : 'rule' in d ? d.rule.sandbox : undefined;
    return { info: { key, sandbox, forwarded }, target: undefined, context, enter };
  }

  /**
   * Runs `next` for the rest of the request in the route's context. When the request has a
   * body, its emitter is bound too, so body-parser callbacks (which Node runs in the
   * connection's context, not the request's) still see the key.
   */
  continueInContext(route: IncomingRoute, req: IncomingMessage, next: () => void, bindBody = true): void {
    const ctx = route.context;
    if (ctx === undefined || !route.enter) {
      next();
      return;
    }
    if (bindBody && hasBody(req)) bindEmitter(req, ctx);
    runInContext(ctx, next);
  }

  /**
   * The route of a request `attach` routed before the framework ran and did not forward (or whose
   * sandbox failed with `fallbackToBaseline`), for the framework's current context: never a
   * target. `undefined` when `attach` did not see the request, or the current context holds a
   * key the headers did not: then call `route`.
   */
  routedEarlier(req: IncomingMessage): IncomingRoute | undefined {
    const earlier = (req as RoutedRequest)[kRouted];
    if (earlier === undefined) return undefined;
    // The key was read from the headers before any context existed; OpenTelemetry's HTTP
    // instrumentation may have extracted one into the current context since (with a propagator
    // of its own, even where the headers gave none: then route it as usual).
    const ctx = activeContext();
    const key = earlier.info.key;
    if (key === undefined) return getRoutingKey(ctx) === undefined ? NO_KEY : undefined;
    if (getRoutingKey(ctx) !== undefined)
      return { info: earlier.info, target: undefined, context: ctx, enter: false };
    return { info: earlier.info, target: undefined, context: contextWithRoutingKey(ctx, key), enter: true };
  }

  /** Patches `server.emit` so upgrade requests (WebSocket) whose key selects a sandbox are forwarded. */
  forwardUpgrades(server: Server): () => void {
    return this.patchUpgrades(server);
  }

  /**
   * Routes on `server` before the framework does: the server's request listener (the Express app,
   * Fastify's handler) is wrapped, so a request whose key selects a sandbox is forwarded without
   * the framework seeing it and costs what forwarding costs in a bare `node:http` server, and
   * WebSocket upgrades are forwarded too. The wrapper runs where the listener ran, inside the
   * context OpenTelemetry's HTTP instrumentation sets up, so the baseline's server span and the
   * trace carried to the sandbox are unchanged. Every other request reaches the listener marked
   * with its route, so the middleware or plugin neither routes nor forwards it again
   * (`routedEarlier`). Call it once the server has its request listener. Returns an undo function.
   */
  attach(server: Server, options: { requests?: boolean; upgrades?: boolean } = {}): () => void {
    const undoUpgrades = options.upgrades === false ? () => {} : this.patchUpgrades(server);
    if (options.requests === false) return undoUpgrades;
    const listeners = server.listeners('request') as RequestListener[];
    if (listeners.length === 0) {
      undoUpgrades();
      throw new TypeError(
        'branchline: attach(server) found no request listener on the server; create the server with your app first (http.createServer(app)), then attach',
      );
    }
    const router = this;
    const fallback = this.forwarder.options.fallbackToBaseline;
    const serve =
      listeners.length === 1
        ? listeners[0]!
        : function serveAll(this: Server, req: IncomingMessage, res: ServerResponse) {
            for (const l of listeners) l.call(this, req, res);
          };
    const routeFirst = function branchlineRouteFirst(
      this: Server,
      req: IncomingMessage,
      res: ServerResponse,
    ) {
      const r = router.route(req);
      (req as RoutedRequest)[kRouted] = r;
      if (r.target === undefined) {
        serve.call(this, req, res);
        return;
      }
      router.forwarder.forward(req, res, r.target, fallback ? () => serve.call(this, req, res) : undefined);
    };
    for (const l of listeners) server.removeListener('request', l);
    server.on('request', routeFirst);
    return () => {
      undoUpgrades();
      server.removeListener('request', routeFirst);
      for (const l of listeners) server.on('request', l);
    };
  }

  /** Patches `server.emit` so upgrade requests whose key selects a sandbox are forwarded. */
  private patchUpgrades(server: Server): () => void {
    const original = server.emit;
    const callOriginal = original as unknown as (
      this: Server,
      event: string | symbol,
      ...args: unknown[]
    ) => boolean;
    const router = this;
    // Every server event passes through here, so the common case is one comparison and an
    // `apply` of `arguments`, which V8 forwards without building an array.
    server.emit = function emit(
      this: Server,
      event: string | symbol,
      a1?: unknown,
      a2?: unknown,
      a3?: unknown,
    ): boolean {
      if (event === 'upgrade') {
        const req = a1 as IncomingMessage;
        const r = router.route(req);
        if (r.target !== undefined) {
          router.forwarder.forwardUpgrade(req, a2 as Duplex, a3 as Buffer, r.target);
          return true;
        }
        if (r.enter && r.context !== undefined)
          return runInContext(r.context, () => callOriginal.call(this, event, a1, a2, a3));
      }
      // biome-ignore lint/complexity/noArguments: forwarding every argument without copying them
      return callOriginal.apply(this, arguments as unknown as [string]);
    } as Server['emit'];
    return () => {
      server.emit = original;
    };
  }

  close(): Promise<void> {
    return this.forwarder.close();
  }
}

const kBound = Symbol('branchline.bound');
type Listener = (...args: unknown[]) => unknown;
interface Bindable extends EventEmitter {
  [kBound]?: WeakMap<Listener, Listener>;
}

/**
 * Makes listeners added to `emitter` from now on run in `ctx`. OpenTelemetry's context manager
 * does this itself (`context.bind`); without one, the same is done here for Branchline's store.
 */
export function bindEmitter(emitter: EventEmitter, ctx: Context): void {
  if (hasOtelContextManager()) {
    otelContext.bind(ctx, emitter);
    return;
  }
  const e = emitter as Bindable;
  if (e[kBound] !== undefined) return;
  const map = new WeakMap<Listener, Listener>();
  e[kBound] = map;
  const wrap = (fn: Listener): Listener => {
    let w = map.get(fn);
    if (w === undefined) {
      w = function (this: unknown, ...args: unknown[]) {
        return runInContext(ctx, () => fn.apply(this, args));
      };
      map.set(fn, w);
    }
    return w;
  };
  for (const method of ['on', 'addListener', 'once', 'prependListener', 'prependOnceListener'] as const) {
    const orig = e[method];
    e[method] = function (this: EventEmitter, event: string | symbol, fn: Listener) {
      return orig.call(this, event, typeof fn === 'function' ? wrap(fn) : fn);
    } as EventEmitter['on'];
  }
  for (const method of ['off', 'removeListener'] as const) {
    const orig = e[method];
    e[method] = function (this: EventEmitter, event: string | symbol, fn: Listener) {
      return orig.call(this, event, map.get(fn) ?? fn);
    } as EventEmitter['off'];
  }
}
