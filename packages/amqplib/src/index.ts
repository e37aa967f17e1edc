export { createSelectiveConsumer, type SelectiveConsumer } from './consumer.js';
export {
  EXCHANGE_HEADER,
  MOVED_FROM_HEADER,
  REDELIVERED_HEADER,
  RETURNED_HEADER,
  ROUTING_KEY_HEADER,
  TIME_HEADER,
} from './headers.js';
export {
  type AmqpQueueResourceHook,
  type AmqpQueueResourceHookOptions,
  type AmqpResourceContext,
  amqpQueueResourceHook,
  sandboxQueuesCleanup,
} from './lifecycle.js';
export { instrumentChannel, instrumentConnection, withRoutingHeaders } from './publish.js';
export { removeSandboxQueues, SANDBOX_EXCHANGE, sandboxQueueName } from './queues.js';
export type {
  ConnectTarget,
  PublishInstrumentationOptions,
  ReconnectOptions,
  SandboxQueueCleanupOptions,
  SandboxQueueCleanupResult,
  SelectiveConsumerOptions,
  SelectiveConsumerStats,
  SelectiveMessageHandler,
} from './types.js';
