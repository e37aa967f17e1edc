export {
  type NatsDurablesHook,
  type NatsDurablesHookOptions,
  type NatsHookTarget,
  natsDurablesHook,
} from './cleanup-hook.js';
export { createSelectiveConsumer, messageTimeMs } from './consumer.js';
export { natsHeadersGetter, natsHeadersSetter } from './headers.js';
export { sandboxDurableName, sandboxOfDurableName } from './names.js';
export { instrumentConnection, instrumentJetStream } from './publish.js';
export {
  type SelectiveSubscription,
  type SelectiveSubscriptionOptions,
  selectiveSubscribe,
} from './subscribe.js';
export type {
  DrainResult,
  HoldTimeoutAction,
  MessageHandler,
  SelectiveConsumer,
  SelectiveConsumerOptions,
  SelectiveConsumerStats,
} from './types.js';
