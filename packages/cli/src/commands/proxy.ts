import type { Command } from 'commander';
import { CliError, EXIT } from '../client.js';

/** What `startKeyProxy` of @branchline/testing returns (declared here: see the import below). */
interface KeyProxy {
  readonly url: string;
  readonly to: string;
  readonly key: string;
  readonly header: string;
  close(): Promise<void>;
}
type StartKeyProxy = (options: {
  key: string;
  to: string;
  port?: number;
  host?: string;
}) => Promise<KeyProxy>;

interface Out {
  log(s: string): void;
}

// Loaded when the command runs, by a computed name so @branchline/cli builds without
// @branchline/testing's types; at run time the workspace (or an installed package) provides it.
async function loadProxy(): Promise<StartKeyProxy> {
  const name = '@branchline/testing';
  try {
    const mod = (await import(name)) as { startKeyProxy: StartKeyProxy };
    return mod.startKeyProxy;
  } catch (err) {
    throw new CliError(
      `branchline proxy needs the @branchline/testing package (npm install -D @branchline/testing): ${(err as Error).message}`,
      EXIT.error,
    );
  }
}

/**
 * `branchline proxy --key K --to URL`: a local proxy that adds the routing key to every request,
 * for tools that cannot set headers. Runs until Ctrl-C.
 */
export function registerProxyCommand(program: Command, out: Out): void {
  program
    .command('proxy')
    .description(
      'run a local proxy that adds the routing key to every request (for tools that cannot set headers)',
    )
    .requiredOption('-k, --key <key>', 'routing key to add (baggage: branchline=<key>)')
    .requiredOption('--to <url>', 'where to send requests, e.g. http://gateway.staging:8080')
    .option('-p, --port <port>', 'local port (0 = any free port)', '8787')
    .option('--host <host>', 'local address to bind', '127.0.0.1')
    .action(async (opts: { key: string; to: string; port: string; host: string }) => {
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new CliError(`--port ${JSON.stringify(opts.port)} is not a port number`, EXIT.usage);
      const startKeyProxy = await loadProxy();
      let proxy: KeyProxy;
      try {
        proxy = await startKeyProxy({ key: opts.key, to: opts.to, port, host: opts.host });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e instanceof TypeError)
          throw new CliError(e.message.replace(/^@branchline\/testing: /, ''), EXIT.usage);
        if (e.code === 'EADDRINUSE')
          throw new CliError(`port ${port} on ${opts.host} is in use; pick another with --port`, EXIT.usage);
        throw err;
      }
      out.log(`branchline proxy listening on ${proxy.url} → ${proxy.to} (adds ${proxy.header})`);
      out.log('point your tool at the address above; Ctrl-C to stop');
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          proxy.close().finally(resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
