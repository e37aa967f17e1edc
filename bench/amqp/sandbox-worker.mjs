// The sandbox's consumer for bench/amqp's selective-half scenario, in its own process as it is
// in a real sandbox. argv: url queue expected. Reports to the parent over IPC:
// { ready } once consuming, then { done, at } (epoch ms) when `expected` messages were processed.
import { createSelectiveConsumer } from '@branchline/amqplib';
import { createRuntime } from '@branchline/core';

const [url, queue, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
const runtime = createRuntime({
  service: 'orders',
  routes: {
    sandboxes: [{ name: 'sb', key: 'sb', overrides: { orders: { http: 'http://127.0.0.1:1' } } }],
  },
});
let n = 0;
const consumer = createSelectiveConsumer({
  connection: url,
  queue,
  service: 'orders',
  sandbox: 'sb',
  runtime,
  prefetch: 100,
  onMessage: (m, ch) => {
    ch.ack(m);
    if (++n === expected) process.send({ done: true, at: performance.timeOrigin + performance.now() });
  },
});
await consumer.ready();
process.send({ ready: true });
process.on('message', async (m) => {
  if (m === 'close') {
    await consumer.close();
    process.exit(0);
  }
});
