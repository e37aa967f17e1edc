import { formatDuration } from '@branchline/registry';

/** Renders rows as an aligned text table with upper-case headers. */
export function table(rows: Record<string, string>[], columns: string[]): string {
  if (rows.length === 0) return '(none)';
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
  return [...list(ep?.http), ...list(ep?.grpc).map((g) => `grpc://${g}`)].join(',');
}

export function labelsText(labels: Record<string, string> | undefined): string {
  return Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}
