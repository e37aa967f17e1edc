export { createSelectiveConsumer, HoldTimeoutError } from './consumer.js';
export {
  deleteGroups,
  type KafkaConsumerGroupsHook,
  type KafkaConsumerGroupsHookOptions,
  kafkaConsumerGroupsHook,
  listSandboxGroups,
  sandboxGroupId,
  sandboxOfGroupId,
} from './groups.js';
export { kafkaHeadersGetter, kafkaHeadersSetter } from './headers.js';
export { instrumentProducer } from './producer.js';
export type {
  DrainResult,
  HoldTimeoutAction,
  KafkaAdminTarget,
  SelectiveConsumer,
  SelectiveConsumerOptions,
  SelectiveConsumerStats,
  SelectiveEachBatchPayload,
  SelectiveRunConfig,
} from './types.js';
