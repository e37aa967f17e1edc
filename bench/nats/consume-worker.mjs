// One consumer of bench/nats in its own process, so a raw JetStream consumer and a selective one
// read the same stream at the same moment under the same machine load. Prints one JSON line.
// usage: node consume-worker.mjs <raw|selective> <stream> <messages>
import { createSelectiveConsumer } from '@branchline/nats';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

const [kind, stream, total] = process.argv.slice(2);
const N = Number(total);
const routes = JSON.parse(process.env.BENCH_NATS_ROUTES ?? '{"sandboxes":[]}');
const nc = await connect({ servers: '127.0.0.1:4222', name: `bench-${kind}` });
const js = jetstream(nc);
const durable = `bench_${kind}_${Math.random().toString(36).slice(2)}`;
const consumeOptions = { max_messages: 256 };
let handled = 0;
let first = 0;
let last = 0;
let done;
const finished = new Promise((r) => {
  done = r;
});
// Both kinds are timed from the first delivery to the last decided message.
const onFirst = () => {
  if (!first) first = performance.now();
};

let selective;
if (kind === 'raw') {
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add(stream, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
  });
  const c = await js.consumers.get(stream, durable);
  const messages = await c.consume(consumeOptions);
  (async () => {
    for await (const m of messages) {
      onFirst();
      handled++;
      m.ack();
      if (handled >= N) {
        last = performance.now();
        done();
      }
    }
  })();
} else {
  selective = createSelectiveConsumer(js, {
    stream,
    durable,
    service: 'orders',
    sandbox: null,
    routes,
    consumeOptions,
  });
  // The last message of each stream is one the baseline processes, so the handler sees the end.
  await selective.consume(() => {
    onFirst();
    handled++;
    if (!last && selective.stats.processed + selective.stats.skipped >= N) {
      last = performance.now();
      done();
    }
  });
}
await finished;
if (!last) last = performance.now();
if (selective) await selective.stop();
const jsm = await jetstreamManager(nc);
await jsm.consumers.delete(stream, durable).catch(() => {});
await nc.drain();
console.log(JSON.stringify({ kind, rate: N / ((last - first) / 1000), handled }));
process.exit(0);
