// One service of bench/chain, in its own process:
//   node service.mjs <variant> <name> <port> <next url or -> [routes json] [sandbox name]
// Each service answers `<name>(<what the next service answered>)`, calling the next one over
// node:http with a keep-alive agent; the last one answers `<name>`.
//   plain       a node:http server and a keep-alive http.Agent, no Branchline.
//   branchline  the same service with origin routing from @branchline/http: IncomingRouter reads
//               the key and keeps it active for the request, and a RoutingHttpAgent sends the
//               call to the next service to the sandbox the route table names for the key.
import http from 'node:http';

const [variant, name, portArg, next, routesJson, sandbox] = process.argv.slice(2);
const port = Number(portArg);

function reply(res, text) {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** GETs `url` with `agent`, resolves with the body. */
function call(url, agent, headers) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`${url} answered ${res.statusCode}`)),
      );
    });
    req.on('error', reject);
  });
}

function fail(res, err) {
  res.writeHead(502, { 'content-type': 'text/plain' });
  res.end(`${name}: ${err.message}`);
}

let server;
if (variant === 'plain') {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  server = http.createServer((req, res) => {
    if (next === '-') return reply(res, name);
    // The plain chain relays the caller's baggage by hand, as OpenTelemetry's propagation would:
    // every variant sends the same bytes.
    const baggage = req.headers.baggage;
    call(next, agent, baggage ? { baggage } : {}).then(
      (body) => reply(res, `${name}(${body})`),
      (err) => fail(res, err),
    );
  });
} else if (variant === 'branchline') {
  const { createRuntime } = await import('@branchline/core');
  const { IncomingRouter, RoutingHttpAgent } = await import('@branchline/http');
  const routes = JSON.parse(routesJson);
  const runtime = createRuntime({
    service: name,
    ...(sandbox ? { sandbox } : {}),
    routes: { sandboxes: routes.sandboxes },
  });
  const router = new IncomingRouter({ runtime, service: name });
  // services: baseline address of each service, so the agent knows which service a host is.
  const agent = new RoutingHttpAgent({ runtime, services: routes.services, maxSockets: 256 });
  server = http.createServer((req, res) => {
    const route = router.route(req);
    if (route.target !== undefined) return router.forwarder.forward(req, res, route.target);
    if (next === '-') return reply(res, name);
    // The key is active inside continueInContext: the agent adds it to the call's baggage and
    // sends the call to the key's sandbox when the route table has one for the next service.
    router.continueInContext(route, req, () =>
      call(next, agent, {}).then(
        (body) => reply(res, `${name}(${body})`),
        (err) => fail(res, err),
      ),
    );
  });
} else throw new Error(`unknown variant ${variant}`);

server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => process.stdout.write(`ready ${name} ${port}\n`));
process.on('message', () => process.send?.(process.cpuUsage()));
process.on('SIGTERM', () => process.exit(0));
