import {
  type CarrierGetter,
  type CarrierSetter,
  HOP_MARKER,
  headerValueToString,
} from '@branchline/core/transport';
import type { Metadata } from '@grpc/grpc-js';

/**
 * Reads gRPC metadata for the key reader and `propagation.extract`: values may be strings or
 * `Buffer`s (`-bin` keys); a key given several times reads as a list.
 */
export const grpcMetadataGetter: CarrierGetter<Metadata> = {
  keys: (m) => Object.keys(m.getMap()),
  get(m, key) {
    const values = m.get(key);
    if (values.length === 0) return undefined;
    if (values.length === 1) return headerValueToString(values[0]);
    return values.map((v) => headerValueToString(v) ?? '');
  },
};

/** Writes gRPC metadata for `injectRoutingKey` and `propagation.inject`: one value per key. */
export const grpcMetadataSetter: CarrierSetter<Metadata> = {
  set: (m, key, value) => m.set(key, value),
};

/**
 * The hop marker a forwarded call carries. A baseline that receives a call with it never
 * forwards that call again (the loop guard); the value names the forwarding service.
 * @deprecated Use `HOP_MARKER`, the one name for every transport.
 */
export const HOP_METADATA = HOP_MARKER;

/**
 * Transport headers the receiving side of a relay sets itself. Relaying them would, for
 * example, announce a compression the relay does not apply.
 */
const TRANSPORT_KEYS = [
  'content-type',
  'grpc-encoding',
  'grpc-accept-encoding',
  'accept-encoding',
  'te',
  'date',
];

/** A copy of `md` without the transport headers; what a relay passes on. */
export function relayableMetadata(md: Metadata): Metadata {
  const copy = md.clone();
  for (const k of TRANSPORT_KEYS) copy.remove(k);
  return copy;
}

/** Metadata for the forwarded request: the caller's, minus transport headers, plus the hop marker. */
export function forwardedRequestMetadata(md: Metadata, service: string): Metadata {
  const copy = relayableMetadata(md);
  // grpc-js writes its own user-agent on the outgoing stream.
  copy.remove('user-agent');
  copy.set(HOP_MARKER, service);
  return copy;
}

/** Whether a call already went through one Branchline forwarding hop. */
export function isForwarded(md: Metadata): boolean {
  return md.get(HOP_MARKER).length > 0;
}
