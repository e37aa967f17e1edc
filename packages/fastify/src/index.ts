import { Server as HttpServer } from 'node:http';
import { Server as HttpsServer } from 'node:https';
import { activeContext, runInContext } from '@branchline/core/transport';
import {
  type BranchlineRequestInfo,
  IncomingRouter,
  type IncomingRoutingOptions,
  resolveForwardOptions,
} from '@branchline/http';
import type { Context } from '@opentelemetry/api';
import type { FastifyPluginCallback, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';

export type { BranchlineRequestInfo } from '@branchline/http';

/** Options of the Fastify plugin: the runtime options plus how forwarding behaves. */
export interface BranchlineFastifyOptions extends IncomingRoutingOptions {
  /**
   * Route on the HTTP server before Fastify runs (default `true`): a request for a sandbox is
   * forwarded without Fastify's routing, hooks or request objects. `false` routes in an
   * `onRequest` hook instead, so hooks registered before the plugin also run for forwarded
   * requests.
   */
  routeFirst?: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** What Branchline decided for this request. */
    branchline: BranchlineRequestInfo;
  }
  interface FastifyInstance {
    /** The Branchline incoming router (runtime and forwarder) of this instance. */
    branchlineRouter: IncomingRouter;
  }
}

const kContext = Symbol('branchline.context');
interface WithContext {
  [kContext]?: Context | null | undefined;
}

const STRING_OPTIONS = ['service', 'sandbox', 'registry', 'token', 'baggageKey'] as const;

/** Checks the options at registration; a TypeError names the bad option. */
function validate(opts: unknown): BranchlineFastifyOptions {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object')
    throw new TypeError(`@branchline/fastify: options must be an object, got ${typeof opts}`);
  const o = opts as Record<string, unknown>;
  for (const name of STRING_OPTIONS) {
    if (o[name] !== undefined && typeof o[name] !== 'string')
      throw new TypeError(
        `@branchline/fastify: option ${name} must be a string, got ${JSON.stringify(o[name])}`,
      );
  }
  if (o.routeFirst !== undefined && typeof o.routeFirst !== 'boolean')
    throw new TypeError(
      `@branchline/fastify: option routeFirst must be a boolean, got ${JSON.stringify(o.routeFirst)}`,
    );
  // `routes` is a routes document (a string) or the routes themselves (a source, table or spec).
  if (o.routes !== undefined && (o.routes === null || !['string', 'object'].includes(typeof o.routes)))
    throw new TypeError(
      `@branchline/fastify: option routes must be a JSON file path, inline JSON, a route source, a route table or a table spec, got ${JSON.stringify(o.routes)}`,
    );
  try {
    resolveForwardOptions(o);
  } catch (err) {
    throw new TypeError(`@branchline/fastify: ${(err as Error).message.replace(/^branchline: /, '')}`);
  }
  return o as BranchlineFastifyOptions;
}

const branchlinePlugin: FastifyPluginCallback<BranchlineFastifyOptions> = (fastify, opts, done) => {
  const {
    prefix: _p,
    logLevel: _l,
    logSerializers: _s,
    routeFirst,
    ...options
  } = opts as BranchlineFastifyOptions & Record<string, unknown>;
  let router: IncomingRouter;
  try {
    router = new IncomingRouter(validate(options));
  } catch (err) {
    done(err instanceof TypeError ? err : new TypeError((err as Error).message));
    return;
  }
  const fallback = router.forwarder.options.fallbackToBaseline;
  fastify.decorate('branchlineRouter', router);
  fastify.decorateRequest('branchline', null as unknown as BranchlineRequestInfo);
  fastify.decorateRequest(kContext as unknown as string, null);

  // onRequest runs before the body is read, so a forwarded request streams its body untouched.
  fastify.addHook(
    'onRequest',
    function branchlineOnRequest(request: FastifyRequest, reply: FastifyReply, next) {
      // Routed on the server before Fastify ran (see below) and not forwarded: not forwarded here.
      const route = router.routedEarlier(request.raw) ?? router.route(request.raw);
      request.branchline = route.info;
      if (route.target !== undefined) {
        router.forwarder.forward(
          request.raw,
          reply.raw,
          route.target,
          fallback
            ? () => {
                (request as WithContext)[kContext] = route.context;
                router.continueInContext(route, request.raw, next, false);
              }
            : undefined,
        );
        // `next` is not called: Fastify never handles this request; the sandbox's response is
        // written to reply.raw. On fallback, `next` lets Fastify serve it as usual.
        return;
      }
      if (route.context === undefined) {
        next();
        return;
      }
      (request as WithContext)[kContext] = route.context;
      router.continueInContext(route, request.raw, next, false);
    },
  );

  // The handler runs after body parsing, in a callback Node starts outside our context: put the
  // request's context back around it.
  fastify.addHook('onRoute', (routeOptions: RouteOptions) => {
    const handler = routeOptions.handler;
    routeOptions.handler = function branchlineHandler(this: unknown, request, reply) {
      // The decorator starts as null (Fastify's cheap default), so test for both. A request
      // without a body reaches its handler synchronously inside onRequest's context: no second
      // run is needed then.
      const ctx = (request as WithContext)[kContext];
      if (ctx == null || activeContext() === ctx) return handler.call(this as never, request, reply);
      return runInContext(ctx, () => handler.call(this as never, request, reply));
    };
  });

  // Route on the server itself, before Fastify: a request for a sandbox is forwarded without
  // Fastify building its request and reply or running any hook. `inject()` does not pass through
  // the server, so the onRequest hook above still routes those. HTTP/2 servers keep the hook alone.
  const onServer =
    ((fastify.server as object) instanceof HttpServer || (fastify.server as object) instanceof HttpsServer) &&
    routeFirst !== false
      ? router.attach(fastify.server)
      : router.forwardUpgrades(fastify.server as HttpServer);
  fastify.addHook('onClose', (_instance, closed) => {
    onServer();
    router.close().then(() => closed(), closed);
  });
  done();
};

/**
 * The Branchline plugin for Fastify 5. Register it before your routes:
 * `await app.register(branchline, { service: 'orders' })`. Not encapsulated: it applies to the
 * whole instance.
 */
export const branchline = fp(branchlinePlugin, { fastify: '5.x', name: '@branchline/fastify' });
export default branchline;
