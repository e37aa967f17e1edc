export {
  baggageWithKey,
  type FetchLike,
  type HeaderSettable,
  type KeyHeaderOptions,
  routingHeaders,
  setKey,
  type WithKeyOptions,
  withKey,
} from './headers.js';
export { type KeyProxy, type KeyProxyOptions, startKeyProxy } from './proxy.js';
