// `branchline registry`: runs the registry server until SIGTERM/SIGINT.
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
import { type Command, Option } from 'commander';
import { CliError, EXIT } from '../client.js';
import { type CommandContext, collect } from './context.js';

export function registerRegistryCommand(program: Command, { out }: CommandContext): void {
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
    .addOption(
      new Option(
        '--github-sandbox-template <file>',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: the template's variables, spelled as in the file
        'JSON or YAML sandbox (create body and name, with ${PR} ${REPO} ${OWNER} ${BRANCH} ${BRANCH_SLUG} ${SHA}) the GitHub webhook creates when a pull request opens',
      ).env('BRANCHLINE_GITHUB_SANDBOX_TEMPLATE'),
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
          githubSandboxTemplate: opts.githubSandboxTemplate,
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
