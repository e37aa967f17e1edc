import { formatDuration } from '@branchline/registry';

// C0 and C1 control characters, DEL, the Unicode line and paragraph separators, and the
// bidirectional overrides and isolates (which reorder what a terminal shows).
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeChar(c: string): string {
  const code = c.charCodeAt(0);
  return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16)}`);
}

/**
 * `text` safe to print on a terminal: control characters (an escape sequence could rewrite
 * the screen, a newline fake a row) and direction overrides are shown escaped, e.g. `\x1b`.
 * Every value the registry sends goes through this before it reaches human-readable output.
 */
export function printable(text: string): string {
  UNPRINTABLE.lastIndex = 0;
  return UNPRINTABLE.test(text) ? text.replace(UNPRINTABLE, escapeChar) : text;
}

/** Renders rows as an aligned text table with upper-case headers; cells are made printable. */
export function table(input: Record<string, string>[], columns: string[]): string {
  if (input.length === 0) return '(none)';
  const rows = input.map((r) => Object.fromEntries(columns.map((c) => [c, printable(r[c] ?? '')])));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [
    line(columns.map((c) => c.toUpperCase())),
    ...rows.map((r) => line(columns.map((c) => r[c] ?? ''))),
  ].join('\n');
}

export function expiresIn(expiresAt: number | null | undefined, now = Date.now()): string {
  if (expiresAt == null) return 'never';
  const d = expiresAt - now;
  return d <= 0 ? 'expired' : `in ${formatDuration(d)}`;
}

export function endpointsText(
  ep: { http?: string | string[]; grpc?: string | string[] } | undefined,
): string {
  const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
  return printable([...list(ep?.http), ...list(ep?.grpc).map((g) => `grpc://${g}`)].join(','));
}

export function labelsText(labels: Record<string, string> | undefined): string {
  return printable(
    Object.entries(labels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
  );
}
