// What every command file shares: the global options, the registry client they make, output.
import { parseDuration } from '@branchline/registry';
import type { Command } from 'commander';
import { CliError, checkTimeout, EXIT, RegistryClient } from '../client.js';

/** Where a command writes: `log` for results (stdout), `err` for progress and errors (stderr). */
export type Out = { log: (s: string) => void; err: (s: string) => void; isTTY: boolean };

/** The options given before or after any command (`--registry`, `--token`, `--timeout`, `--json`). */
export interface Globals {
  registry: string;
  token?: string;
  json?: boolean;
  timeout: string;
}

/** Handed to every command file's `register…` function. */
export interface CommandContext {
  out: Out;
  globals(cmd: Command): Globals;
  /** A client for the registry the global options name. */
  client(cmd: Command): RegistryClient;
  /** Prints `value` as JSON with `--json`, else `text()`. */
  print(cmd: Command, value: unknown, text: () => string): void;
}

export function commandContext(out: Out): CommandContext {
  const globals = (cmd: Command): Globals => cmd.optsWithGlobals() as Globals;
  return {
    out,
    globals,
    client(cmd) {
      const o = globals(cmd);
      return new RegistryClient(o.registry, o.token, checkTimeout(parseDuration(o.timeout), o.timeout));
    },
    print(cmd, value, text) {
      out.log(globals(cmd).json ? JSON.stringify(value, null, 2) : text());
    },
  };
}

/** For repeatable options: `.option('-l, --label <k=v>', '…', collect, [])`. */
export const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** Splits `name=value`; `what` names the option in the error. */
export function pair(text: string, what: string): [string, string] {
  const i = text.indexOf('=');
  if (i <= 0 || i === text.length - 1)
    throw new CliError(`${what} ${JSON.stringify(text)} must look like name=value`, EXIT.usage);
  return [text.slice(0, i), text.slice(i + 1)];
}

/** Checks a `--ttl` value. */
export function ttlOption(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (parseDuration(v) === undefined)
    throw new CliError(`--ttl ${JSON.stringify(v)} is not a duration; use e.g. 30m, 2h, 1d`, EXIT.usage);
  return v;
}
