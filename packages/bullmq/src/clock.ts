import { logger } from '@branchline/core/transport';

/** Something that answers Redis `TIME` (an ioredis client). */
export interface TimeClient {
  time(): Promise<[string, string] | (string | number)[]>;
}

/**
 * The Redis server's clock, read without a round trip per job: the offset to the local clock is
 * measured with `TIME` (best of a few samples: error at most half the round trip) and measured
 * again every `syncIntervalMs`. Every producer stamping with it agrees with every other to within
 * their round trips to Redis, whatever their own clocks say.
 */
export class RedisClock {
  private offset = 0;
  private synced = false;
  private syncedAt = 0;
  private pending: Promise<void> | undefined;
  private warned = false;
  /** Half the round trip of the sample the offset came from, ms: the stamp's error bound. */
  errorBoundMs = Number.POSITIVE_INFINITY;

  constructor(
    private readonly client: () => Promise<TimeClient | undefined>,
    private readonly syncIntervalMs = 30_000,
  ) {}

  /** The Redis server's time now, ms (the local clock until the first sync succeeded). */
  async now(): Promise<number> {
    if (!this.synced || Date.now() - this.syncedAt > this.syncIntervalMs) {
      this.pending ??= this.sync().finally(() => {
        this.pending = undefined;
      });
      // Wait for the first sync only; later ones refresh in the background.
      if (!this.synced) await this.pending;
    }
    return Math.round(Date.now() + this.offset);
  }

  private async sync(): Promise<void> {
    try {
      const c = await this.client();
      if (!c || typeof c.time !== 'function') throw new Error('the connection has no TIME command');
      let best = Number.POSITIVE_INFINITY;
      let offset = 0;
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const w0 = Date.now();
        const [s, us] = await c.time();
        const rtt = performance.now() - t0;
        const server = Number(s) * 1000 + Number(us) / 1000;
        if (rtt < best) {
          best = rtt;
          offset = server - (w0 + rtt / 2);
        }
      }
      this.offset = offset;
      this.errorBoundMs = best / 2;
      this.synced = true;
      this.syncedAt = Date.now();
    } catch (err) {
      this.syncedAt = Date.now();
      this.synced = true; // do not block every add; retried after syncIntervalMs
      if (!this.warned) {
        this.warned = true;
        logger().warn(
          "branchline: could not read the Redis server's time; stamping jobs with this process's clock (keep it NTP-synchronised)",
          { err: String(err) },
        );
      }
    }
  }
}
