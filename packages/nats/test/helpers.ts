import { randomBytes } from 'node:crypto';
import { DiscardPolicy, type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';

export const servers = process.env.BRANCHLINE_NATS_URL ?? '127.0.0.1:4222';

export function natsConnect(name = 'branchline-test'): Promise<NatsConnection> {
  return connect({ servers, name, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
}

/** A name no other test run uses (streams and durables live on in the server). */
export function unique(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`.toUpperCase();
}

/** A limits-retention stream on `subjects`, as docs/nats.md asks for selective consumption. */
export async function createStream(jsm: JetStreamManager, name: string, subjects: string[]): Promise<void> {
  await jsm.streams.add({
    name,
    subjects,
    retention: RetentionPolicy.Limits,
    storage: StorageType.Memory,
    discard: DiscardPolicy.Old,
    max_age: 10 * 60 * 1_000_000_000,
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
