import type { CarrierGetter, CarrierSetter } from '@branchline/core/transport';
import { Match, type MsgHdrs } from '@nats-io/transport-node';

/**
 * Reads NATS message headers. `MsgHdrs.get` is case-sensitive, so a name that is not found as
 * written is looked up again ignoring case (`Baggage` written by another client is still read).
 * A header repeated on the wire comes back as all its values.
 */
export const natsHeadersGetter: CarrierGetter<MsgHdrs | undefined> = {
  get(carrier, key) {
    if (!carrier) return undefined;
    let values = carrier.values(key);
    if (values.length === 0) values = carrier.values(key, Match.IgnoreCase);
    if (values.length === 0) return undefined;
    return values.length === 1 ? values[0] : values;
  },
  keys(carrier) {
    return carrier ? carrier.keys() : [];
  },
};

/** Writes one NATS header, replacing every spelling of the name, so it is never sent twice. */
export const natsHeadersSetter: CarrierSetter<MsgHdrs> = {
  set(carrier, key, value) {
    if (carrier.has(key, Match.IgnoreCase)) carrier.delete(key, Match.IgnoreCase);
    carrier.set(key, value);
  },
};
