import type { RouteTable, Rule } from './routes.js';

/**
 * The routing decisions of DESIGN.md, made in one place for every transport.
 */

/**
 * The hop marker a request or call forwarded by Branchline carries (HTTP header, gRPC metadata).
 * A baseline that receives it never forwards again (the loop guard); the value names the
 * forwarding service.
 */
export const HOP_MARKER = 'x-branchline-hop';

export type IncomingDecision =
  | { action: 'serve'; reason: 'no-key' | 'no-rule' | 'sandbox-instance' | 'no-endpoint' }
  | { action: 'serve'; reason: 'loop'; rule: Rule }
  | { action: 'forward'; rule: Rule; endpoint: string };

export interface IncomingInput {
  table: RouteTable;
  /** This process's service. */
  service: string;
  /** This process's sandbox; undefined for baseline. */
  sandbox: string | undefined;
  key: string | undefined;
  /** The request already carries Branchline's hop marker. */
  forwarded: boolean;
  /** Which endpoint list the transport forwards to. */
  transport: 'http' | 'grpc';
}

const SERVE_NO_KEY: IncomingDecision = { action: 'serve', reason: 'no-key' };
const SERVE_NO_RULE: IncomingDecision = { action: 'serve', reason: 'no-rule' };
const SERVE_SANDBOX: IncomingDecision = { action: 'serve', reason: 'sandbox-instance' };
const SERVE_NO_ENDPOINT: IncomingDecision = { action: 'serve', reason: 'no-endpoint' };

let rr = 0;

/** Picks one of several endpoints round-robin. */
export function pickEndpoint(list: readonly string[]): string | undefined {
  if (list.length <= 1) return list[0];
  rr = (rr + 1) % 1_000_000;
  return list[rr % list.length];
}

/**
 * Destination routing: a baseline instance forwards a request whose key routes this service to
 * a sandbox; a sandbox instance always serves; a request forwarded once is never forwarded again.
 */
export function decideIncoming(input: IncomingInput): IncomingDecision {
  if (input.key === undefined) return SERVE_NO_KEY;
  if (input.sandbox !== undefined) return SERVE_SANDBOX;
  const rule = input.table.resolve(input.service, input.key);
  if (!rule) return SERVE_NO_RULE;
  if (rule.sandbox === input.sandbox) return SERVE_SANDBOX;
  if (input.forwarded) return { action: 'serve', reason: 'loop', rule };
  const endpoint = pickEndpoint(input.transport === 'http' ? rule.http : rule.grpc);
  if (endpoint === undefined) return SERVE_NO_ENDPOINT;
  return { action: 'forward', rule, endpoint };
}

/**
 * Origin routing: where a call to `service` with `key` goes. Undefined means the caller's own
 * (baseline) address.
 */
export function resolveOutgoing(
  table: RouteTable,
  service: string,
  key: string | undefined,
  transport: 'http' | 'grpc',
): { rule: Rule; endpoint: string } | undefined {
  const rule = table.resolve(service, key);
  if (!rule) return undefined;
  const endpoint = pickEndpoint(transport === 'http' ? rule.http : rule.grpc);
  return endpoint === undefined ? undefined : { rule, endpoint };
}

export type MessageDecision =
  | { action: 'process'; owner: string | undefined }
  | { action: 'skip'; owner: string | undefined }
  | { action: 'wait'; reason: 'never-synced' | 'view-behind-message' };

export interface MessageInput {
  /** Undefined when the consumer has never had a route table. */
  table: RouteTable | undefined;
  service: string;
  /** The consuming process's sandbox; undefined for baseline. */
  sandbox: string | undefined;
  key: string | undefined;
  /**
   * The message's time in registry time (ms). When given, ownership is decided by history at
   * that time, so two consumers with different views agree; a view that does not yet reach this
   * time answers `wait`. When absent, ownership is decided by the current table.
   */
  at?: number;
}

/**
 * Queue routing: the baseline consumer processes a message unless a sandbox that overrides the
 * service owns its key; a sandbox consumer processes only what it owns.
 */
export function decideMessage(input: MessageInput): MessageDecision {
  const { table, key, sandbox } = input;
  if (key === undefined)
    return sandbox === undefined
      ? { action: 'process', owner: undefined }
      : { action: 'skip', owner: undefined };
  if (!table) return { action: 'wait', reason: 'never-synced' };
  if (input.at !== undefined && input.at >= table.completeUntil)
    return { action: 'wait', reason: 'view-behind-message' };
  const owner = table.owner(input.service, key, input.at);
  return owner === sandbox ? { action: 'process', owner } : { action: 'skip', owner };
}
