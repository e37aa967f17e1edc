import type { MessageSelector } from '@branchline/core';
import type { KafkaMessage } from 'kafkajs';
import { kafkaHeadersGetter } from './headers.js';

/** Reads a message's routing key from its headers. */
export type KafkaKeyReader = (headers: KafkaMessage['headers']) => string | undefined;

/**
 * The hot path's key reader. Producers repeat the same few baggage values, so a value's key is
 * parsed once: a `Buffer` value is compared by bytes with the last few seen (no string decoded),
 * a string value goes through the selector's bounded cache. Only the plain `baggage` source is
 * cached; alias configurations read every time.
 */
export function kafkaKeyReader(selector: MessageSelector): KafkaKeyReader {
  const { keys } = selector;
  const read = (headers: KafkaMessage['headers']) => selector.readKey(headers, kafkaHeadersGetter);
  if (!selector.baggageOnly) return read;
  const recent: { bytes: Buffer; key: string | undefined }[] = [];
  let recentNext = 0;
  return (headers) => {
    if (!headers) return undefined;
    const v = headers.baggage;
    if (typeof v === 'string') return selector.keyFromBaggage(v);
    if (Buffer.isBuffer(v)) {
      // Most messages repeat one of a few values: compare bytes before decoding a string.
      for (let i = 0; i < recent.length; i++) {
        const r = recent[i]!;
        if (r.bytes.length === v.length && r.bytes.equals(v)) return r.key;
      }
      const raw = v.toString('utf8');
      const key = selector.keyFromBaggage(raw);
      // An absent key is remembered only when the member name does not occur at all, so an
      // invalid key is still counted (and warned about) each time it is seen.
      if (key !== undefined || raw.indexOf(keys.baggageKey) === -1) {
        recent[recentNext] = { bytes: Buffer.from(v), key };
        recentNext = (recentNext + 1) % 8;
      }
      return key;
    }
    if (v === undefined) {
      // A `Baggage` header spelled in another case.
      for (const k in headers) if (k.length === 7 && k.toLowerCase() === 'baggage') return read(headers);
      return undefined;
    }
    return read(headers); // repeated header: arrays
  };
}
