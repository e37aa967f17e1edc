/** The logger every Branchline package writes to. Replace it with `setLogger(pino())` or similar. */
export interface BranchlineLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

type Level = 'debug' | 'info' | 'warn' | 'error' | 'silent';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function envLevel(): Level {
  const v = process.env.BRANCHLINE_LOG_LEVEL as Level | undefined;
  return v && v in order ? v : 'warn';
}

function write(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (order[level] < order[envLevel()]) return;
  const line = JSON.stringify({ level, time: Date.now(), name: 'branchline', msg, ...fields });
  process.stderr.write(`${line}\n`);
}

const stderrLogger: BranchlineLogger = {
  debug: (m, f) => write('debug', m, f),
  info: (m, f) => write('info', m, f),
  warn: (m, f) => write('warn', m, f),
  error: (m, f) => write('error', m, f),
};

let current: BranchlineLogger = stderrLogger;

export function setLogger(logger: BranchlineLogger | undefined): void {
  current = logger ?? stderrLogger;
}

export function logger(): BranchlineLogger {
  return current;
}

const lastWarned = new Map<string, number>();

/** Logs a warning at most once per `intervalMs` for the same `code`, so bad input cannot flood logs. */
export function warnRateLimited(
  code: string,
  msg: string,
  fields?: Record<string, unknown>,
  intervalMs = 10_000,
): void {
  const now = Date.now();
  const last = lastWarned.get(code);
  if (last !== undefined && now - last < intervalMs) return;
  lastWarned.set(code, now);
  current.warn(msg, { code, ...fields });
}

/** Runs a user-supplied hook; a throwing hook is logged and swallowed so it can never break the app. */
export function safeHook<A extends unknown[], R>(
  name: string,
  hook: ((...args: A) => R) | undefined,
  ...args: A
): R | undefined {
  if (!hook) return undefined;
  try {
    return hook(...args);
  } catch (err) {
    current.error(`branchline: the ${name} hook threw; ignoring it`, { err: String(err) });
    return undefined;
  }
}

const deprecationsWarned = new Set<string>();

/**
 * Tells, once per process, that a deprecated option was used and which option replaces it.
 * `where` names the API, e.g. `@branchline/http forward options`.
 */
export function warnDeprecatedOption(where: string, oldName: string, newName: string): void {
  const id = `${where}\u0000${oldName}`;
  if (deprecationsWarned.has(id)) return;
  deprecationsWarned.add(id);
  current.warn(
    `branchline: ${where}: option ${oldName} is deprecated; use ${newName} instead (it still works for now)`,
    { code: 'deprecated-option', option: oldName, replacement: newName },
  );
}

/**
 * The value of an option that was renamed: `value` when given, else the deprecated `oldValue`
 * (with a one-time warning naming the new option).
 */
export function renamedOption<T>(
  where: string,
  value: T | undefined,
  oldValue: T | undefined,
  oldName: string,
  newName: string,
): T | undefined {
  if (oldValue !== undefined) warnDeprecatedOption(where, oldName, newName);
  return value !== undefined ? value : oldValue;
}
