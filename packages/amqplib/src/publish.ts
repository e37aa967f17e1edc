import { getRoutingKey } from '@branchline/core';
import {
  bufferTextMapGetter,
  type CarrierGetter,
  getBaggageKey,
  injectRoutingKey,
  recordSetter,
} from '@branchline/core/transport';
import type { Options } from 'amqplib';
import { TIME_HEADER } from './headers.js';
import type { PublishInstrumentationOptions } from './types.js';

const INSTRUMENTED = Symbol.for('branchline.amqplib.instrumented');

type Headers = Record<string, unknown>;
const headersGetter = bufferTextMapGetter as CarrierGetter<Headers>;

// Structural shapes so one wrapper serves promise and callback channels, confirm or not.
type PublishFn = (
  exchange: string,
  routingKey: string,
  content: Buffer,
  options?: Options.Publish,
  ...rest: unknown[]
) => boolean;
type SendFn = (queue: string, content: Buffer, options?: Options.Publish, ...rest: unknown[]) => boolean;
interface PublishingChannel {
  publish: PublishFn;
  sendToQueue: SendFn;
}

interface Resolved {
  baggageKey: string | undefined;
  stampTime: boolean;
}

/**
 * Publish options carrying `key` in the `baggage` header, merged with what the application set:
 * other members are kept, the header is never duplicated, and a member of our name the
 * application set itself wins. The caller's objects are never mutated (they are often reused).
 */
export function withRoutingHeaders(
  options: Options.Publish | undefined,
  key: string,
  config: PublishInstrumentationOptions = {},
): Options.Publish {
  const headers: Headers = options?.headers ? { ...options.headers } : {};
  injectRoutingKey(headers, headersGetter, recordSetter, key, config.baggageKey ?? getBaggageKey());
  if (config.stampTime !== false && headers[TIME_HEADER] === undefined) headers[TIME_HEADER] = Date.now();
  return { ...options, headers };
}

function routed(options: Options.Publish | undefined, cfg: Resolved): Options.Publish | undefined {
  // Hot path: no active key costs one baggage lookup and nothing else.
  const key = getRoutingKey();
  if (key === undefined) return options;
  return withRoutingHeaders(options, key, {
    baggageKey: cfg.baggageKey ?? getBaggageKey(),
    stampTime: cfg.stampTime,
  });
}

/**
 * Makes `publish` and `sendToQueue` of one amqplib channel (promise or callback API, confirm
 * channel or not) carry the active routing key in the `baggage` header. Returns the same channel.
 * Instrumenting twice is a no-op.
 */
export function instrumentChannel<C extends object>(
  channel: C,
  options: PublishInstrumentationOptions = {},
): C {
  const ch = channel as C & PublishingChannel & { [INSTRUMENTED]?: true };
  if (ch[INSTRUMENTED]) return channel;
  if (typeof ch.publish !== 'function' || typeof ch.sendToQueue !== 'function') {
    throw new TypeError(
      'branchline: instrumentChannel expects an amqplib channel (from createChannel or createConfirmChannel)',
    );
  }
  const cfg: Resolved = { baggageKey: options.baggageKey, stampTime: options.stampTime !== false };
  const publish = ch.publish;
  const sendToQueue = ch.sendToQueue;
  // amqplib's sendToQueue calls this.publish; the flag keeps that second call from re-merging.
  let inSend = false;
  Object.defineProperty(ch, INSTRUMENTED, { value: true });
  ch.publish = function branchlinePublish(
    this: PublishingChannel,
    exchange,
    routingKey,
    content,
    opts,
    ...rest
  ) {
    if (inSend) return publish.call(this, exchange, routingKey, content, opts, ...rest);
    return publish.call(this, exchange, routingKey, content, routed(opts, cfg), ...rest);
  };
  ch.sendToQueue = function branchlineSendToQueue(this: PublishingChannel, queue, content, opts, ...rest) {
    inSend = true;
    try {
      return sendToQueue.call(this, queue, content, routed(opts, cfg), ...rest);
    } finally {
      inSend = false;
    }
  };
  return channel;
}

function isChannel(v: unknown): v is object {
  return typeof v === 'object' && v !== null && typeof (v as PublishingChannel).publish === 'function';
}

type Callback = (err: unknown, value?: unknown) => void;
interface ConnectionLike {
  createChannel: (...args: unknown[]) => unknown;
  createConfirmChannel: (...args: unknown[]) => unknown;
}

/**
 * Instruments every channel an amqplib connection creates from now on (promise API,
 * callback API, or amqplib's recovering connection). Returns the same connection.
 */
export function instrumentConnection<M extends object>(
  connection: M,
  options: PublishInstrumentationOptions = {},
): M {
  const conn = connection as M & ConnectionLike & { [INSTRUMENTED]?: true };
  if (conn[INSTRUMENTED]) return connection;
  if (typeof conn.createChannel !== 'function' || typeof conn.createConfirmChannel !== 'function') {
    throw new TypeError('branchline: instrumentConnection expects an amqplib connection (from amqp.connect)');
  }
  Object.defineProperty(conn, INSTRUMENTED, { value: true });
  for (const method of ['createChannel', 'createConfirmChannel'] as const) {
    const original = conn[method];
    conn[method] = function (this: unknown, ...args: unknown[]) {
      const last = args[args.length - 1];
      if (typeof last === 'function') {
        // Callback API: instrument the channel before the application sees it.
        const cb = last as Callback;
        args[args.length - 1] = (err: unknown, ch?: object) =>
          cb(err, ch && !err ? instrumentChannel(ch, options) : ch);
        const sync = original.apply(this, args);
        return isChannel(sync) ? instrumentChannel(sync, options) : sync;
      }
      const out = original.apply(this, args);
      if (out && typeof (out as Promise<object>).then === 'function') {
        return (out as Promise<object>).then((ch) => instrumentChannel(ch, options));
      }
      return out;
    };
  }
  return connection;
}
