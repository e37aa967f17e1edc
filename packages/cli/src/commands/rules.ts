// `branchline rules`: the route table as the registry computes it.
import type { Command } from 'commander';
import { endpointsText, printable, table } from '../format.js';
import type { CommandContext } from './context.js';

export function registerRulesCommand(program: Command, { client, print }: CommandContext): void {
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
}
