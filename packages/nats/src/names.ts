import { isValidRoutingKey } from '@branchline/core';

const SEPARATOR = '_sandbox_';

/**
 * The JetStream durable consumer of sandbox `sandbox` for a consumer whose baseline durable is
 * `durable`. Stable across restarts, so a sandbox consumer resumes where it stopped. Durable
 * names cannot hold `.`, `*`, `>` or spaces; sandbox names are DNS labels (no underscores), so
 * the suffix identifies the sandbox unambiguously.
 */
export function sandboxDurableName(durable: string, sandbox: string): string {
  if (typeof durable !== 'string' || durable.length === 0 || /[.*>\s]/.test(durable))
    throw new TypeError(
      `branchline: ${JSON.stringify(durable)} is not a JetStream durable name (non-empty, no ".", "*", ">" or spaces)`,
    );
  if (!isValidRoutingKey(sandbox))
    throw new TypeError(
      `branchline: sandbox ${JSON.stringify(sandbox)} is not a sandbox name (lowercase letters, digits, inner hyphens)`,
    );
  return `${durable}${SEPARATOR}${sandbox}`;
}

/** The sandbox a durable name belongs to, or undefined for a baseline durable. */
export function sandboxOfDurableName(durable: string): string | undefined {
  const i = durable.lastIndexOf(SEPARATOR);
  if (i <= 0) return undefined;
  const name = durable.slice(i + SEPARATOR.length);
  return isValidRoutingKey(name) ? name : undefined;
}
