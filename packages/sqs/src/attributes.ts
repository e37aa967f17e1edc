import type { MessageAttributeValue } from '@aws-sdk/client-sqs';
import {
  type CarrierGetter,
  getBaggageKey,
  injectRoutingKey,
  recordSetter,
} from '@branchline/core/transport';

/** SQS allows at most 10 message attributes per message. */
export const MAX_MESSAGE_ATTRIBUTES = 10;

/** The attribute that carries W3C baggage (and so the routing key). */
export const BAGGAGE_ATTRIBUTE = 'baggage';

/**
 * Branchline's own attribute, one string of `name=value` pairs separated by `;`, so that
 * Branchline never takes more than two of the ten attributes SQS allows:
 *   t  the message's time in ms (the producer's send time; on a moved or returned copy, the
 *      original's time, which ownership was decided at)
 *   m  on a copy: the original's MessageId (the identity duplicates are recognised by)
 *   f  on a copy in a sandbox queue: the baseline queue it was moved from
 *   r  on a copy returned to the baseline queue: the deleted sandbox it came back from
 *   c  on a copy: how often the original had been received (more than 1: it may repeat)
 */
export const BRANCHLINE_ATTRIBUTE = 'branchline';

export type MessageAttributes = Record<string, MessageAttributeValue>;

/** The parsed `branchline` attribute. */
export interface BranchlineMeta {
  t?: number;
  m?: string;
  f?: string;
  r?: string;
  c?: number;
}

export function parseMeta(attrs: MessageAttributes | undefined): BranchlineMeta | undefined {
  const v = attrs?.[BRANCHLINE_ATTRIBUTE]?.StringValue;
  if (v === undefined) return undefined;
  const out: BranchlineMeta = {};
  for (const part of v.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq);
    const value = part.slice(eq + 1);
    if (name === 't' || name === 'c') {
      const n = Number(value);
      if (Number.isFinite(n)) out[name] = n;
    } else if (name === 'm' || name === 'f' || name === 'r') out[name] = value;
  }
  return out;
}

export function formatMeta(meta: BranchlineMeta): string {
  const parts: string[] = [];
  if (meta.t !== undefined) parts.push(`t=${meta.t}`);
  if (meta.m !== undefined) parts.push(`m=${meta.m}`);
  if (meta.f !== undefined) parts.push(`f=${meta.f}`);
  if (meta.r !== undefined) parts.push(`r=${meta.r}`);
  if (meta.c !== undefined) parts.push(`c=${meta.c}`);
  return parts.join(';');
}

/** Reads string attributes as a text-map carrier (for the key reader and OTel propagators). */
export const attributesGetter: CarrierGetter<MessageAttributes | undefined> = {
  keys: (c) => (c ? Object.keys(c) : []),
  get(c, key) {
    if (!c) return undefined;
    const v = c[key] ?? c[Object.keys(c).find((k) => k.toLowerCase() === key) ?? ''];
    return v?.StringValue;
  },
};

/** Options of `withRouting` and `routingAttributes`. */
export interface RoutingAttributeOptions {
  /** Baggage member name; default the runtime's (`BRANCHLINE_BAGGAGE_KEY`, else `branchline`). */
  baggageKey?: string;
  /**
   * Stamp keyed messages with the send time (`branchline` attribute, `t=<ms>`), used when a
   * consumer cannot get `SentTimestamp`. Skipped when the message already has 10 attributes
   * with baggage. Default true.
   */
  stampTime?: boolean;
}

/**
 * The message attributes of a send carrying `key` in the `baggage` attribute, merged with the
 * application's: other attributes and other baggage members are kept, a member of our name the
 * application set itself wins. The caller's objects are never mutated. Throws a RangeError when
 * the message already has SQS's 10 attributes and none of them is `baggage`.
 */
export function routingAttributes(
  attributes: MessageAttributes | undefined,
  key: string,
  options: RoutingAttributeOptions = {},
): MessageAttributes {
  const out: MessageAttributes = attributes ? { ...attributes } : {};
  const existing = out[BAGGAGE_ATTRIBUTE]?.StringValue;
  if (existing === undefined && Object.keys(out).length >= MAX_MESSAGE_ATTRIBUTES) {
    throw new RangeError(
      `branchline: this SQS message already has ${MAX_MESSAGE_ATTRIBUTES} message attributes (SQS's limit), so the routing key cannot be added in a "${BAGGAGE_ATTRIBUTE}" attribute; send at most ${MAX_MESSAGE_ATTRIBUTES - 1} attributes of your own (or put data in the body)`,
    );
  }
  const carrier: Record<string, unknown> = existing === undefined ? {} : { baggage: existing };
  injectRoutingKey(carrier, plainGetter, recordSetter, key, options.baggageKey ?? getBaggageKey());
  const baggage = carrier.baggage;
  if (typeof baggage === 'string' && baggage !== existing)
    out[BAGGAGE_ATTRIBUTE] = { DataType: 'String', StringValue: baggage };
  if (
    options.stampTime !== false &&
    out[BRANCHLINE_ATTRIBUTE] === undefined &&
    Object.keys(out).length < MAX_MESSAGE_ATTRIBUTES
  ) {
    out[BRANCHLINE_ATTRIBUTE] = { DataType: 'String', StringValue: `t=${Date.now()}` };
  }
  return out;
}

const plainGetter: CarrierGetter<Record<string, unknown>> = {
  keys: (c) => Object.keys(c),
  get: (c, key) => (typeof c[key] === 'string' ? (c[key] as string) : undefined),
};
