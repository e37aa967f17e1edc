// The servers the HTTP benchmark drives, one per process: `node servers.mjs <mode> <port> [sandboxUrl]`.
//   sandbox          a plain node:http server (the upstream every hop ends at)
//   express          plain Express 5           | express-bl   Express 5 + branchline()
//                                               | express-at   the same, attached to the server
//                                                               (routes before Express runs)
//   fastify          plain Fastify 5           | fastify-bl   Fastify 5 + the plugin (routes on the
//                                                               server before Fastify, its default)
//   node-bl          a bare node:http server that only routes (IncomingRouter + forwarder)
//   floor            a node:http server that relays every request to the sandbox with the least
//                    work a relay can do (no Branchline): a fixed request head, the response's
//                    length and body, a fixed response head. Not a usable proxy; the floor for any
//                    forwarding done inside a Node HTTP server.
import http from 'node:http';
import net from 'node:net';

const [mode, portArg, sandboxUrl] = process.argv.slice(2);
const port = Number(portArg);
const body = JSON.stringify({ hello: 'world', instance: mode });
const routes = {
  sandboxes: [
    // `bench-key` sends service `svc` to the sandbox; `other-key` is valid but routes another service.
    { name: 'bench-sb', key: 'bench-key', overrides: { svc: { http: sandboxUrl ?? 'http://127.0.0.1:9' } } },
    { name: 'other-sb', key: 'other-key', overrides: { other: { http: 'http://127.0.0.1:9' } } },
  ],
};
const options = { service: 'svc', routes: routes };

async function main() {
  if (mode === 'sandbox') {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    server.keepAliveTimeout = 60_000;
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
  } else if (mode === 'express' || mode === 'express-bl' || mode === 'express-at') {
    const { default: express } = await import('express');
    const app = express();
    let mw;
    if (mode !== 'express') {
      const { branchline } = await import('@branchline/express');
      mw = branchline(options);
      app.use(mw);
    }
    app.get('/', (_req, res) => res.json({ hello: 'world', instance: mode }));
    const server = http.createServer(app);
    if (mode === 'express-at') mw.attach(server);
    server.keepAliveTimeout = 60_000;
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
  } else if (mode === 'fastify' || mode === 'fastify-bl') {
    const { default: Fastify } = await import('fastify');
    const app = Fastify({ keepAliveTimeout: 60_000 });
    if (mode === 'fastify-bl') {
      const { branchline } = await import('@branchline/fastify');
      await app.register(branchline, options);
    }
    app.get('/', async () => ({ hello: 'world', instance: mode }));
    await app.listen({ port, host: '127.0.0.1' });
  } else if (mode === 'node-bl') {
    const { IncomingRouter } = await import('@branchline/http');
    const router = new IncomingRouter(options);
    const server = http.createServer((req, res) => {
      const route = router.route(req);
      if (route.target !== undefined) return router.forwarder.forward(req, res, route.target);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    server.keepAliveTimeout = 60_000;
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
  } else if (mode === 'floor') {
    const upstream = new URL(sandboxUrl);
    const head = `GET / HTTP/1.1\r\nhost: ${upstream.host}\r\n\r\n`;
    const idle = [];
    const END = Buffer.from('\r\n\r\n');
    const open = () => {
      const s = net.connect(Number(upstream.port), upstream.hostname);
      s.setNoDelay(true);
      let buf = Buffer.alloc(0);
      s.on('data', (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        const end = buf.indexOf(END);
        if (end === -1) return;
        const m = /content-length: *(\d+)/i.exec(buf.toString('latin1', 0, end));
        const need = end + 4 + Number(m[1]);
        if (buf.length < need) return;
        const res = s.res;
        s.res = undefined;
        const out = buf.toString('latin1', end + 4, need);
        buf = buf.subarray(need);
        res.writeHead(200, ['content-type', 'application/json', 'content-length', String(out.length)]);
        res.end(out, 'latin1');
        idle.push(s);
      });
      return s;
    };
    const server = http.createServer((_req, res) => {
      const s = idle.pop() ?? open();
      s.res = res;
      s.write(head, 'latin1');
    });
    server.keepAliveTimeout = 60_000;
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
  } else throw new Error(`unknown mode ${mode}`);
  // The benchmark asks for this process's CPU time over IPC: CPU µs per request is far less
  // sensitive to a busy machine than requests per second.
  process.on('message', () => process.send?.(process.cpuUsage()));
  process.stdout.write(`ready ${mode} ${port}\n`);
}
process.on('SIGINT', () => process.exit(0));
main();
