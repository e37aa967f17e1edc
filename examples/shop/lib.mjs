// Shared plumbing of the demo services: how a service reports what it did (a trace line the
// demo collects), and how each process shuts down when the demo asks it to (or when the demo
// itself is gone). Sandbox workloads announce themselves with announceWorkload (@branchline/core).
import { defaultRuntime } from '@branchline/core';

export const service = process.env.BRANCHLINE_SERVICE;
export const sandbox = process.env.BRANCHLINE_SANDBOX;
/** Which version of the service this process is: `baseline` or the sandbox's name. */
export const version = sandbox ?? 'baseline';
const verbose = process.env.DEMO_VERBOSE === '1';

/** One hop of the trace: this service, this version, handled `order` over `transport`. */
export function trace(order, transport, detail, key) {
  process.stdout.write(
    `@@trace ${JSON.stringify({ order, service, version, transport, detail, key: key ?? null })}\n`,
  );
}

export function ready(detail) {
  process.stdout.write(`@@ready ${JSON.stringify({ service, version, detail })}\n`);
}

export function log(...args) {
  if (verbose) console.error(`[${service}@${version}]`, ...args);
}

/**
 * Prints the rules this process can see whenever they change, so the demo knows when a new
 * sandbox has reached every service (the registry's watch stream takes milliseconds).
 */
export function reportRules() {
  const routes = defaultRuntime().routes;
  let last = '';
  const show = (table) => {
    const rules = table
      .rules()
      .map((r) => `${r.service}=${r.key}`)
      .sort();
    const text = JSON.stringify(rules);
    if (text === last) return;
    last = text;
    process.stdout.write(`@@rules ${JSON.stringify({ service, version, rules })}\n`);
  };
  routes.subscribe(show);
  if (routes.table) show(routes.table);
}

/**
 * Runs `cleanup` once on SIGTERM/SIGINT or when the demo's IPC channel closes (the demo was
 * killed), then exits. A second signal, or a cleanup that takes over 8 s, exits at once.
 */
export function onShutdown(cleanup) {
  let stopping = false;
  const stop = async (why) => {
    if (stopping) process.exit(1);
    stopping = true;
    log('stopping:', why);
    setTimeout(() => process.exit(1), 8000).unref();
    try {
      await cleanup();
    } catch (err) {
      log('cleanup failed', err);
    }
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('disconnect', () => stop('the demo went away'));
}
