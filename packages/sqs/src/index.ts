export {
  attributesGetter,
  BAGGAGE_ATTRIBUTE,
  BRANCHLINE_ATTRIBUTE,
  MAX_MESSAGE_ATTRIBUTES,
  type MessageAttributes,
  type RoutingAttributeOptions,
  routingAttributes,
} from './attributes.js';
export { type SqsQueuesHook, type SqsQueuesHookOptions, sqsQueuesHook } from './cleanup-hook.js';
export {
  createSqsSelectiveConsumer,
  type SqsMessageHandler,
  type SqsMessageInfo,
  type SqsSelectiveConsumer,
  type SqsSelectiveConsumerOptions,
  type SqsSelectiveConsumerStats,
} from './consumer.js';
export { withRouting } from './publish.js';
export {
  messageTime,
  removeSandboxQueue,
  type SandboxQueueCleanupOptions,
  type SandboxQueueCleanupResult,
  sandboxQueueName,
} from './queues.js';
