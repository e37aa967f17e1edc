/**
 * Serialized message bytes passing through a routed server untouched. The routed server's
 * response serializer sends them as they are; every other value goes through the method's own
 * serializer.
 */
export class RawMessage {
  constructor(readonly bytes: Buffer) {}
}

/** Marks the identity deserializer a routed server registers, and remembers the method's own. */
export const ORIGINAL_DESERIALIZE: unique symbol = Symbol('branchline.grpc.originalDeserialize');

export type Deserializer = (bytes: Buffer) => unknown;
export type TaggedIdentity = ((bytes: Buffer) => Buffer) & { [ORIGINAL_DESERIALIZE]?: Deserializer };

/** The deserializer a routed server registers: bytes stay bytes until Branchline decides. */
export function rawDeserializer(original: Deserializer): TaggedIdentity {
  const identity: TaggedIdentity = (bytes: Buffer) => bytes;
  identity[ORIGINAL_DESERIALIZE] = original;
  return identity;
}

/** The serializer a routed server registers: relayed bytes pass through, handler values are encoded. */
export function rawAwareSerializer(original: (value: unknown) => Buffer): (value: unknown) => Buffer {
  return (value) => (value instanceof RawMessage ? value.bytes : original(value));
}

/** The method's own deserializer when the server keeps request bytes raw, else undefined. */
export function originalDeserializer(requestDeserialize: unknown): Deserializer | undefined {
  return (requestDeserialize as TaggedIdentity | undefined)?.[ORIGINAL_DESERIALIZE];
}
