// gateway — the shop's public HTTP API (Express). The Branchline middleware reads the routing
// key from `baggage` and makes it the request's context; the fetch routing sends calls to
// `orders` to the sandbox the key selects (none in this demo) and carries the key onward.
import { branchline } from '@branchline/express';
import { installFetchRouting } from '@branchline/http';
import express from 'express';
import { log, onShutdown, ready, reportRules, trace } from './lib.mjs';

const ordersUrl = process.env.ORDERS_URL;
installFetchRouting({ services: { orders: ordersUrl } });

const app = express();
const routing = branchline();
app.use(routing); // first, before body parsers
app.use(express.json());

app.post('/checkout', async (req, res) => {
  const { order, item, cents } = req.body;
  trace(order, 'HTTP', `POST /checkout ${item}`, req.branchline.key);
  try {
    const upstream = await fetch(`${ordersUrl}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ order, item, cents }),
    });
    res.status(upstream.status).json(await upstream.json());
  } catch (err) {
    log('orders call failed', err);
    res.status(502).json({ error: `orders is unreachable: ${err.message}` });
  }
});

const server = app.listen(Number(process.env.PORT), '127.0.0.1', () => {
  reportRules();
  ready(`HTTP http://127.0.0.1:${process.env.PORT}`);
});

onShutdown(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await routing.close();
});
