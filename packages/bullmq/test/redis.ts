import { randomBytes } from 'node:crypto';
import { StaticRouteSource } from '@branchline/core/transport';
import { LaggingView, type LaggingViewOptions, type RegistrySim } from '@branchline/test-utils/registry-sim';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach } from 'vitest';
import { instrumentQueue } from '../src/index.js';

export const REDIS = { host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null } as const;

/** A BullMQ key prefix of its own per test: nothing collides, and removing it removes everything. */
export function uniquePrefix(name: string): string {
  return `bltest-${name}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
}

export async function removePrefix(prefix: string): Promise<void> {
  const r = new Redis(REDIS);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await r.del(...keys);
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
}

export async function keysOf(pattern: string): Promise<string[]> {
  const r = new Redis(REDIS);
  try {
    const out: string[] = [];
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      out.push(...keys);
    } while (cursor !== '0');
    return out;
  } finally {
    r.disconnect();
  }
}

/** Drops every Redis connection whose client name starts with `prefix` (BullMQ names them so). */
export async function killClients(prefix: string): Promise<number> {
  const r = new Redis(REDIS);
  try {
    const list = (await r.client('LIST')) as string;
    let n = 0;
    for (const line of list.split('\n')) {
      const id = /\bid=(\d+)/.exec(line)?.[1];
      const name = /\bname=(\S*)/.exec(line)?.[1] ?? '';
      if (id && name.startsWith(prefix)) {
        await r.client('KILL', 'ID', id).catch(() => undefined);
        n++;
      }
    }
    return n;
  } finally {
    r.disconnect();
  }
}

/**
 * Per-file queue fixtures: `setup(name)` gives an instrumented queue under a fresh key prefix;
 * `view(registry)` a worker's route view of the simulated registry, following its changes and a
 * 200 ms heartbeat unless told otherwise. Whatever is pushed on `closers` (and the queue, its keys
 * and the views) goes after each test, in reverse.
 */
export function queueFixtures() {
  const closers: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });
  function setup(name: string) {
    const prefix = uniquePrefix(name);
    const queue = instrumentQueue(new Queue(`q-${name}`, { connection: REDIS, prefix }));
    closers.push(() => removePrefix(prefix));
    closers.push(() => queue.close());
    return { prefix, queue };
  }
  function view(registry: RegistrySim, options: LaggingViewOptions = {}) {
    const v = new LaggingView(new StaticRouteSource(), registry, { events: true, everyMs: 200, ...options });
    closers.push(() => v.stop());
    return v;
  }
  return { closers, setup, view };
}
