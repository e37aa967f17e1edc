import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { type BranchlineRequestInfo, IncomingRouter, type IncomingRoutingOptions } from '@branchline/http';

export type { BranchlineRequestInfo } from '@branchline/http';

/** Options of the Express middleware: the runtime options plus how forwarding behaves. */
export type BranchlineExpressOptions = IncomingRoutingOptions;

/** `req.branchline`, set by the middleware on every request. */
export interface BranchlineRequest extends IncomingMessage {
  branchline: BranchlineRequestInfo;
}

/** An Express middleware (Express 4 and 5) with a handle on its router. */
export interface BranchlineMiddleware {
  (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void;
  /** The shared incoming router (runtime, forwarder). */
  readonly router: IncomingRouter;
  /** Forwards WebSocket upgrades on `server` too; returns an undo function. */
  forwardUpgrades(server: Server): () => void;
  /**
   * Routes on `server` before Express runs: a request for a sandbox is forwarded without Express
   * handling it (the cheapest forwarding), and WebSocket upgrades are forwarded too. The
   * middleware stays mounted and serves every other request as usual. Returns an undo function.
   */
  attach(server: Server): () => void;
  /** Closes the keep-alive pools to sandboxes. */
  close(): Promise<void>;
}

/**
 * The Branchline middleware. Mount it first (before body parsers): a request whose key routes
 * this service to a sandbox is forwarded there; every other request continues with its key as
 * the active routing context, and `req.branchline` tells the app what was decided.
 *
 * Configuration comes from the options and the BRANCHLINE_* environment (code wins), checked now.
 */
export function branchline(options: BranchlineExpressOptions = {}): BranchlineMiddleware {
  const router = new IncomingRouter(options);
  const fallback = router.forwarder.options.fallbackToBaseline;
  const middleware = function branchlineMiddleware(
    req: IncomingMessage,
    res: ServerResponse,
    next: (err?: unknown) => void,
  ): void {
    const earlier = router.routedEarlier(req);
    if (earlier !== undefined) {
      // Routed by `attach(server)` before Express ran, and not forwarded.
      (req as BranchlineRequest).branchline = earlier.info;
      if (!earlier.enter) next();
      else router.continueInContext(earlier, req, next);
      return;
    }
    const route = router.route(req);
    (req as BranchlineRequest).branchline = route.info;
    if (route.target !== undefined) {
      if ((req as { readableDidRead?: boolean }).readableDidRead) {
        next(
          new Error(
            'branchline: the request body was already read when the middleware ran, so it cannot be forwarded to the sandbox; mount branchline() before body parsers',
          ),
        );
        return;
      }
      router.forwarder.forward(
        req,
        res,
        route.target,
        // A closure only when it can be used: forwarding without fallback allocates none.
        fallback ? () => router.continueInContext(route, req, next) : undefined,
      );
      return;
    }
    if (!route.enter) next();
    else router.continueInContext(route, req, next);
  } as BranchlineMiddleware;
  Object.defineProperty(middleware, 'router', { value: router });
  middleware.forwardUpgrades = (server: Server) => router.forwardUpgrades(server);
  middleware.attach = (server: Server) => router.attach(server);
  middleware.close = () => router.close();
  return middleware;
}

declare global {
  namespace Express {
    interface Request {
      /** What Branchline decided for this request. */
      branchline: BranchlineRequestInfo;
    }
  }
}
