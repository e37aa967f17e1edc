import { getRoutingKey } from '@branchline/core';
import { getBaggageKey, injectRoutingKey } from '@branchline/core/transport';
import type { IHeaders, Message, Producer, ProducerBatch, ProducerRecord, Transaction } from 'kafkajs';
import { kafkaHeadersGetter, kafkaHeadersSetter } from './headers.js';

const INSTRUMENTED = Symbol.for('branchline.kafkajs.producer');

type Sender = Pick<Producer, 'send' | 'sendBatch'>;

/**
 * A copy of `messages` whose headers carry `key` in `baggage`, merged into what the application
 * set. Copies (message and headers object) so a message object the app reuses is never changed.
 */
function withKey(messages: Message[], key: string, baggageKey: string): Message[] {
  const out = new Array<Message>(messages.length);
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const headers: IHeaders = m.headers ? { ...m.headers } : {};
    injectRoutingKey(headers, kafkaHeadersGetter, kafkaHeadersSetter, key, baggageKey);
    out[i] = { ...m, headers };
  }
  return out;
}

function wrapSender<S extends Sender>(sender: S): S {
  const send = sender.send.bind(sender);
  const sendBatch = sender.sendBatch.bind(sender);
  sender.send = (record: ProducerRecord) => {
    // No key in context: hand the record over untouched, at the cost of one baggage lookup.
    const key = getRoutingKey();
    if (key === undefined || !record?.messages) return send(record);
    return send({ ...record, messages: withKey(record.messages, key, getBaggageKey()) });
  };
  sender.sendBatch = (batch: ProducerBatch) => {
    const key = getRoutingKey();
    if (key === undefined || !batch?.topicMessages) return sendBatch(batch);
    const baggageKey = getBaggageKey();
    return sendBatch({
      ...batch,
      topicMessages: batch.topicMessages.map((tm) => ({
        ...tm,
        messages: withKey(tm.messages, key, baggageKey),
      })),
    });
  };
  return sender;
}

/**
 * Makes `producer.send`, `producer.sendBatch` and the `send`/`sendBatch` of its transactions carry
 * the active routing key in each message's `baggage` header. A `baggage` header the application
 * set is merged into (its other members kept, never a second header); a `branchline` member it
 * already carries is left as it is. Patches the producer in place (once) and returns it.
 */
export function instrumentProducer<P extends Producer>(producer: P): P {
  const marked = producer as P & { [INSTRUMENTED]?: true };
  if (marked[INSTRUMENTED]) return producer;
  wrapSender(producer);
  const transaction = producer.transaction.bind(producer);
  producer.transaction = async (): Promise<Transaction> => wrapSender(await transaction());
  Object.defineProperty(marked, INSTRUMENTED, { value: true });
  return producer;
}
