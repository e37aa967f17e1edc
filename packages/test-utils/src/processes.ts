import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';

/** A free TCP port on loopback (the OS picks it; we release it right away). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  srv.close();
  await once(srv, 'close');
  return port;
}

export interface RunningProcess {
  child: ChildProcess;
  /** Everything the process wrote so far (stdout and stderr). */
  output(): string;
  /** Resolves when a line matching `pattern` appears in the output. */
  waitFor(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const running = new Set<ChildProcess>();

function killAll(): void {
  for (const c of running) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.once('exit', killAll);

/**
 * Starts `node <script> [...args]` as a child process. It is stopped by `stop()`, and killed
 * when the test process exits, so no test can leave a process behind.
 */
export function startNode(
  script: string,
  args: string[] = [],
  env: Record<string, string | undefined> = {},
): RunningProcess {
  const child = spawn(process.execPath, [script, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let out = '';
  const watchers = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const w of watchers) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  child.once('exit', () => {
    running.delete(child);
    for (const w of watchers) w();
  });
  return {
    child,
    output: () => out,
    waitFor(pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const test = () => {
          const m =
            typeof pattern === 'string' ? (out.includes(pattern) ? pattern : null) : out.match(pattern)?.[0];
          if (m) {
            cleanup();
            resolve(m);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(
              new Error(
                `process ${script} exited (${child.exitCode ?? child.signalCode}) before printing ${pattern}; output:\n${out}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(
            new Error(
              `timed out after ${timeoutMs} ms waiting for ${pattern} from ${script}; output:\n${out}`,
            ),
          );
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          watchers.delete(test);
        };
        watchers.add(test);
        test();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
