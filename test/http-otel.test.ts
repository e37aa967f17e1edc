import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const fixture = fileURLToPath(new URL('./fixtures/http/otel-forward.mjs', import.meta.url));

interface Span {
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string | null;
}
interface Seen {
  url: string;
  traceparent: string | null;
  traceId: string;
  spanId: string;
}
interface Report {
  answers: Record<string, string>;
  seen: Seen[];
  spans: Span[];
  client: { traceId: string; spanId: string };
}

function runFixture(attach: boolean): Promise<Report> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [fixture],
      {
        env: {
          ...process.env,
          OTEL_TRACES_EXPORTER: 'none',
          OTEL_METRICS_EXPORTER: 'none',
          OTEL_LOGS_EXPORTER: 'none',
          BRANCHLINE_LOG_LEVEL: 'error',
          ATTACH: attach ? '1' : '0',
        },
        timeout: 60_000,
      },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${err.message}\n${stderr}`));
        resolve(JSON.parse(stdout.trim().split('\n').at(-1)!) as Report);
      },
    );
  });
}

/** The ids of a span's ancestors among the finished spans, nearest first. */
function ancestors(spans: Span[], spanId: string): string[] {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const out: string[] = [];
  for (let p = byId.get(spanId)?.parentSpanId; p; p = byId.get(p)?.parentSpanId) out.push(p);
  return out;
}

describe.each([
  ['mounted', false],
  ['attached to the server', true],
])(
  'a request the baseline forwards, under NodeSDK with the HTTP and Express instrumentations (middleware %s)',
  (_name, attach) => {
    let r: Report;
    beforeAll(async () => {
      r = await runFixture(attach);
    }, 90_000);

    /** The baseline's server span of a request: the server span of that trace that is not the sandbox's. */
    function baselineServerSpan(seen: Seen): Span {
      const span = r.spans.find(
        (s) => s.kind === 1 && s.traceId === seen.traceId && s.spanId !== seen.spanId,
      );
      expect(span, `no baseline server span in trace ${seen.traceId}`).toBeDefined();
      return span!;
    }

    it('continues the baseline’s trace in the sandbox when the client sent no traceparent', () => {
      expect(r.answers.withoutTraceparent).toBe('sandbox');
      const seen = r.seen.find((s) => s.url === '/without')!;
      expect(seen.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      const baseline = baselineServerSpan(seen);
      expect(baseline.parentSpanId).toBeNull();
      // The sandbox's server span hangs under the baseline's server span, in the same trace.
      expect(ancestors(r.spans, seen.spanId)).toContain(baseline.spanId);
    });

    it('puts the sandbox under the baseline’s span, in the client’s trace, when the client sent one', () => {
      expect(r.answers.withTraceparent).toBe('sandbox');
      const seen = r.seen.find((s) => s.url === '/with')!;
      expect(seen.traceId).toBe(r.client.traceId);
      const baseline = baselineServerSpan(seen);
      expect(baseline.parentSpanId).toBe(r.client.spanId);
      // Not a sibling of the baseline's span (both children of the client's): its descendant.
      expect(ancestors(r.spans, seen.spanId).slice(-2)).toEqual([baseline.spanId, r.client.spanId]);
    });
  },
);
