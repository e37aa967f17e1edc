/** Longest routing key DESIGN.md allows (a DNS label). */
export const MAX_KEY_LENGTH = 63;

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

/** A human-readable reason a value is not a routing key, for error messages. */
export function explainInvalidKey(value: unknown): string {
  if (typeof value !== 'string') return `expected a string, got ${typeof value}`;
  if (value.length === 0) return 'it is empty';
  if (value.length > MAX_KEY_LENGTH)
    return `it is ${value.length} characters long (at most ${MAX_KEY_LENGTH})`;
  return `${JSON.stringify(value)} must be lowercase letters, digits and inner hyphens (like a DNS label: "pr-42-payments")`;
}
