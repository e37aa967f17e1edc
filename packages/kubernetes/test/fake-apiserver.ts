// The in-memory FakeKubernetes behind the REST paths the Kubernetes API serves for Deployments
// and Services, on loopback: enough for @kubernetes/client-node to talk to, so the package's
// real API module (api.ts) and `--plugin @branchline/kubernetes/plugin` can be run without a
// cluster. It is not an API server: no admission, no defaulting, no watch, no other kinds.
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubernetesApiError } from '../src/index.js';
import type { FakeKubernetes } from './fake-kubernetes.js';

export interface FakeApiServer {
  url: string;
  /** Every request: `GET /apis/apps/v1/namespaces/shop/deployments/orders`. */
  requests: { method: string; path: string; authorization?: string; body?: unknown }[];
  /** Writes a kubeconfig that points at this server with `token`. */
  kubeconfig(file: string, token: string): string;
  close(): Promise<void>;
}

const ROUTE = /^\/(?:api\/v1|apis\/apps\/v1)\/namespaces\/([^/]+)\/(deployments|services)(?:\/([^/]+))?$/;

async function body(req: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) text += chunk;
  return text ? JSON.parse(text) : undefined;
}

export async function serveFakeKubernetes(fake: FakeKubernetes): Promise<FakeApiServer> {
  const requests: FakeApiServer['requests'] = [];
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const send = (code: number, o: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o));
    };
    const status = (code: number, message: string) =>
      send(code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', message, code });
    try {
      const b = await body(req);
      requests.push({
        method: req.method ?? 'GET',
        path: `${url.pathname}${url.search}`,
        authorization: req.headers.authorization,
        body: b,
      });
      const m = ROUTE.exec(url.pathname);
      const core = url.pathname.startsWith('/api/v1/');
      if (!m || (core ? m[2] !== 'services' : m[2] !== 'deployments'))
        return status(404, `no route ${url.pathname}`);
      const [, ns, plural, name] = m as unknown as [string, string, string, string | undefined];
      const D = plural === 'deployments';
      const selector = url.searchParams.get('labelSelector') ?? undefined;
      if (req.method === 'GET' && !name) {
        const items = D
          ? await fake.listDeployments(ns, selector ?? '')
          : await fake.listServices(ns, selector);
        return send(200, {
          kind: D ? 'DeploymentList' : 'ServiceList',
          apiVersion: D ? 'apps/v1' : 'v1',
          items,
        });
      }
      if (req.method === 'GET' && name) {
        const o = D ? await fake.readDeployment(ns, name) : await fake.readService(ns, name);
        return o ? send(200, o) : status(404, `${plural} "${name}" not found`);
      }
      if (req.method === 'POST' && !name)
        return send(201, D ? await fake.createDeployment(b as never) : await fake.createService(b as never));
      if (req.method === 'PUT' && name)
        return send(
          200,
          D ? await fake.replaceDeployment(b as never) : await fake.replaceService(b as never),
        );
      if (req.method === 'DELETE' && name) {
        const uid = (b as { preconditions?: { uid?: string } } | undefined)?.preconditions?.uid;
        const gone = D ? await fake.deleteDeployment(ns, name, uid) : await fake.deleteService(ns, name, uid);
        return gone
          ? send(200, { kind: 'Status', status: 'Success' })
          : status(404, `${plural} "${name}" not found`);
      }
      return status(405, `${req.method} ${url.pathname} is not served here`);
    } catch (err) {
      if (err instanceof KubernetesApiError) return status(err.status, err.message);
      return status(500, String(err));
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    kubeconfig(file, token) {
      writeFileSync(
        file,
        JSON.stringify({
          apiVersion: 'v1',
          kind: 'Config',
          // client-node speaks plain HTTP only with TLS checks off: loopback, test only.
          clusters: [{ name: 'fake', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
          users: [{ name: 'registry', user: { token } }],
          contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'registry' } }],
          'current-context': 'fake',
        }),
      );
      return file;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
