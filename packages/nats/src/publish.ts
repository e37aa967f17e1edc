import { getRoutingKey } from '@branchline/core';
import { getBaggageKey, injectRoutingKey } from '@branchline/core/transport';
import type { JetStreamClient } from '@nats-io/jetstream';
import { headers, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { natsHeadersGetter, natsHeadersSetter } from './headers.js';

const INSTRUMENTED = Symbol.for('branchline.nats.instrumented');

/**
 * A copy of `given` (never the application's object, which it may reuse) carrying `key` in its
 * `baggage` header, merged into a `baggage` header it already has.
 */
function withKey(given: MsgHdrs | undefined, key: string): MsgHdrs {
  const h = headers();
  if (given) for (const [name, values] of given) for (const v of values) h.append(name, v);
  injectRoutingKey(h, natsHeadersGetter, natsHeadersSetter, key, getBaggageKey());
  return h;
}

type WithHeaders = { headers?: MsgHdrs } | undefined;

/** `options` with the active routing key in its headers, or `options` itself without a key. */
function keyed<O extends WithHeaders>(options: O): O {
  const key = getRoutingKey();
  if (key === undefined) return options;
  return { ...(options ?? {}), headers: withKey(options?.headers, key) } as O;
}

function mark(target: object): boolean {
  const m = target as { [INSTRUMENTED]?: true };
  if (m[INSTRUMENTED]) return false;
  Object.defineProperty(m, INSTRUMENTED, { value: true });
  return true;
}

/**
 * Makes `nc.publish`, `nc.request` and `nc.requestMany` carry the active routing key (W3C
 * `baggage` header, from the OpenTelemetry context) on every message. A `baggage` header the
 * application set is merged into; a routing-key member it already carries is kept. Patches the
 * connection in place (once) and returns it. Without a key in context, calls pass untouched.
 */
export function instrumentConnection<C extends NatsConnection>(nc: C): C {
  if (!mark(nc)) return nc;
  const publish = nc.publish.bind(nc);
  const request = nc.request.bind(nc);
  const requestMany = nc.requestMany.bind(nc);
  nc.publish = (subject, payload, options) => publish(subject, payload, keyed(options));
  nc.request = (subject, payload, options) =>
    request(subject, payload, keyed(options) as Parameters<typeof request>[2]);
  nc.requestMany = (subject, payload, options) =>
    requestMany(subject, payload, keyed(options) as Parameters<typeof requestMany>[2]);
  return nc;
}

/**
 * Makes `js.publish` carry the active routing key in the message's `baggage` header (merged into
 * the headers the application passes; its object is not changed). Patches in place, once.
 */
export function instrumentJetStream<J extends JetStreamClient>(js: J): J {
  if (!mark(js)) return js;
  const publish = js.publish.bind(js);
  js.publish = (subject, payload, options) => publish(subject, payload, keyed(options));
  return js;
}
