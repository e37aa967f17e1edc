// The watch stream: the server-sent events every SDK and `branchline watch` read, the ring of
// recent changes they resume from, and the batched fan-out of each change to every watcher.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { RegistryMetrics } from './metrics.js';
import type { Change, GroupDoc, SandboxDoc } from './types.js';

interface Watcher {
  res: ServerResponse;
  /** Events go straight to the socket: the response is close-delimited, so no chunk framing. */
  socket: Socket;
  /** `?view=routing`: documents carry only what routing needs (see `routingDoc`). */
  routing: boolean;
}

/** A change as both views of the watch stream write it, encoded once each. */
interface ChangeFrame {
  change: Change;
  text: string;
  routing: string;
}

export interface FanoutOptions {
  /** Changes kept for watchers resuming by revision. */
  resumeWindow: number;
  /** Least time between two writes to the watchers (0: every event-loop turn). */
  watchFlushIntervalMs: number;
  /** Told to the watchers in each heartbeat. */
  heartbeatIntervalMs: number;
}

/** What a new watcher's snapshot is made of. */
export interface WatchSnapshot {
  revision: number;
  sandboxes: Iterable<SandboxDoc>;
  groups: Iterable<GroupDoc>;
  completeUntil: number | undefined;
}

// `connection: close` makes the body close-delimited instead of chunked, so a broadcast is one
// socket write per watcher with no per-write framing.
const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  connection: 'close',
  'x-accel-buffering': 'no',
};

/** The next write to the watchers waits at least this many times the last one's duration. */
const FANOUT_GAP_FACTOR = 4;
/** ...but never longer than this (ms), whatever the fan-out costs. */
const MAX_FLUSH_GAP_MS = 50;
/** A watcher with this much unsent is dropped; it reconnects and resumes from its revision. */
const MAX_BACKLOG_BYTES = 8 * 1024 * 1024;

/**
 * A sandbox as the SDKs' route tables need it (`GET /v1/watch?view=routing`): the editing
 * fields (`declared`, `announced`, `status`, `updatedAt`, `deleteReason`) stay out, which makes
 * each change about a third smaller to send and to parse in every watching service.
 */
function routingDoc(
  s: SandboxDoc,
): Omit<SandboxDoc, 'declared' | 'announced' | 'status' | 'updatedAt' | 'deleteReason'> {
  return {
    id: s.id,
    name: s.name,
    key: s.key,
    overrides: s.overrides,
    labels: s.labels,
    createdAt: s.createdAt,
    expiresAt: s.expiresAt,
    deletedAt: s.deletedAt,
    history: s.history,
    resources: s.resources,
  };
}

function sse(event: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function changeFrame(c: Change): ChangeFrame {
  const text = sse(
    c.type,
    { revision: c.revision, time: c.time, kind: c.kind, id: c.id, name: c.name, object: c.object },
    c.revision,
  );
  const object = c.kind === 'sandbox' && c.object ? routingDoc(c.object as SandboxDoc) : c.object;
  return {
    change: c,
    text,
    routing: sse(c.type, { revision: c.revision, kind: c.kind, id: c.id, object }, c.revision),
  };
}

export class WatchFanout {
  private readonly watchers = new Set<Watcher>();
  private ring: ChangeFrame[] = [];
  /** Frames queued for the next write (see `broadcast`): as full watchers get them, and as routing watchers do. */
  private pendingFrames: string[] = [];
  private pendingRouting: string[] = [];
  /** The next write; `deferred` when it waits for the flush interval rather than this turn. */
  private flushing: { promise: Promise<void>; resolve: () => void; deferred: boolean } | undefined;
  private lastFlushAt = Number.NEGATIVE_INFINITY;
  /** Least time until the next write to the watchers (see `flush`). */
  private flushGapMs = 0;

  constructor(
    private readonly metrics: RegistryMetrics,
    private readonly opts: FanoutOptions,
  ) {}

  get size(): number {
    return this.watchers.size;
  }

  /** Fills the resume ring with the changes the store kept (on open). */
  load(recent: Change[]): void {
    this.ring = recent.map(changeFrame);
  }

  /** Queues a committed change for every watcher and keeps it for resuming ones. */
  push(c: Change): void {
    const frame = changeFrame(c);
    this.ring.push(frame);
    if (this.ring.length > this.opts.resumeWindow * 1.25)
      this.ring = this.ring.slice(-this.opts.resumeWindow);
    this.broadcast(frame.text, frame.routing);
  }

  /** Queues a heartbeat carrying `completeUntil` for every watcher. */
  heartbeat(revision: number, completeUntil: number | undefined): void {
    this.broadcast(this.heartbeatText(revision, completeUntil));
  }

  /**
   * The write this turn's changes go out with, when it happens this turn; undefined when the
   * next write waits for the flush interval (the writer is then answered at once).
   */
  get imminentWrite(): Promise<void> | undefined {
    return this.flushing && !this.flushing.deferred ? this.flushing.promise : undefined;
  }

  /**
   * Answers `GET /v1/watch`: a snapshot (or the changes since `since`), `synced`, then every
   * change as it is committed.
   */
  attach(
    req: IncomingMessage,
    res: ServerResponse,
    params: { since: number | undefined; routing: boolean },
    snap: WatchSnapshot,
  ): void {
    const { since, routing } = params;
    // Changes already applied but not yet written would reach this watcher twice (in its
    // snapshot or resume, then in the next flush): write them to the others first.
    this.flush();
    // Close-delimited body: events are written to the socket as is (see SSE_HEADERS).
    res.useChunkedEncodingByDefault = false;
    res.writeHead(200, SSE_HEADERS);
    res.socket?.setNoDelay(true);
    res.socket?.setKeepAlive(true, 10_000);
    let out = 'retry: 1000\n\n';
    const first = this.ring[0]?.change.revision;
    const cur = snap.revision;
    const canResume =
      since !== undefined && since <= cur && (since === cur || (first !== undefined && first <= since + 1));
    if (canResume) {
      for (const e of this.ring) if (e.change.revision > since!) out += routing ? e.routing : e.text;
    } else {
      if (since !== undefined) this.metrics.watchRestarts++;
      out += sse(
        'snapshot',
        {
          revision: cur,
          sandboxes: routing ? [...snap.sandboxes].map(routingDoc) : [...snap.sandboxes],
          groups: [...snap.groups],
        },
        cur,
      );
    }
    out += sse('synced', { revision: cur, resumed: canResume });
    if (snap.completeUntil !== undefined) out += this.heartbeatText(cur, snap.completeUntil);
    res.write(out);
    const socket = res.socket;
    if (!socket || socket.destroyed) return;
    const w: Watcher = { res, socket, routing };
    this.watchers.add(w);
    const drop = () => this.watchers.delete(w);
    res.once('close', drop);
    req.once('close', drop);
  }

  /** Ends every watch stream (on close). */
  endAll(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  private heartbeatText(revision: number, completeUntil: number | undefined): string {
    return sse('heartbeat', {
      revision,
      completeUntil,
      time: Date.now(),
      interval: this.opts.heartbeatIntervalMs,
    });
  }

  /**
   * Queues a frame for every watcher. Frames queued in the same event-loop turn (several writes
   * answered together, a change and a heartbeat), or within `watchFlushIntervalMs` of the last
   * write, go out as one socket write per watcher: the fan-out's cost is the write system call
   * per socket, not the bytes, so a busy registry batches more and spends less per change.
   * Resolves once the frame has been written.
   */
  private broadcast(text: string, routing = text): Promise<void> {
    this.pendingFrames.push(text);
    this.pendingRouting.push(routing);
    if (!this.flushing) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      const wait = this.lastFlushAt + this.flushGapMs - performance.now();
      this.flushing = { promise, resolve, deferred: wait > 0 };
      if (wait > 0) setTimeout(() => this.flush(), wait);
      else setImmediate(() => this.flush());
    }
    return this.flushing.promise;
  }

  /** Writes the queued frames to every watcher now. */
  private flush(): void {
    const f = this.flushing;
    this.flushing = undefined;
    if (this.pendingFrames.length > 0) {
      this.lastFlushAt = performance.now();
      // Encode once per view, on first use: a string written to each of N sockets would be
      // encoded N times.
      const pendingFull = this.pendingFrames;
      const pendingRouting = this.pendingRouting;
      let full: Buffer | undefined;
      let routing: Buffer | undefined;
      this.pendingFrames = [];
      this.pendingRouting = [];
      const t0 = performance.now();
      for (const w of this.watchers) {
        // A watcher that cannot keep up is dropped; it reconnects and resumes from its revision.
        if (w.socket.writableLength > MAX_BACKLOG_BYTES) {
          w.socket.destroy();
          this.watchers.delete(w);
          continue;
        }
        if (w.routing) {
          routing ??= Buffer.from(pendingRouting.join(''));
          w.socket.write(routing);
        } else {
          full ??= Buffer.from(pendingFull.join(''));
          w.socket.write(full);
        }
      }
      // The next write waits at least FANOUT_GAP_FACTOR times as long as this one took: with
      // many watchers the fan-out then takes a bounded share of the registry's CPU (and of its
      // watchers', one read per write) however fast changes arrive, at the price of batching
      // more of them per write. Never longer than MAX_FLUSH_GAP_MS.
      const took = performance.now() - t0;
      this.metrics.fanOutSeconds += took / 1000;
      this.metrics.fanOuts++;
      const base = this.opts.watchFlushIntervalMs;
      this.flushGapMs = base === 0 ? 0 : Math.max(base, Math.min(MAX_FLUSH_GAP_MS, took * FANOUT_GAP_FACTOR));
    }
    f?.resolve();
  }
}
