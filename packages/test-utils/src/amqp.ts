import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ChannelModel } from 'amqplib';
import { uniqueName } from './index.js';

const run = promisify(execFile);

async function ctl(args: string[]): Promise<string> {
  const { stdout } = await run('rabbitmqctl', args, { timeout: 60_000 });
  return stdout;
}

export interface TestVhost {
  name: string;
  /** AMQP URL of the vhost for guest/guest on 127.0.0.1:5672. */
  url: string;
  /** Queues of the vhost with their ready message count and consumer count (`rabbitmqctl list_queues`). */
  listQueues(): Promise<{ name: string; messages: number; consumers: number }[]>;
  /** Drops every client connection of this vhost, as a broker restart or a network cut would. */
  closeAllConnections(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * A RabbitMQ virtual host of its own for one test file: its queues and exchanges cannot collide
 * with anyone else's, forced connection drops touch only its clients, and deleting it removes
 * everything the test declared.
 */
export async function createTestVhost(prefix: string): Promise<TestVhost> {
  const name = uniqueName(prefix);
  await ctl(['add_vhost', name]);
  await ctl(['set_permissions', '-p', name, 'guest', '.*', '.*', '.*']);
  return {
    name,
    url: `amqp://guest:guest@127.0.0.1:5672/${encodeURIComponent(name)}`,
    async listQueues() {
      const out = await ctl([
        'list_queues',
        '-p',
        name,
        'name',
        'messages',
        'consumers',
        '--no-table-headers',
        '-q',
      ]);
      return out
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean)
        .map((l) => {
          const [n, m, c] = l.split('\t');
          return { name: n!, messages: Number(m), consumers: Number(c) };
        });
    },
    async closeAllConnections() {
      await ctl(['close_all_connections', '-p', name, 'branchline test: forced connection drop']);
    },
    async destroy() {
      await ctl(['delete_vhost', name]).catch(() => undefined);
    },
  };
}

/** Whether a queue exists, by a passive declare on a throwaway channel (a 404 closes the channel). */
export async function queueExists(conn: ChannelModel, queue: string): Promise<boolean> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    await ch.checkQueue(queue);
    await ch.close();
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return false;
    throw err;
  }
}
