import { getRoutingKey } from '@branchline/core';
import { type RoutingAttributeOptions, routingAttributes } from './attributes.js';

const INSTRUMENTED = Symbol.for('branchline.sqs.instrumented');

interface SendMessageInput {
  MessageAttributes?: Parameters<typeof routingAttributes>[0];
  [k: string]: unknown;
}
interface BatchInput {
  Entries?: SendMessageInput[];
  [k: string]: unknown;
}

/** The structural part of an SQSClient this wrapper needs (any v3 client version). */
interface ClientLike {
  middlewareStack: {
    add(
      middleware: (
        next: (args: { input: unknown }) => Promise<unknown>,
        context: { commandName?: string },
      ) => (args: { input: unknown }) => Promise<unknown>,
      options: { step: 'initialize'; name: string; override?: boolean },
    ): void;
  };
}

/**
 * Makes every `SendMessageCommand` and `SendMessageBatchCommand` sent through `client` carry the
 * active routing key (the OpenTelemetry context's baggage) in the `baggage` message attribute,
 * plus the send time in the `branchline` attribute. Sends without an active key are untouched.
 * The application's attributes are kept and its input objects are never mutated. Wrapping
 * twice is a no-op. Returns the same client.
 */
export function withRouting<C extends object>(client: C, options: RoutingAttributeOptions = {}): C {
  const c = client as C & ClientLike & { [INSTRUMENTED]?: true };
  if (c[INSTRUMENTED]) return client;
  if (typeof c.middlewareStack?.add !== 'function')
    throw new TypeError('branchline: withRouting expects an SQSClient from @aws-sdk/client-sqs (v3)');
  Object.defineProperty(c, INSTRUMENTED, { value: true });
  c.middlewareStack.add(
    (next, context) => (args) => {
      const name = context.commandName;
      if (name !== 'SendMessageCommand' && name !== 'SendMessageBatchCommand') return next(args);
      // The middleware runs in the caller's context (AsyncLocalStorage follows the promise chain).
      const key = getRoutingKey();
      if (key === undefined) return next(args);
      if (name === 'SendMessageCommand') {
        const input = args.input as SendMessageInput;
        return next({
          ...args,
          input: { ...input, MessageAttributes: routingAttributes(input.MessageAttributes, key, options) },
        });
      }
      const input = args.input as BatchInput;
      return next({
        ...args,
        input: {
          ...input,
          Entries: input.Entries?.map((e) => ({
            ...e,
            MessageAttributes: routingAttributes(e.MessageAttributes, key, options),
          })),
        },
      });
    },
    { step: 'initialize', name: 'branchlineRouting', override: true },
  );
  return client;
}
