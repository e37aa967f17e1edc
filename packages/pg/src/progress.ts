import type { ResourceProgress, SandboxDatabaseOutputs } from './types.js';

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB'];

/** 1536 → "1.5 kB" (powers of 1024, as PostgreSQL's pg_size_pretty). */
export function formatBytes(n: number): string {
  let v = n;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${UNITS[i]}`;
}

export interface RenderProgressOptions {
  /** Width of the bar in characters. Default 24. */
  width?: number;
  /** A label in front, e.g. the resource name. */
  label?: string;
}

/**
 * One line of a progress bar for a resource's progress, for terminals and logs:
 * `orders-db  snapshot  [##########--------------]  42%  5/12 tables  copying public.items`.
 * Without a total it shows the phase and message only.
 */
export function renderProgress(p: ResourceProgress, options: RenderProgressOptions = {}): string {
  const width = options.width ?? 24;
  const parts: string[] = [];
  if (options.label) parts.push(options.label);
  parts.push(p.phase.padEnd(9));
  if (p.total !== undefined && p.total > 0 && p.done !== undefined) {
    const ratio = Math.max(0, Math.min(1, p.done / p.total));
    const filled = Math.round(ratio * width);
    parts.push(`[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`);
    parts.push(`${String(Math.round(ratio * 100)).padStart(3)}%`);
    parts.push(
      p.unit === 'bytes'
        ? `${formatBytes(p.done)}/${formatBytes(p.total)}`
        : `${p.done}/${p.total}${p.unit ? ` ${p.unit}` : ''}`,
    );
  }
  if (p.message) parts.push(p.message);
  return parts.join('  ');
}

/** Connection details as a person reads them after `branchline sandbox create … --db orders`. */
export function formatConnection(outputs: SandboxDatabaseOutputs, label = 'database'): string {
  const masked = outputs.password
    ? outputs.url.replace(`:${encodeURIComponent(outputs.password)}@`, ':****@')
    : outputs.url;
  return [
    `${label}: ${outputs.database} (copy of ${outputs.source})`,
    `  host      ${outputs.host}`,
    `  port      ${outputs.port}`,
    `  database  ${outputs.database}`,
    `  user      ${outputs.user}`,
    `  url       ${masked}`,
    `  export DATABASE_URL='${masked}'`,
  ].join('\n');
}

/**
 * A progress printer for a terminal: redraws one line in place on a TTY, prints a line per
 * phase change (and at most one per second otherwise) elsewhere. Returns the callback to pass
 * as `onProgress`/`report`, and `done()` to finish the line.
 */
export function progressPrinter(
  stream: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr,
  options: RenderProgressOptions = {},
): { update(p: ResourceProgress): void; done(): void } {
  let lastPhase = '';
  let lastAt = 0;
  let drawn = false;
  return {
    update(p) {
      const line = renderProgress(p, options);
      if (stream.isTTY) {
        stream.write(`\r\u001b[2K${line}`);
        drawn = true;
        return;
      }
      const now = Date.now();
      if (p.phase !== lastPhase || now - lastAt >= 1000 || (p.total !== undefined && p.done === p.total)) {
        stream.write(`${line}\n`);
        lastPhase = p.phase;
        lastAt = now;
      }
    },
    done() {
      if (drawn) stream.write('\n');
      drawn = false;
    },
  };
}
