import { once } from 'node:events';
import {
  createServer,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { routingBaggage } from '@branchline/core';
import { renamedOption } from '@branchline/core/transport';
import { baggageKeyOf, baggageWithKey, checkKey, type KeyHeaderOptions } from './headers.js';

export interface KeyProxyOptions extends KeyHeaderOptions {
  /** The routing key to add to every request. */
  key: string;
  /** Where requests go: an http(s) URL, optionally with a path prefix (`http://gateway.staging/api`). */
  to: string;
  /** Port to listen on. Default 0 (the OS picks one; read it from `proxy.port`). */
  port?: number;
  /** Address to bind. Default `127.0.0.1`: the proxy adds a key, so keep it off the network. */
  host?: string;
  /** Milliseconds to wait for the target's response headers before answering 504. Default 30000. */
  responseTimeoutMs?: number;
  /** @deprecated Use `responseTimeoutMs`. */
  responseTimeout?: number;
}

/** A running key-adding proxy. */
export interface KeyProxy {
  /** `http://127.0.0.1:<port>`: point the tool here. */
  readonly url: string;
  readonly port: number;
  readonly key: string;
  /** The header the proxy adds, e.g. `baggage: branchline=pr-42`. */
  readonly header: string;
  /** The target, normalised. */
  readonly to: string;
  /** Requests (and WebSocket upgrades) relayed so far. */
  readonly requests: number;
  close(): Promise<void>;
}

// Connection-scoped headers (RFC 9110 §7.6.1) are never relayed.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = new Set(
    String(headers.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k)) continue;
    out[k] = v;
  }
  return out;
}

function parseTarget(to: string): URL {
  let u: URL;
  try {
    u = new URL(to);
  } catch {
    throw new TypeError(
      `@branchline/testing: to ${JSON.stringify(to)} is not a URL; give the service's address, e.g. http://gateway.staging:8080`,
    );
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new TypeError(`@branchline/testing: to ${JSON.stringify(to)} must be an http:// or https:// URL`);
  if (u.search || u.hash)
    throw new TypeError(
      `@branchline/testing: to ${JSON.stringify(to)} must not carry a query or fragment; requests bring their own`,
    );
  return u;
}

/**
 * Starts a local HTTP proxy that relays every request to `to` with the routing key added to its
 * `baggage` header — for tools that cannot set headers (a browser without extensions, a mobile
 * simulator, a load tester, a webhook sender). Bodies stream both ways; WebSocket upgrades are
 * relayed too; the `Host` header becomes the target's, and redirects to the target are rewritten
 * to point back at the proxy. `branchline proxy --key K --to URL` runs one from the command line.
 */
export async function startKeyProxy(options: KeyProxyOptions): Promise<KeyProxy> {
  if (typeof options !== 'object' || options === null)
    throw new TypeError('@branchline/testing: startKeyProxy needs { key, to }');
  const key = checkKey(options.key, 'key');
  const target = parseTarget(options.to);
  const baggageKey = baggageKeyOf(options);
  const host = options.host ?? '127.0.0.1';
  const responseTimeout =
    renamedOption(
      '@branchline/testing startKeyProxy',
      options.responseTimeoutMs,
      options.responseTimeout,
      'responseTimeout',
      'responseTimeoutMs',
    ) ?? 30_000;
  if (!Number.isFinite(responseTimeout) || responseTimeout <= 0)
    throw new TypeError(
      `@branchline/testing: option responseTimeoutMs=${JSON.stringify(responseTimeout)} must be a positive number of milliseconds`,
    );
  const secure = target.protocol === 'https:';
  const send = secure ? httpsRequest : httpRequest;
  const agent = secure ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  const prefix = target.pathname.replace(/\/+$/, '');
  const targetOrigin = target.origin;
  let requests = 0;
  let proxyOrigin = '';

  const upstreamOptions = (req: IncomingMessage, headers: OutgoingHttpHeaders) => ({
    protocol: target.protocol,
    hostname: target.hostname.replace(/^\[|\]$/g, ''),
    port: target.port || (secure ? 443 : 80),
    method: req.method,
    path: prefix + (req.url ?? '/'),
    headers,
  });

  const withKeyHeaders = (req: IncomingMessage): OutgoingHttpHeaders => {
    const headers = endToEnd(req.headers);
    headers.host = target.host;
    const existing = req.headers.baggage;
    headers.baggage = baggageWithKey(
      Array.isArray(existing) ? existing.join(',') : existing,
      key,
      baggageKey,
    );
    return headers;
  };

  const fail = (res: ServerResponse, status: number, message: string) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`branchline proxy: ${message}\n`);
  };

  const server = createServer((req, res) => {
    requests++;
    const upstream = send({ ...upstreamOptions(req, withKeyHeaders(req)), agent });
    const timer = setTimeout(() => {
      upstream.destroy();
      fail(res, 504, `${targetOrigin} did not answer within ${responseTimeout} ms`);
    }, responseTimeout);
    upstream.on('response', (up) => {
      clearTimeout(timer);
      const headers = endToEnd(up.headers);
      const location = up.headers.location;
      if (typeof location === 'string' && location.startsWith(targetOrigin)) {
        const rest = location.slice(targetOrigin.length);
        headers.location =
          proxyOrigin + (prefix && rest.startsWith(prefix) ? rest.slice(prefix.length) || '/' : rest);
      }
      res.writeHead(up.statusCode ?? 502, up.statusMessage, headers);
      up.pipe(res);
      up.on('error', () => res.destroy());
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      fail(
        res,
        502,
        `could not reach ${targetOrigin} (${err.code ?? err.message}); is the service running at that address?`,
      );
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });

  // Upgraded sockets leave the server's bookkeeping; close() ends them itself.
  const tunnels = new Set<Socket>();
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    requests++;
    tunnels.add(socket);
    socket.on('close', () => tunnels.delete(socket));
    const headers = withKeyHeaders(req);
    headers.connection = 'Upgrade';
    headers.upgrade = req.headers.upgrade ?? 'websocket';
    // A fresh connection per upgrade: upgraded sockets never return to a pool.
    const upstream = send({ ...upstreamOptions(req, headers), agent: false });
    upstream.on('upgrade', (up, upSocket, upHead) => {
      const lines = [`HTTP/1.1 ${up.statusCode ?? 101} ${up.statusMessage ?? 'Switching Protocols'}`];
      for (let i = 0; i < up.rawHeaders.length; i += 2)
        lines.push(`${up.rawHeaders[i]}: ${up.rawHeaders[i + 1]}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (upHead.length) socket.write(upHead);
      if (head.length) upSocket.write(head);
      upSocket.pipe(socket).pipe(upSocket);
      upSocket.on('error', () => socket.destroy());
      socket.on('error', () => upSocket.destroy());
      upSocket.on('close', () => socket.destroy());
      socket.on('close', () => upSocket.destroy());
    });
    upstream.on('response', (up) => {
      // The target refused the upgrade: relay its answer and close.
      const lines = [`HTTP/1.1 ${up.statusCode} ${up.statusMessage}`, 'connection: close'];
      for (const [k, v] of Object.entries(endToEnd(up.headers))) lines.push(`${k}: ${String(v)}`);
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      up.pipe(socket);
    });
    upstream.on('error', () => {
      socket.end('HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    });
    socket.on('error', () => upstream.destroy());
    upstream.end();
  });

  server.listen(options.port ?? 0, host);
  await once(server, 'listening');
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  proxyOrigin = `http://${shownHost}:${address.port}`;
  let closing: Promise<void> | undefined;
  return {
    url: proxyOrigin,
    port: address.port,
    key,
    header: `baggage: ${routingBaggage(key, baggageKey)}`,
    to: target.href.replace(/\/$/, ''),
    get requests() {
      return requests;
    },
    close() {
      closing ??= (async () => {
        const closed = once(server, 'close');
        server.close();
        server.closeAllConnections();
        for (const s of tunnels) s.destroy();
        agent.destroy();
        await closed;
      })();
      return closing;
    },
  };
}
