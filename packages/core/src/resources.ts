/**
 * The resource-hook contract: how packages such as @branchline/pg, kafkajs and amqplib plug
 * per-sandbox resources (temporary databases, consumer groups, queues) into the sandbox
 * lifecycle that @branchline/registry runs. It lives in core so that transport packages can
 * implement it without depending on the registry. See docs/registry.md, "Resources".
 */

/** Where a resource stands; stored on the sandbox document and streamed to watchers. */
export type ResourceStatus = 'pending' | 'provisioning' | 'ready' | 'failed' | 'deleting';

export interface ResourceProgress {
  phase: string;
  done?: number;
  total?: number;
  unit?: string;
  message?: string;
}

/** A declared resource as it appears on the public sandbox document (never its outputs). */
export interface ResourceState {
  type: string;
  spec: Record<string, unknown>;
  status: ResourceStatus;
  progress?: ResourceProgress;
  error?: string;
}

export interface ResourceContext {
  sandbox: { name: string; key: string; labels: Record<string, string> };
  resource: { name: string; type: string; spec: Record<string, unknown> };
  /** Report progress; the registry stores it on the resource and emits a watch event. */
  report(progress: ResourceProgress): void;
  /** Aborted when the registry shuts down or the sandbox is deleted while provisioning. */
  signal: AbortSignal;
}

export interface ResourceHook {
  /** Resource type this hook handles, e.g. "postgres", "kafka-consumer-groups", "amqp-queue". */
  type: string;
  /** Validate a declared spec at PUT time; throw an Error with an actionable message → 400. */
  validate?(spec: Record<string, unknown>): void;
  /** Create it. The returned object is stored as the resource's private `outputs`. */
  provision?(ctx: ResourceContext): Promise<Record<string, unknown> | undefined | void>;
  /** Remove it. Must be idempotent (it is retried after a crash or a failure). */
  deprovision?(ctx: ResourceContext & { outputs?: Record<string, unknown> }): Promise<void>;
  /** Called periodically: remove anything of this type that no live sandbox owns (leak sweeper). */
  sweep?(liveSandboxes: string[]): Promise<void>;
}

/** What `onSandboxDeleted` listeners receive: the tombstone (overrides stopped routing at `deletedAt`). */
export type SandboxDeletedListener = (
  sandbox: { name: string; key: string; labels: Record<string, string>; deletedAt: number },
  reason: 'api' | 'expired' | 'webhook',
) => void | Promise<void>;
