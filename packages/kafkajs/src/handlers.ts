import {
  type FinalSelection,
  type HoldSelection,
  type MessageSelector,
  runInContext,
} from '@branchline/core';
import type { EachBatchPayload, EachMessagePayload, KafkaMessage } from 'kafkajs';
import { type Settle, timeOf } from './decisions.js';
import type { KafkaKeyReader } from './keys.js';
import type { SelectiveEachBatchPayload } from './types.js';

/** What the wrapped handlers decide with. */
export interface HandlerDeps {
  selector: MessageSelector;
  keyOf: KafkaKeyReader;
  settle: Settle;
}

const PROCESS: FinalSelection = { action: 'process', owner: undefined };
const DONE: Promise<void> = Promise.resolve();

/** eachMessage: the handler runs for owned messages only, inside the message's context. */
export function wrapEachMessage(
  { selector, keyOf, settle }: HandlerDeps,
  handler: (p: EachMessagePayload) => Promise<void>,
): (payload: EachMessagePayload) => Promise<void> {
  const baseline = selector.sandbox === undefined;
  const processIn = (payload: EachMessagePayload, key: string | undefined): Promise<void> => {
    selector.noteProcessed();
    return selector.run(key, () => handler(payload));
  };
  const held = async (payload: EachMessagePayload, key: string | undefined, first: HoldSelection) => {
    const d = await settle(payload.topic, payload.partition, payload.message, key, payload.heartbeat, first);
    if (d.action === 'process') return processIn(payload, key);
    selector.noteSkipped();
  };
  // Not an async function: the common paths add no promise of their own.
  return (payload) => {
    const { message } = payload;
    const key = keyOf(message.headers);
    // Hot path: a baseline consumer and a message without a key — nothing to decide.
    if (key === undefined && baseline) {
      selector.noteProcessed();
      return handler(payload);
    }
    const d = selector.decide(key, timeOf(message));
    if (d.action === 'process') return processIn(payload, key);
    if (d.action === 'hold') return held(payload, key, d);
    selector.noteSkipped();
    return DONE;
  };
}

/** eachBatch: the handler sees only the owned messages; skipped ones are committed too. */
export function wrapEachBatch(
  { selector, keyOf, settle }: HandlerDeps,
  handler: (p: SelectiveEachBatchPayload) => Promise<void>,
): (payload: EachBatchPayload) => Promise<void> {
  const baseline = selector.sandbox === undefined;
  return async (payload) => {
    const { batch } = payload;
    const all = batch.messages;
    // `owned` stays the fetched array itself until the first skipped message (no copy in the
    // common case of a batch that is entirely this consumer's).
    let owned: KafkaMessage[] = all;
    let skipped = 0;
    for (let i = 0; i < all.length; i++) {
      const m = all[i]!;
      const key = keyOf(m.headers);
      let d = key === undefined && baseline ? PROCESS : selector.decide(key, timeOf(m));
      if (d.action === 'hold') d = await settle(batch.topic, batch.partition, m, key, payload.heartbeat, d);
      if (d.action === 'process') {
        if (owned !== all) owned.push(m);
      } else {
        if (owned === all) owned = all.slice(0, i);
        skipped++;
      }
    }
    if (skipped > 0) selector.noteSkipped(skipped);
    const last = all[all.length - 1];
    if (owned.length === 0) {
      if (last) payload.resolveOffset(last.offset);
      return;
    }
    selector.noteProcessed(owned.length);

    let resolved = -1;
    const resolveOffset = (offset: string) => {
      const n = Number(offset);
      if (n > resolved) resolved = n;
      payload.resolveOffset(offset);
    };
    const runInMessageContext = <R>(message: KafkaMessage, fn: () => R): R =>
      runInContext(selector.contextFor(keyOf(message.headers)), fn);
    // The handler sees only owned messages; the batch's own methods (lastOffset, offsetLag)
    // still describe the whole fetched batch.
    const view =
      owned === all ? batch : Object.create(batch, { messages: { value: owned, enumerable: true } });
    const wrapped: SelectiveEachBatchPayload = {
      ...payload,
      batch: view,
      resolveOffset,
      runInMessageContext,
      async forEachMessage(fn) {
        for (const m of owned) {
          if (!payload.isRunning() || payload.isStale()) break;
          await runInMessageContext(m, () => fn(m));
          resolveOffset(m.offset);
          await payload.heartbeat();
        }
      },
    };
    await runInContext(selector.contextFor(undefined), () => handler(wrapped));
    if (owned === all) return;
    // Skipped messages are committed like processed ones: resolve the skipped run that follows
    // the last message the handler resolved (up to the next owned message it did not resolve).
    const next = owned.find((m) => Number(m.offset) > resolved);
    if (next === undefined) {
      if (last && Number(last.offset) > resolved) payload.resolveOffset(last.offset);
      return;
    }
    const before = Number(next.offset) - 1;
    if (before > resolved) {
      const prior = all.filter((m) => Number(m.offset) <= before).pop();
      if (prior && Number(prior.offset) > resolved) payload.resolveOffset(prior.offset);
    }
  };
}
