import type { ResourceContext } from '@branchline/core/transport';
import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { natsDurablesHook, sandboxDurableName } from '../src/index.js';
import { createStream, natsConnect, servers, sleep, unique } from './helpers.js';

function ctx(sandbox: string, spec: Record<string, unknown> = {}): ResourceContext {
  return {
    sandbox: { name: sandbox, key: sandbox, labels: {} },
    resource: { name: 'nats', type: 'nats-durables', spec },
    report: () => undefined,
    signal: new AbortController().signal,
  };
}

async function exists(jsm: JetStreamManager, stream: string, name: string): Promise<boolean> {
  try {
    await jsm.consumers.info(stream, name);
    return true;
  } catch {
    return false;
  }
}

describe('natsDurablesHook', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const stream = unique('HOOK');
  const subject = `${stream.toLowerCase()}.orders`;
  const streams: string[] = [stream];

  beforeAll(async () => {
    nc = await natsConnect('cleanup-hook-test');
    jsm = await jetstreamManager(nc);
    await createStream(jsm, stream, [subject]);
  });
  afterAll(async () => {
    for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
    await nc.close();
  });

  async function addDurable(name: string): Promise<void> {
    await jsm.consumers.add(stream, {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
    });
  }

  it('deletes a drained durable of the deleted sandbox and nothing else', async () => {
    const mine = sandboxDurableName('orders', 'pr-1');
    const other = sandboxDurableName('orders', 'pr-2');
    await addDurable('orders');
    await addDurable(mine);
    await addDurable(other);
    const hook = natsDurablesHook({ servers }, { streams: [stream] });
    await hook.deprovision(ctx('pr-1'));
    expect(await exists(jsm, stream, mine)).toBe(false);
    expect(await exists(jsm, stream, other)).toBe(true);
    expect(await exists(jsm, stream, 'orders')).toBe(true);
    // Idempotent: a retry finds nothing and succeeds.
    await hook.deprovision(ctx('pr-1'));
  });

  it('keeps a durable with pending messages for abandonAfterMs, then deletes it', async () => {
    const name = sandboxDurableName('orders', 'pr-3');
    await addDurable(name);
    const js = jetstream(nc);
    for (let i = 0; i < 3; i++) await js.publish(subject, `m${i}`);
    const hook = natsDurablesHook({ connection: nc }, { streams: [stream], abandonAfterMs: 400 });
    await expect(hook.deprovision(ctx('pr-3'))).rejects.toThrow(/pending\).*restart the sandbox's consumer/s);
    expect(await exists(jsm, stream, name)).toBe(true);
    await sleep(500);
    await hook.deprovision(ctx('pr-3'));
    expect(await exists(jsm, stream, name)).toBe(false);
  });

  it('deletes at once a durable whose consumer drained (acknowledged everything)', async () => {
    const name = sandboxDurableName('orders', 'pr-4');
    await addDurable(name);
    const js = jetstream(nc);
    const consumer = await js.consumers.get(stream, name);
    const info = await jsm.streams.info(stream);
    const total = info.state.messages;
    for (let got = 0; got < total; ) {
      const batch = await consumer.fetch({ max_messages: total, expires: 2000 });
      for await (const m of batch) {
        m.ack();
        got++;
      }
    }
    await sleep(100);
    const hook = natsDurablesHook({ connection: nc }, { streams: [stream], abandonAfterMs: 60_000 });
    await hook.deprovision(ctx('pr-4'));
    expect(await exists(jsm, stream, name)).toBe(false);
  });

  it('honours spec.durables and sweeps durables of sandboxes that no longer exist', async () => {
    const a = sandboxDurableName('billing', 'pr-5');
    const b = sandboxDurableName('billing', 'pr-6');
    await addDurable(a);
    await addDurable(b);
    const hook = natsDurablesHook({ servers }, { streams: [stream], abandonAfterMs: 0 });
    await hook.deprovision(ctx('pr-5', { durables: ['orders'] }));
    expect(await exists(jsm, stream, a)).toBe(true);
    await hook.sweep(['pr-6']);
    expect(await exists(jsm, stream, a)).toBe(false);
    expect(await exists(jsm, stream, b)).toBe(true);
  });

  it('never deletes a durable a consumer is attached to', async () => {
    const name = sandboxDurableName('orders', 'pr-7');
    await addDurable(name);
    const js = jetstream(nc);
    const consumer = await js.consumers.get(stream, name);
    const messages = await consumer.consume({ max_messages: 1, expires: 5000 });
    const seen: string[] = [];
    void (async () => {
      for await (const m of messages) seen.push(m.string());
    })();
    try {
      await sleep(200);
      const hook = natsDurablesHook({ connection: nc }, { streams: [stream], abandonAfterMs: 0 });
      await expect(hook.deprovision(ctx('pr-7'))).rejects.toThrow(/in use \(a consumer is draining\)/);
      expect(await exists(jsm, stream, name)).toBe(true);
    } finally {
      await messages.close();
    }
  });

  it('lists every stream by default, and skips a configured stream that does not exist', async () => {
    // A durable name of its own: the server is shared, and this looks at every stream.
    const base = unique('ORD');
    const name = sandboxDurableName(base, 'pr-8');
    await addDurable(name);
    await natsDurablesHook({ connection: nc }, { streams: [unique('MISSING')] }).deprovision(ctx('pr-8'));
    expect(await exists(jsm, stream, name)).toBe(true);
    await natsDurablesHook({ connection: nc }, { durables: [base], abandonAfterMs: 0 }).deprovision(
      ctx('pr-8'),
    );
    expect(await exists(jsm, stream, name)).toBe(false);
  });

  it('rejects a bad spec and bad options with clear errors', () => {
    const hook = natsDurablesHook({ servers });
    expect(() => hook.validate({ durables: 'orders' })).toThrow(/spec.durables must be a list/);
    expect(() => natsDurablesHook({ servers }, { abandonAfterMs: -1 })).toThrow(/abandonAfterMs/);
  });
});
