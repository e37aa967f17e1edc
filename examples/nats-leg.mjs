// The NATS leg of `npm run demo`: a JetStream stream read by two selective consumers of the
// payments service — the baseline's and sandbox pr-101's, each through its own durable — with
// routes from the demo's registry. One message is published with no key and one inside the key
// pr-101; each is processed by exactly one of them. Runs when nats-server (with JetStream) is
// reachable on 127.0.0.1:4222, and removes its stream afterwards.
import { reachable } from './reachable.mjs';

const NATS = process.env.BRANCHLINE_NATS_URL ?? '127.0.0.1:4222';
const natsHostPort = () => {
  const [host, port] = NATS.split(':');
  return [host, Number(port ?? 4222)];
};

/**
 * Runs the leg and prints through `out` ({ step, ok, skip, fail }). Returns true when both
 * messages reached their owner (or the leg was skipped), false otherwise; never throws.
 */
export async function natsLeg({ registryUrl, runId, sandbox = 'pr-101', service = 'payments', out }) {
  out.step(`NATS JetStream: the same key picks the ${service} consumer`);
  if (!(await reachable(...natsHostPort()))) {
    out.skip(`NATS leg skipped: no nats-server on ${NATS}; start \`nats-server -js\` and run the demo again`);
    return true;
  }
  const stream = `DEMO_${runId}`.toUpperCase();
  let routes;
  let nc;
  let jsm;
  const consumers = [];
  try {
    const [{ withRoutingKey }, { createRegistrySource }, nats, { jetstream, jetstreamManager }, { connect }] =
      await Promise.all([
        import('@branchline/core'),
        import('@branchline/core/transport'),
        import('@branchline/nats'),
        import('@nats-io/jetstream'),
        import('@nats-io/transport-node'),
      ]);
    routes = createRegistrySource({ registry: registryUrl });
    nc = nats.instrumentConnection(await connect({ servers: NATS, name: 'branchline-demo' }));
    const js = nats.instrumentJetStream(jetstream(nc));
    jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], storage: 'memory' });
    const seen = new Map();
    for (const who of [null, sandbox]) {
      const c = nats.createSelectiveConsumer(js, { stream, durable: service, service, sandbox: who, routes });
      await c.consume((msg) => {
        seen.set(msg.string(), { by: who ?? 'baseline', durable: c.durable });
      });
      consumers.push(c);
    }
    await js.publish(`${stream}.charge`, 'no key');
    await withRoutingKey(sandbox, () => js.publish(`${stream}.charge`, `key ${sandbox}`));
    const deadline = Date.now() + 15_000;
    while (seen.size < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    let good = true;
    for (const [text, want] of [
      ['no key', 'baseline'],
      [`key ${sandbox}`, sandbox],
    ]) {
      const got = seen.get(text);
      if (got?.by === want)
        out.ok(
          `message with ${text.padEnd(10)} → ${service} ${want === 'baseline' ? 'baseline' : `@${want}`}  (durable ${got.durable})`,
        );
      else {
        out.fail(
          `message with ${text}: expected ${want}, ${got ? `processed by ${got.by}` : 'not processed within 15 s'}`,
        );
        good = false;
      }
    }
    const passed = consumers.map((c) => c.stats.skipped).reduce((a, b) => a + b, 0);
    out.ok(`each consumer read both messages; ${passed} acknowledged by the consumer that does not own them`);
    return good;
  } catch (err) {
    out.fail(`NATS leg failed: ${err.message}`);
    return false;
  } finally {
    for (const c of consumers) await c.stop().catch(() => {});
    if (jsm) await jsm.streams.delete(stream).catch(() => {});
    await nc?.close().catch(() => {});
    await routes?.close().catch(() => {});
  }
}
