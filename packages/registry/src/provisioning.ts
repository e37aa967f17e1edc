// Resource hooks: provisioning a sandbox's declared resources (one replica at a time, under a
// claim in the store), removing them when it is deleted, retrying failed removals, sweeping.

import { randomBytes } from 'node:crypto';
import type {
  ResourceContext,
  ResourceHook,
  ResourceProgress,
  ResourceState,
} from '@branchline/core/transport';
import type { LogFn } from './http-io.js';
import type { RegistryMetrics } from './metrics.js';
import type { RegistryState } from './state.js';
import type { Store } from './store.js';
import type { SandboxDoc } from './types.js';

interface Job {
  abort: AbortController;
  done: Promise<void>;
}

export interface ProvisionerDeps {
  state: RegistryState;
  store: Store;
  hooks: Map<string, ResourceHook>;
  metrics: RegistryMetrics;
  log: LogFn;
  /** How long a provisioning claim lasts without renewal. */
  provisionClaimMs: number;
  /** Whether other replicas may share the store (then claims are contended and state may lag). */
  shared: boolean;
  /** Updates one resource's state on a live sandbox or a tombstone (`null` removes it). */
  patchResource(id: string, resource: string, patch: Partial<ResourceState> | null): Promise<void>;
  /** Applies what other replicas committed since this one's revision. */
  catchUp(): Promise<void>;
}

/** Resources still to provision (a crash may have left them `provisioning`). */
export function unfinished(s: SandboxDoc): [string, ResourceState][] {
  return Object.entries(s.resources).filter(([, r]) => r.status === 'pending' || r.status === 'provisioning');
}

/** Progress is stored at most this often, so a chatty hook cannot flood the watchers. */
const PROGRESS_INTERVAL_MS = 200;

export class Provisioner {
  private readonly jobs = new Map<string, Job>();
  /** When each tombstone's removal last started (see `retryDue`). */
  private readonly lastRetry = new Map<string, number>();
  /** This process among the replicas, as the holder of provisioning claims. */
  private readonly instance = randomBytes(9).toString('base64url');

  constructor(private readonly d: ProvisionerDeps) {}

  /** Starts provisioning every live sandbox with unfinished resources this replica has hooks for. */
  resume(): void {
    for (const s of this.d.state.sandboxes.values())
      if (s.deletedAt == null && unfinished(s).some(([, r]) => this.d.hooks.has(r.type)))
        this.startProvisioning(s.name);
  }

  /** Stops provisioning a sandbox (it was deleted). */
  abortProvisioning(id: string): void {
    this.jobs.get(`p:${id}`)?.abort.abort();
  }

  /** Whether a tombstone's failed removal is due another try. */
  retryDue(id: string, now: number, retryIntervalMs: number): boolean {
    return now - (this.lastRetry.get(id) ?? 0) >= retryIntervalMs;
  }

  /** Aborts every running job and waits for them to stop (on close). */
  async stopAll(): Promise<void> {
    for (const j of this.jobs.values()) j.abort.abort();
    await Promise.allSettled([...this.jobs.values()].map((j) => j.done));
  }

  startProvisioning(name: string): void {
    const { state, store, hooks } = this.d;
    const s = state.sandbox(name);
    if (!s || !unfinished(s).length || this.jobs.has(`p:${s.id}`)) return;
    const abort = new AbortController();
    const claim = `provision:${s.id}`;
    const ttl = this.d.provisionClaimMs;
    let renew: NodeJS.Timeout | undefined;
    const done = (async () => {
      // One replica runs a sandbox's hooks; a crashed one's claim runs out and another resumes.
      if (!(await store.claim(claim, this.instance, ttl))) return;
      renew = setInterval(() => {
        store
          .claim(claim, this.instance, ttl)
          .then((held) => {
            if (!held) abort.abort();
          })
          .catch(() => undefined);
      }, ttl / 3);
      renew.unref();
      // The replica that had the claim may have finished some resources before it stopped.
      if (this.d.shared) await this.d.catchUp();
      const cur = state.sandboxes.get(s.id);
      const todo = cur && cur.deletedAt == null ? unfinished(cur) : [];
      for (const [rname, r] of todo) {
        if (abort.signal.aborted) return;
        const hook = hooks.get(r.type);
        // Resumed by a replica started without this type's hook: leave it to one that has it.
        if (!hook) continue;
        if (!hook.provision) {
          await this.d.patchResource(s.id, rname, { status: 'ready' });
          continue;
        }
        await this.d.patchResource(s.id, rname, { status: 'provisioning', error: undefined });
        try {
          const cur = state.sandboxes.get(s.id) ?? s;
          const outputs = await hook.provision(this.context(cur, rname, abort.signal));
          if (outputs) {
            const secret = (await store.getSecret(s.id)) ?? {};
            secret.outputs = { ...secret.outputs, [rname]: outputs };
            await store.putSecret(s.id, secret);
          }
          if (!abort.signal.aborted) await this.d.patchResource(s.id, rname, { status: 'ready' });
        } catch (err) {
          this.d.metrics.hookFailures++;
          this.d.log('error', 'provisioning a resource failed', {
            sandbox: s.name,
            resource: rname,
            err: String(err),
          });
          if (!abort.signal.aborted)
            await this.d.patchResource(s.id, rname, {
              status: 'failed',
              error: String((err as Error)?.message ?? err),
            });
        }
      }
    })()
      .catch((err) => this.d.log('error', 'provisioning stopped', { sandbox: s.name, err: String(err) }))
      .finally(() => {
        clearInterval(renew);
        this.jobs.delete(`p:${s.id}`);
        if (renew) store.releaseClaim(claim, this.instance).catch(() => undefined);
      });
    this.jobs.set(`p:${s.id}`, { abort, done });
  }

  /** Runs every remaining resource's deprovision hook for a tombstone; resolves when all ran. */
  startDeprovisioning(id: string): Promise<void> | undefined {
    const { state, store, hooks } = this.d;
    const key = `d:${id}`;
    const running = this.jobs.get(key);
    if (running) return running.done;
    const s = state.sandboxes.get(id);
    if (!s || s.deletedAt == null || !Object.keys(s.resources).length) return undefined;
    const abort = new AbortController();
    this.lastRetry.set(id, Date.now());
    const done = (async () => {
      await this.jobs.get(`p:${id}`)?.done;
      const secret = await store.getSecret(id);
      for (const [rname, r] of Object.entries(s.resources)) {
        const hook = hooks.get(r.type);
        try {
          if (hook?.deprovision) {
            await this.d.patchResource(id, rname, { status: 'deleting', error: undefined });
            const cur = state.sandboxes.get(id) ?? s;
            await hook.deprovision({
              ...this.context(cur, rname, abort.signal),
              outputs: secret?.outputs?.[rname],
            });
          }
          await this.d.patchResource(id, rname, null);
        } catch (err) {
          this.d.metrics.hookFailures++;
          this.d.log('error', 'removing a resource failed; will retry', {
            sandbox: s.name,
            resource: rname,
            err: String(err),
          });
          await this.d.patchResource(id, rname, {
            status: 'failed',
            error: String((err as Error)?.message ?? err),
          });
        }
      }
    })()
      .catch((err) => this.d.log('error', 'deprovisioning stopped', { sandbox: s.name, err: String(err) }))
      .finally(() => this.jobs.delete(key));
    this.jobs.set(key, { abort, done });
    return done;
  }

  /** Runs every hook's `sweep` with the live sandboxes' names. */
  async sweep(): Promise<void> {
    const live = this.d.state.liveSandboxes().map((s) => s.name);
    for (const h of this.d.hooks.values()) {
      if (!h.sweep) continue;
      try {
        await h.sweep(live);
      } catch (err) {
        this.d.metrics.hookFailures++;
        this.d.log('error', 'a resource sweep failed', { type: h.type, err: String(err) });
      }
    }
  }

  private context(s: SandboxDoc, rname: string, signal: AbortSignal): ResourceContext {
    const r = s.resources[rname]!;
    let last = 0;
    let pending: ResourceProgress | undefined;
    let timer: NodeJS.Timeout | undefined;
    const flush = () => {
      timer = undefined;
      last = Date.now();
      const p = pending;
      pending = undefined;
      if (p) this.d.patchResource(s.id, rname, { progress: p }).catch(() => undefined);
    };
    return {
      sandbox: { name: s.name, key: s.key, labels: s.labels },
      resource: { name: rname, type: r.type, spec: r.spec },
      signal,
      report: (progress) => {
        pending = { ...progress };
        if (timer) return;
        const wait = Math.max(0, PROGRESS_INTERVAL_MS - (Date.now() - last));
        timer = setTimeout(flush, wait);
      },
    };
  }
}
