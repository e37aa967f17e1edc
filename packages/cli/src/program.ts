import { createRequire } from 'node:module';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  createRegistryServer,
  parseDuration,
  parseTokens,
  type RegistryServer,
  type ResourceHook,
  type TokenEntry,
} from '@branchline/registry';
import { Command, CommanderError, Option } from 'commander';
import { CliError, checkTimeout, DEFAULT_TIMEOUT_MS, EXIT, isNoSuch, RegistryClient } from './client.js';
import { databaseDetails, dbResources, registerDbCommand } from './db-command.js';
import { endpointsText, expiresIn, labelsText, printable, table } from './format.js';
import { registerProxyCommand } from './proxy-command.js';

interface Globals {
  registry: string;
  token?: string;
  json?: boolean;
  timeout: string;
}

type Out = { log: (s: string) => void; err: (s: string) => void; isTTY: boolean };

/** This package's version (`branchline --version`). */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string })
  .version;

const collect = (v: string, prev: string[]) => [...prev, v];

function pair(text: string, what: string): [string, string] {
  const i = text.indexOf('=');
  if (i <= 0 || i === text.length - 1)
    throw new CliError(`${what} ${JSON.stringify(text)} must look like name=value`, EXIT.usage);
  return [text.slice(0, i), text.slice(i + 1)];
}

function ttlOption(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (parseDuration(v) === undefined)
    throw new CliError(`--ttl ${JSON.stringify(v)} is not a duration; use e.g. 30m, 2h, 1d`, EXIT.usage);
  return v;
}

interface SandboxJson {
  name: string;
  key: string;
  status: string;
  overrides: Record<string, { http?: string | string[]; grpc?: string | string[] }>;
  labels: Record<string, string>;
  expiresAt: number | null;
  deletedAt?: number | null;
  resources?: Record<
    string,
    { type: string; status: string; error?: string; progress?: Record<string, unknown> }
  >;
  header?: string;
  sandboxToken?: string;
}

function sandboxRows(list: SandboxJson[]): Record<string, string>[] {
  return list.map((s) => ({
    name: s.name,
    key: s.key,
    services: Object.entries(s.overrides)
      .map(([svc, ep]) => `${svc}→${endpointsText(ep)}`)
      .join(' '),
    status: s.status,
    expires: s.deletedAt ? 'deleted' : expiresIn(s.expiresAt),
    labels: labelsText(s.labels),
  }));
}

function progressLine(s: SandboxJson): string {
  const parts = Object.entries(s.resources ?? {}).map(([n, r]) => {
    const p = r.progress as { done?: number; total?: number; unit?: string; phase?: string } | undefined;
    const pr = p?.total
      ? ` ${progressBar(p.done ?? 0, p.total)} ${p.done ?? 0}/${p.total}${p.unit ? ` ${p.unit}` : ''}`
      : p?.phase
        ? ` ${p.phase}`
        : '';
    return `${n}: ${r.status}${pr}`;
  });
  return printable(parts.length ? parts.join(', ') : s.status);
}

/** A 20-cell text bar, e.g. `[#########...........]`. */
function progressBar(done: number, total: number): string {
  const cells = 20;
  const filled = Math.max(0, Math.min(cells, Math.round((done / total) * cells)));
  return `[${'#'.repeat(filled)}${'.'.repeat(cells - filled)}]`;
}

/** Builds the `branchline` command. `out` is injectable so tests and embedders can capture it. */
export function createProgram(out: Out = defaultOut()): Command {
  const program = new Command('branchline')
    .description('Branchline: personal sandboxes in a shared staging environment')
    .version(VERSION, '-V, --version', 'print the version of the branchline command')
    .addOption(
      new Option('--registry <url>', 'registry URL')
        .env('BRANCHLINE_REGISTRY')
        .default('http://127.0.0.1:7070'),
    )
    .addOption(new Option('--token <token>', 'bearer token for the registry').env('BRANCHLINE_TOKEN'))
    .addOption(
      new Option('--timeout <duration>', 'give up on a registry request after this long (0 = never)')
        .env('BRANCHLINE_TIMEOUT')
        .default(`${DEFAULT_TIMEOUT_MS / 1000}s`),
    )
    .option('--json', 'print JSON instead of tables')
    .showHelpAfterError();

  const g = (cmd: Command): Globals => cmd.optsWithGlobals() as Globals;
  const client = (cmd: Command) => {
    const o = g(cmd);
    return new RegistryClient(o.registry, o.token, checkTimeout(parseDuration(o.timeout), o.timeout));
  };
  const print = (cmd: Command, value: unknown, text: () => string) =>
    out.log(g(cmd).json ? JSON.stringify(value, null, 2) : text());

  program
    .command('registry')
    .description('run the registry server')
    .addOption(
      new Option('-p, --port <port>', 'port to listen on').env('BRANCHLINE_REGISTRY_PORT').default('7070'),
    )
    .addOption(
      new Option('--host <host>', 'address to bind').env('BRANCHLINE_REGISTRY_HOST').default('127.0.0.1'),
    )
    .addOption(
      new Option('--store <path-or-url>', 'SQLite file path, or a postgres:// URL for several replicas')
        .env('BRANCHLINE_REGISTRY_STORE')
        .default('./branchline-registry.db'),
    )
    .addOption(
      new Option('--token-file <file>', 'tokens file (see docs/registry.md#tokens)').env(
        'BRANCHLINE_REGISTRY_TOKENS_FILE',
      ),
    )
    .addOption(
      new Option('--github-webhook-secret <secret>', 'secret of the GitHub webhook').env(
        'BRANCHLINE_GITHUB_WEBHOOK_SECRET',
      ),
    )
    .option(
      '--plugin <module>',
      'load a registry plugin (a module exporting resourceHooks and/or setup(server)); repeatable',
      collect,
      [],
    )
    .option('--public-reads', 'allow reads (GET, watch) without a token even when tokens are configured')
    .option('--tombstone-retention <duration>', 'how long deleted sandboxes stay as tombstones', '6h')
    .option(
      '--default-ttl <duration>',
      'TTL of sandboxes created without one ("none" = never expire, needs --max-ttl none)',
      '24h',
    )
    .option('--max-ttl <duration>', 'longest TTL a request may ask for ("none" = no maximum)', '30d')
    .addOption(
      new Option(
        '--allow-endpoints <list>',
        'comma-separated networks and host patterns endpoints must be in (10.0.0.0/8,*.staging.svc.cluster.local)',
      ).env('BRANCHLINE_REGISTRY_ALLOW_ENDPOINTS'),
    )
    .addOption(
      new Option(
        '--allow-origins <list>',
        'comma-separated origins of web pages allowed to write (https://tools.example.com)',
      ).env('BRANCHLINE_REGISTRY_ALLOW_ORIGINS'),
    )
    .option(
      '--heartbeat-interval <duration>',
      'watch heartbeat interval (completeUntil advances this often)',
      '500ms',
    )
    .option(
      '--watch-flush-interval <duration>',
      'least time between two writes to watchers; changes arriving sooner share the next write',
      '20ms',
    )
    .action(async (opts, cmd: Command) => {
      const tokens: TokenEntry[] = process.env.BRANCHLINE_REGISTRY_TOKENS
        ? parseTokens(process.env.BRANCHLINE_REGISTRY_TOKENS, 'BRANCHLINE_REGISTRY_TOKENS')
        : [];
      const dur = (v: string, flag: string) => {
        const ms = parseDuration(v);
        if (ms === undefined)
          throw new CliError(`${flag} ${JSON.stringify(v)} is not a duration`, EXIT.usage);
        return ms;
      };
      const list = (v: string | undefined) =>
        v === undefined
          ? undefined
          : v
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean);
      // Left unset, the default TTL is 24 h or --max-ttl, whichever is shorter.
      const defaultTtlMs =
        cmd.getOptionValueSource('defaultTtl') === 'default'
          ? undefined
          : opts.defaultTtl === 'none'
            ? null
            : dur(opts.defaultTtl, '--default-ttl');
      let server: ReturnType<typeof createRegistryServer>;
      try {
        server = createRegistryServer({
          store: opts.store,
          tokens,
          tokensFile: opts.tokenFile,
          readRequiresToken: opts.publicReads ? false : undefined,
          githubWebhookSecret: opts.githubWebhookSecret,
          tombstoneRetentionMs: dur(opts.tombstoneRetention, '--tombstone-retention'),
          defaultTtlMs,
          maxTtlMs: opts.maxTtl === 'none' ? null : dur(opts.maxTtl, '--max-ttl'),
          allowEndpoints: list(opts.allowEndpoints),
          allowOrigins: list(opts.allowOrigins),
          heartbeatIntervalMs: dur(opts.heartbeatInterval, '--heartbeat-interval'),
          watchFlushIntervalMs: dur(opts.watchFlushInterval, '--watch-flush-interval'),
        });
      } catch (err) {
        // A bad --allow-endpoints or --allow-origins entry, --default-ttl over --max-ttl.
        if (err instanceof TypeError) throw new CliError(err.message, EXIT.usage);
        throw err;
      }
      for (const spec of opts.plugin as string[]) await loadPlugin(spec, server);
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new CliError(`--port ${JSON.stringify(opts.port)} is not a port number`, EXIT.usage);
      const url = await server.listen(port, opts.host);
      out.log(`branchline registry listening on ${url} (store: ${server.store.description})`);
      void cmd;
      await new Promise<void>((resolve) => {
        const stop = () => {
          out.log('branchline registry: shutting down');
          server.close().finally(resolve);
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });

  const sandbox = program.command('sandbox').description('create, list, inspect and delete sandboxes');
  sandbox
    .command('create')
    .description('create (or update) a sandbox')
    .argument('<name>', 'sandbox name (lowercase letters, digits, hyphens)')
    .option('-s, --service <svc=url>', 'route service svc to URL (repeatable)', collect, [])
    .option('--grpc <svc=host:port>', 'route gRPC service svc to host:port (repeatable)', collect, [])
    .option(
      '-l, --label <k=v>',
      'label (repeatable); pr=<number> and repo=<owner/name> tie it to a pull request. An existing sandbox keeps its other labels',
      collect,
      [],
    )
    .option('--remove-label <k>', 'remove this label from an existing sandbox (repeatable)', collect, [])
    .option('--ttl <duration>', 'time to live, e.g. 2h')
    .option('-k, --key <key>', 'routing key (default: the name, or the name with a suffix)')
    .option(
      '-r, --resource <name=type[:json]>',
      'declare a resource, e.g. db=postgres:{"from":"orders"}',
      collect,
      [],
    )
    .option(
      '--db <database>',
      'give the sandbox its own copy of this PostgreSQL database (repeatable; implies --wait)',
      collect,
      [],
    )
    .option('-w, --wait', 'wait until its resources are ready')
    .option('--wait-timeout <duration>', 'give up waiting after this long', '10m')
    .action(async (name: string, opts, cmd: Command) => {
      const overrides: Record<string, { http?: string[]; grpc?: string[] }> = {};
      for (const s of opts.service) {
        const [svc, url] = pair(s, '--service');
        const ep = overrides[svc] ?? {};
        ep.http = [...(ep.http ?? []), url];
        overrides[svc] = ep;
      }
      for (const s of opts.grpc) {
        const [svc, target] = pair(s, '--grpc');
        const ep = overrides[svc] ?? {};
        ep.grpc = [...(ep.grpc ?? []), target];
        overrides[svc] = ep;
      }
      const given: Record<string, string> = Object.fromEntries(
        opts.label.map((l: string) => pair(l, '--label')),
      );
      const resources: Record<string, { type: string; spec: Record<string, unknown> }> = {};
      for (const r of opts.resource) {
        const [rname, rest] = pair(r, '--resource');
        const colon = rest.indexOf(':');
        const type = colon < 0 ? rest : rest.slice(0, colon);
        let spec: Record<string, unknown> = {};
        if (colon >= 0) {
          try {
            spec = JSON.parse(rest.slice(colon + 1));
          } catch {
            throw new CliError(`--resource ${rname}: the spec after ":" must be JSON`, EXIT.usage);
          }
        }
        resources[rname] = { type, spec };
      }
      if (opts.db.length) Object.assign(resources, dbResources(opts.db));
      const ttl = opts.ttl ? ttlOption(opts.ttl) : undefined;
      const c = client(cmd);
      const path = `/v1/sandboxes/${encodeURIComponent(name)}`;
      // The registry's PUT replaces the sandbox. Labels are kept unless removed on purpose: the
      // pr and repo labels tie it to its pull request (the webhook deletes it by them), and a
      // CI job re-running `create` without --label must not untie it.
      const existing = await c
        .request<SandboxJson>('GET', path, undefined, 'name')
        .then((r) => r.body.labels ?? {})
        .catch((err) => {
          if (isNoSuch(err, 'sandbox')) return {};
          throw err;
        });
      const labels: Record<string, string> = { ...existing, ...given };
      for (const k of opts.removeLabel as string[]) delete labels[k];
      const body: Record<string, unknown> = { overrides, labels, resources };
      if (ttl) body.ttl = ttl;
      if (opts.key) body.key = opts.key;
      let { body: s } = await c.request<SandboxJson>('PUT', path, body, 'name');
      if (opts.wait || opts.db.length)
        s = await waitReady(c, name, s, parseDuration(opts.waitTimeout) ?? 600_000, out, !!g(cmd).json);
      const dbText = opts.db.length ? await databaseDetails(c.base, name, s.sandboxToken, opts.db) : '';
      print(cmd, s, () =>
        [
          printable(
            `sandbox ${s.name} ${s.status === 'ready' ? 'is ready' : `is ${s.status}`} (key ${s.key}, expires ${expiresIn(s.expiresAt)})`,
          ),
          'send this header to route requests to it:',
          `  ${printable(s.header ?? `baggage: branchline=${s.key}`)}`,
          ...(s.sandboxToken
            ? [`sandbox token (shown once, for heartbeats): ${printable(s.sandboxToken)}`]
            : []),
          ...(dbText ? [dbText] : []),
        ].join('\n'),
      );
    });
  sandbox
    .command('list')
    .description('list sandboxes')
    .option('-l, --label <k=v>', 'only sandboxes with this label (repeatable)', collect, [])
    .option('--deleted', 'include tombstones')
    .action(async (opts, cmd: Command) => {
      const q = new URLSearchParams();
      for (const l of opts.label) q.append('label', l);
      if (opts.deleted) q.set('deleted', 'true');
      const { body } = await client(cmd).request<{ sandboxes: SandboxJson[] }>(
        'GET',
        `/v1/sandboxes${q.size ? `?${q}` : ''}`,
        undefined,
        'sandboxes',
      );
      print(cmd, body.sandboxes, () =>
        table(sandboxRows(body.sandboxes), ['name', 'key', 'services', 'status', 'expires', 'labels']),
      );
    });
  sandbox
    .command('get')
    .description('show one sandbox')
    .argument('<name>')
    .action(async (name: string, _opts, cmd: Command) => {
      const { body: s } = await client(cmd).request<SandboxJson>(
        'GET',
        `/v1/sandboxes/${encodeURIComponent(name)}`,
        undefined,
        'name',
      );
      print(cmd, s, () =>
        [
          `name:     ${printable(s.name)}`,
          `key:      ${printable(`${s.key}   (header: baggage: branchline=${s.key})`)}`,
          `status:   ${printable(s.status)}`,
          `expires:  ${expiresIn(s.expiresAt)}`,
          `labels:   ${labelsText(s.labels) || '-'}`,
          'services:',
          ...Object.entries(s.overrides).map(([svc, ep]) => `  ${printable(svc)} → ${endpointsText(ep)}`),
          ...(Object.keys(s.resources ?? {}).length
            ? [
                'resources:',
                ...Object.entries(s.resources!).map(([n, r]) =>
                  printable(`  ${n} (${r.type}): ${r.status}${r.error ? ` — ${r.error}` : ''}`),
                ),
              ]
            : []),
        ].join('\n'),
      );
    });
  sandbox
    .command('delete')
    .description('delete a sandbox (its rules stop routing at once; resources are removed)')
    .argument('<name>')
    .option('--ignore-not-found', 'succeed (exit 0) when there is no sandbox of that name')
    .action(async (name: string, opts, cmd: Command) => {
      type Deleted = { deleted: SandboxJson | null; failed: { resource: string; error: string }[] };
      let answer: { status: number; body: Deleted };
      try {
        answer = await client(cmd).request<Deleted>(
          'DELETE',
          `/v1/sandboxes/${encodeURIComponent(name)}`,
          undefined,
          'deleted',
        );
      } catch (err) {
        if (!opts.ignoreNotFound || !isNoSuch(err, 'sandbox')) throw err;
        print(cmd, { deleted: null, failed: [] }, () =>
          printable(`no sandbox named ${name}; nothing to delete`),
        );
        return;
      }
      const { status, body } = answer;
      const failed = body.failed ?? [];
      print(cmd, body, () =>
        printable(
          status === 200
            ? `sandbox ${name} deleted`
            : `sandbox ${name} deleted; its rules stopped routing, resources still being removed${failed.length ? `: ${failed.map((f) => `${f.resource}: ${f.error}`).join('; ')}` : ''}`,
        ),
      );
      if (status !== 200) process.exitCode = EXIT.notReady;
    });

  const group = program.command('group').description('route groups: one key selecting several sandboxes');
  group
    .command('create')
    .description('create (or update) a route group')
    .argument('<name>')
    .requiredOption('-m, --match <k=v>', 'label the sandboxes must have (repeatable)', collect, [])
    .option('--any', 'match sandboxes with any of the labels (default: all)')
    .option('-k, --key <key>', 'routing key (default: the name)')
    .option('--ttl <duration>', 'time to live, e.g. 2h')
    .option('--expire-when-unmatched', 'delete the group once no sandbox matches it any more')
    .action(async (name: string, opts, cmd: Command) => {
      const body: Record<string, unknown> = {
        match: {
          labels: Object.fromEntries(opts.match.map((m: string) => pair(m, '--match'))),
          mode: opts.any ? 'any' : 'all',
        },
        expireWhenUnmatched: !!opts.expireWhenUnmatched,
      };
      if (opts.key) body.key = opts.key;
      if (opts.ttl) body.ttl = ttlOption(opts.ttl);
      const { body: gr } = await client(cmd).request<{
        name: string;
        key: string;
        members: string[];
        conflicts: { service: string; winner: string; losers: string[] }[];
        header: string;
      }>('PUT', `/v1/routegroups/${encodeURIComponent(name)}`, body, 'name');
      print(cmd, gr, () =>
        [
          `route group ${gr.name} (key ${gr.key}) matches: ${gr.members.join(', ') || '(no sandbox yet)'}`,
          ...gr.conflicts.map(
            (c) => `conflict on ${c.service}: ${c.winner} wins (older) over ${c.losers.join(', ')}`,
          ),
          'send this header to route requests to it:',
          `  ${gr.header}`,
        ]
          .map(printable)
          .join('\n'),
      );
    });
  group
    .command('list')
    .description('list route groups')
    .action(async (_opts, cmd: Command) => {
      const { body } = await client(cmd).request<{
        groups: {
          name: string;
          key: string;
          match: { labels: Record<string, string>; mode: string };
          members: string[];
          expiresAt: number | null;
          conflicts: unknown[];
        }[];
      }>('GET', '/v1/routegroups', undefined, 'groups');
      print(cmd, body.groups, () =>
        table(
          body.groups.map((x) => ({
            name: x.name,
            key: x.key,
            match: `${x.match.mode}:${labelsText(x.match.labels)}`,
            members: x.members.join(','),
            conflicts: String(x.conflicts.length),
            expires: expiresIn(x.expiresAt),
          })),
          ['name', 'key', 'match', 'members', 'conflicts', 'expires'],
        ),
      );
    });
  group
    .command('delete')
    .description('delete a route group')
    .argument('<name>')
    .option('--ignore-not-found', 'succeed (exit 0) when there is no route group of that name')
    .action(async (name: string, opts, cmd: Command) => {
      try {
        const { body } = await client(cmd).request(
          'DELETE',
          `/v1/routegroups/${encodeURIComponent(name)}`,
          undefined,
          'deleted',
        );
        print(cmd, body, () => printable(`route group ${name} deleted`));
      } catch (err) {
        if (!opts.ignoreNotFound || !isNoSuch(err, 'route group')) throw err;
        print(cmd, { deleted: null }, () => printable(`no route group named ${name}; nothing to delete`));
      }
    });

  program
    .command('rules')
    .description('list the rules: (service, key) → sandbox endpoints')
    .option('--service <service>', 'only this service')
    .option('--key <key>', 'only this routing key')
    .option('--sandbox <name>', 'only this sandbox')
    .action(async (opts, cmd: Command) => {
      const q = new URLSearchParams();
      if (opts.service) q.set('service', opts.service);
      if (opts.key) q.set('key', opts.key);
      if (opts.sandbox) q.set('sandbox', opts.sandbox);
      const { body } = await client(cmd).request<{
        rules: {
          service: string;
          key: string;
          sandbox: string;
          group?: string;
          http: string[];
          grpc: string[];
        }[];
        conflicts: { group: string; service: string; winner: string; losers: string[] }[];
      }>('GET', `/v1/rules${q.size ? `?${q}` : ''}`, undefined, 'rules');
      print(cmd, body, () =>
        [
          table(
            body.rules.map((r) => ({
              service: r.service,
              key: r.key,
              sandbox: r.sandbox,
              group: r.group ?? '',
              endpoints: endpointsText({ http: r.http, grpc: r.grpc }),
            })),
            ['service', 'key', 'sandbox', 'group', 'endpoints'],
          ),
          ...(body.conflicts ?? []).map((c) =>
            printable(
              `conflict in group ${c.group} on ${c.service}: ${c.winner} wins (older) over ${c.losers.join(', ')}`,
            ),
          ),
        ].join('\n'),
      );
    });

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

  registerProxyCommand(program, out);
  registerDbCommand(program, out);

  for (const cmd of [program, ...allCommands(program)]) {
    cmd.exitOverride();
    cmd.configureOutput({ writeOut: (s) => out.log(s.trimEnd()), writeErr: (s) => out.err(s.trimEnd()) });
  }
  return program;
}

/**
 * A registry plugin: a module whose default export or `branchlineRegistryPlugin` export has
 * `resourceHooks` (an array, or a function returning one) and/or `setup(server)`; or a module
 * that exports `resourceHooks` directly.
 */
async function loadPlugin(spec: string, server: RegistryServer): Promise<void> {
  let mod: Record<string, unknown>;
  try {
    const target = spec.startsWith('.') || isAbsolute(spec) ? pathToFileURL(resolvePath(spec)).href : spec;
    mod = (await import(target)) as Record<string, unknown>;
  } catch (err) {
    throw new CliError(`--plugin ${spec}: cannot load it (${(err as Error).message})`, EXIT.usage);
  }
  const plugin = (mod.branchlineRegistryPlugin ?? mod.default ?? mod) as {
    resourceHooks?: ResourceHook[] | (() => ResourceHook[]);
    setup?: (server: RegistryServer) => unknown;
  };
  const hooks = typeof plugin.resourceHooks === 'function' ? plugin.resourceHooks() : plugin.resourceHooks;
  if (!hooks && typeof plugin.setup !== 'function')
    throw new CliError(`--plugin ${spec}: it exports neither resourceHooks nor setup(server)`, EXIT.usage);
  for (const h of hooks ?? []) server.addResourceHook(h);
  await plugin.setup?.(server);
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((x) => [x, ...allCommands(x)]);
}

async function waitReady(
  c: RegistryClient,
  name: string,
  s: SandboxJson,
  timeoutMs: number,
  out: Out,
  quiet: boolean,
): Promise<SandboxJson> {
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  const deadline = Date.now() + timeoutMs;
  let i = 0;
  let lastLine = '';
  while (s.status !== 'ready') {
    if (s.status === 'failed')
      throw new CliError(`sandbox ${name} failed to become ready: ${progressLine(s)}`, EXIT.notReady);
    if (Date.now() > deadline)
      throw new CliError(
        `sandbox ${name} not ready after ${timeoutMs} ms: ${progressLine(s)}`,
        EXIT.notReady,
      );
    const line = `${frames[i++ % frames.length]} waiting for ${name}: ${progressLine(s)}`;
    if (!quiet) {
      if (out.isTTY) process.stderr.write(`\r\x1b[2K${line}`);
      else if (line.slice(2) !== lastLine) out.err(line);
      lastLine = line.slice(2);
    }
    await new Promise((r) => setTimeout(r, 250));
    const token = s.sandboxToken;
    s = {
      ...(await c.request<SandboxJson>('GET', `/v1/sandboxes/${encodeURIComponent(name)}`, undefined, 'name'))
        .body,
      sandboxToken: token,
      header: s.header,
    };
  }
  if (!quiet && out.isTTY) process.stderr.write('\r\x1b[2K');
  return s;
}

function defaultOut(): Out {
  return {
    log: (s) => process.stdout.write(`${s}\n`),
    err: (s) => process.stderr.write(`${s}\n`),
    isTTY: !!process.stderr.isTTY,
  };
}

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[] = process.argv, out: Out = defaultOut()): Promise<number> {
  const program = createProgram(out);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      )
        return EXIT.ok;
      return EXIT.usage;
    }
    // Messages may quote what the registry sent: printed escaped, like every other output.
    if (err instanceof CliError) {
      out.err(`branchline: ${printable(err.message)}`);
      return err.exitCode;
    }
    out.err(`branchline: ${printable(String((err as Error)?.message ?? err))}`);
    return EXIT.error;
  }
}
