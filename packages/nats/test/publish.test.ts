import { withRoutingKey } from '@branchline/core';
import { until } from '@branchline/test-utils';
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instrumentConnection, instrumentJetStream, natsHeadersGetter } from '../src/index.js';
import { createStream, natsConnect, unique } from './helpers.js';

let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const subject = `pub.${Date.now().toString(36)}`;
const received = new Map<string, Msg>();

beforeAll(async () => {
  nc = instrumentConnection(await natsConnect('publish-test'));
  js = instrumentJetStream(jetstream(nc));
  jsm = await jetstreamManager(nc);
  nc.subscribe(`${subject}.>`, {
    callback: (err, m) => {
      if (!err) received.set(m.subject.slice(subject.length + 1), m);
    },
  });
  await nc.flush();
});

afterAll(async () => {
  await nc?.close();
});

async function got(id: string): Promise<MsgHdrs | undefined> {
  await until(
    () => received.has(id),
    () => `message ${id} (have ${[...received.keys()].join(', ')})`,
    { timeoutMs: 5000 },
  );
  return received.get(id)!.headers;
}

describe('an instrumented NATS connection', () => {
  it('adds the active routing key to publish() as a baggage header', async () => {
    withRoutingKey('pr-7', () => nc.publish(`${subject}.a`, 'x'));
    expect((await got('a'))?.get('baggage')).toBe('branchline=pr-7');
  });

  it('leaves messages without a key in context untouched', async () => {
    const h = headers();
    h.set('a', 'b');
    nc.publish(`${subject}.plain`, 'x', { headers: h });
    nc.publish(`${subject}.bare`, 'x');
    const plain = await got('plain');
    expect(plain?.get('baggage')).toBe('');
    expect(plain?.get('a')).toBe('b');
    expect(await got('bare')).toBeUndefined();
  });

  it("merges into the application's baggage header (any spelling) without changing its object", async () => {
    const h = headers();
    h.set('Baggage', 'team=blue');
    h.set('x-id', '1');
    withRoutingKey('pr-7', () => nc.publish(`${subject}.merge`, 'x', { headers: h }));
    const m = await got('merge');
    expect(natsHeadersGetter.get(m, 'baggage')).toBe('team=blue,branchline=pr-7');
    expect(m?.keys().filter((k) => k.toLowerCase() === 'baggage')).toHaveLength(1);
    expect(m?.get('x-id')).toBe('1');
    expect(h.get('Baggage')).toBe('team=blue');
  });

  it('carries the key on request() too', async () => {
    const sub = nc.subscribe(`${subject}.svc`, {
      callback: (_e, m) => {
        m.respond(m.headers?.get('baggage') ?? 'none');
      },
    });
    const reply = await withRoutingKey('pr-9', () => nc.request(`${subject}.svc`, 'q', { timeout: 2000 }));
    expect(reply.string()).toBe('branchline=pr-9');
    sub.unsubscribe();
  });

  it('instruments once: a second call returns the same connection, the key is written once', async () => {
    expect(instrumentConnection(nc)).toBe(nc);
    withRoutingKey('pr-3', () => nc.publish(`${subject}.twice`, 'x'));
    expect((await got('twice'))?.values('baggage')).toEqual(['branchline=pr-3']);
  });
});

describe('an instrumented JetStream client', () => {
  it('adds the active routing key to js.publish(); the stored message carries it', async () => {
    const stream = unique('PUB');
    await createStream(jsm, stream, [`${stream}.>`]);
    try {
      await withRoutingKey('pr-5', () => js.publish(`${stream}.one`, 'x'));
      await js.publish(`${stream}.two`, 'y');
      const one = await jsm.streams.getMessage(stream, { seq: 1 });
      const two = await jsm.streams.getMessage(stream, { seq: 2 });
      expect(one?.header.get('baggage')).toBe('branchline=pr-5');
      expect(two?.header.get('baggage') ?? '').toBe('');
    } finally {
      await jsm.streams.delete(stream);
    }
  });
});
