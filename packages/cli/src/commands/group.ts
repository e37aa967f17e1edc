// `branchline group create|list|delete`: route groups.
import type { Command } from 'commander';
import { isNoSuch } from '../client.js';
import { expiresIn, labelsText, printable, table } from '../format.js';
import { type CommandContext, collect, pair, ttlOption } from './context.js';

export function registerGroupCommand(program: Command, { client, print }: CommandContext): void {
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
}
