/**
 * The naming rules every Branchline package checks: routing keys, sandbox names, service names,
 * label names and values, and HTTP tokens (baggage member and header names). Defined once here;
 * the registry, the CLI and the transports import them. Each rule comes as a pattern (for
 * schemas), a check, and a sentence for error messages.
 */

/** Longest routing key or sandbox name (a DNS label). */
export const MAX_KEY_LENGTH = 63;

/** A routing key, and a sandbox, route group or resource name: a DNS label. */
export const ROUTING_KEY_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const ROUTING_KEY_RULE = `lowercase letters, digits and inner hyphens, at most ${MAX_KEY_LENGTH} characters (like a DNS label: "pr-42-payments")`;

/** Sandbox names follow the routing-key rule (a sandbox's name is its default key). */
export const SANDBOX_NAME_PATTERN = ROUTING_KEY_PATTERN;
export const SANDBOX_NAME_RULE = ROUTING_KEY_RULE;

/** Longest service name. */
export const MAX_SERVICE_NAME_LENGTH = 128;
/** A service name: letters, digits, `.`, `_`, `-`, starting and ending with a letter or digit. */
export const SERVICE_NAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$/;
export const SERVICE_NAME_RULE = `letters, digits, ".", "_" and "-", starting and ending with a letter or digit, at most ${MAX_SERVICE_NAME_LENGTH} characters (like "payments" or "orders.v2")`;

/** A label name: letters, digits, `.`, `_`, `/`, `-`, starting and ending with a letter or digit. */
export const LABEL_NAME_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;
export const LABEL_NAME_RULE =
  'letters, digits, ".", "_", "/" and "-", starting and ending with a letter or digit, at most 63 characters (like "team" or "github.com/pr")';
/** Longest label value. */
export const MAX_LABEL_VALUE_LENGTH = 253;

/** An HTTP token (RFC 9110): what a baggage member name or a header name may be. */
export const HTTP_TOKEN_PATTERN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
export const HTTP_TOKEN_RULE =
  'an HTTP token: letters, digits and !#$%&\'*+-.^_`|~, no spaces (like "branchline")';

function isLowerAlnum(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
}

/**
 * Whether `value` is a routing key: `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
 * An index scan instead of a regex: this runs on every request that carries a key.
 */
export function isValidRoutingKey(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const n = value.length;
  if (n === 0 || n > MAX_KEY_LENGTH) return false;
  if (!isLowerAlnum(value.charCodeAt(0)) || !isLowerAlnum(value.charCodeAt(n - 1))) return false;
  for (let i = 1; i < n - 1; i++) {
    const c = value.charCodeAt(i);
    if (!isLowerAlnum(c) && c !== 0x2d) return false;
  }
  return true;
}

/** Whether `value` is a sandbox (or route group, or resource) name. */
export function isValidSandboxName(value: unknown): value is string {
  return isValidRoutingKey(value);
}

/** Whether `value` is a service name. */
export function isValidServiceName(value: unknown): value is string {
  return typeof value === 'string' && SERVICE_NAME_PATTERN.test(value);
}

/** Whether `value` is a label name. */
export function isValidLabelName(value: unknown): value is string {
  return typeof value === 'string' && LABEL_NAME_PATTERN.test(value);
}

/** Whether `value` is a label value (any string up to 253 characters). */
export function isValidLabelValue(value: unknown): value is string {
  return typeof value === 'string' && value.length <= MAX_LABEL_VALUE_LENGTH;
}

/** Whether `value` is an HTTP token (a baggage member name, a header name). */
export function isHttpToken(value: unknown): value is string {
  return typeof value === 'string' && HTTP_TOKEN_PATTERN.test(value);
}

/** A human-readable reason a value is not a routing key, for error messages. */
export function explainInvalidKey(value: unknown): string {
  if (typeof value !== 'string') return `expected a string, got ${typeof value}`;
  if (value.length === 0) return 'it is empty';
  if (value.length > MAX_KEY_LENGTH)
    return `it is ${value.length} characters long (at most ${MAX_KEY_LENGTH})`;
  return `${JSON.stringify(value)} must be lowercase letters, digits and inner hyphens (like a DNS label: "pr-42-payments")`;
}
