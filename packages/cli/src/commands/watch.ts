// `branchline watch`: follows the registry's watch stream.
import type { Command } from 'commander';
import { CliError, EXIT } from '../client.js';
import { printable } from '../format.js';
import type { CommandContext } from './context.js';
import type { SandboxJson } from './sandbox-status.js';

export function registerWatchCommand(program: Command, { out, client, globals: g }: CommandContext): void {
  program
    .command('watch')
    .description('stream changes as they happen (Ctrl-C to stop)')
    .option('--since <revision>', 'resume after this revision')
    .option('--heartbeats', 'also print heartbeats')
    .action(async (opts, cmd: Command) => {
      const c = client(cmd);
      const json = !!g(cmd).json;
      const path = `/v1/watch${opts.since ? `?since=${encodeURIComponent(opts.since)}` : ''}`;
      // The timeout covers the stream's start only: once it flows, it stays open for as long as
      // the registry keeps it (heartbeats show it is alive).
      const started = new AbortController();
      const timer =
        c.timeoutMs > 0
          ? setTimeout(() => started.abort(new DOMException('timed out', 'TimeoutError')), c.timeoutMs)
          : undefined;
      let res: Response;
      try {
        res = await fetch(`${c.base}${path}`, { headers: c.headers(), signal: started.signal });
      } catch (err) {
        throw (err as Error)?.name === 'TimeoutError' ? c.timedOut(`GET ${path}`) : c.unreachable(err);
      } finally {
        clearTimeout(timer);
      }
      const type = res.headers.get('content-type') ?? '';
      if (res.status !== 200 || !type.startsWith('text/event-stream')) {
        const text = await res.text().catch(() => '');
        let reason: unknown;
        try {
          reason = (JSON.parse(text) as { message?: unknown }).message;
        } catch {
          // not the registry's JSON: reported below
        }
        if (typeof reason !== 'string') throw c.notARegistry('GET', path, res, text, 'not an event stream');
        throw new CliError(
          `watch: ${res.status} ${printable(reason)}`,
          res.status === 401 || res.status === 403 ? EXIT.auth : EXIT.error,
        );
      }
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let end = buf.indexOf('\n\n');
        while (end >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          end = buf.indexOf('\n\n');
          const event = /^event: (.*)$/m.exec(frame)?.[1];
          const dataText = /^data: (.*)$/m.exec(frame)?.[1];
          if (!event || !dataText) continue;
          if (event === 'heartbeat' && !opts.heartbeats) continue;
          const data = JSON.parse(dataText);
          if (json) {
            out.log(JSON.stringify({ event, ...data }));
            continue;
          }
          if (event === 'snapshot')
            out.log(
              `snapshot  rev ${data.revision}: ${data.sandboxes.filter((s: SandboxJson) => !s.deletedAt).length} sandboxes, ${data.groups.length} groups`,
            );
          else if (event === 'synced') out.log(`synced    rev ${data.revision}`);
          else if (event === 'heartbeat')
            out.log(
              `heartbeat rev ${data.revision} completeUntil ${new Date(data.completeUntil).toISOString()}`,
            );
          else
            out.log(
              printable(
                `${event.padEnd(9)} rev ${data.revision} ${data.kind} ${data.name}${data.object?.status ? ` (${data.object.status})` : ''}`,
              ),
            );
        }
      }
      throw new CliError('the registry closed the watch stream', EXIT.unreachable);
    });
}
