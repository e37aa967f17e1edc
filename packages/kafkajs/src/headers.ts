import { bufferTextMapGetter, type CarrierGetter, type CarrierSetter } from '@branchline/core/transport';
import type { IHeaders } from 'kafkajs';

/**
 * Reads kafkajs message headers: case-insensitive, values `Buffer`, string or an array of them
 * (a header repeated on the wire), as kcat, the Java client and kafkajs produce them.
 */
export const kafkaHeadersGetter: CarrierGetter<IHeaders | undefined> = bufferTextMapGetter as CarrierGetter<
  IHeaders | undefined
>;

/**
 * Writes one kafkajs header, replacing every spelling of the name (`Baggage`, `baggage`) and any
 * repeated values with a single string, so the message never carries the header twice.
 */
export const kafkaHeadersSetter: CarrierSetter<IHeaders> = {
  set(carrier, key, value) {
    for (const k of Object.keys(carrier)) if (k !== key && k.toLowerCase() === key) delete carrier[k];
    carrier[key] = value;
  },
};
