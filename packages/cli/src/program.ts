import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { CliError, DEFAULT_TIMEOUT_MS, EXIT } from './client.js';
import { commandContext, type Out } from './commands/context.js';
import { registerDbCommand } from './commands/db.js';
import { registerGroupCommand } from './commands/group.js';
import { registerProxyCommand } from './commands/proxy.js';
import { registerRegistryCommand } from './commands/registry.js';
import { registerRulesCommand } from './commands/rules.js';
import { registerSandboxCommand } from './commands/sandbox.js';
import { registerWatchCommand } from './commands/watch.js';
import { printable } from './format.js';

/** This package's version (`branchline --version`). */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string })
  .version;

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

  const ctx = commandContext(out);
  registerRegistryCommand(program, ctx);
  registerSandboxCommand(program, ctx);
  registerGroupCommand(program, ctx);
  registerRulesCommand(program, ctx);
  registerWatchCommand(program, ctx);
  registerProxyCommand(program, out);
  registerDbCommand(program, out);

  for (const cmd of [program, ...allCommands(program)]) {
    cmd.exitOverride();
    cmd.configureOutput({ writeOut: (s) => out.log(s.trimEnd()), writeErr: (s) => out.err(s.trimEnd()) });
  }
  return program;
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((x) => [x, ...allCommands(x)]);
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
