import { routingBaggage } from '@branchline/core';
// `branchline sandbox create|list|get|delete`.
import { parseDuration } from '@branchline/registry';
import type { Command } from 'commander';
import { CliError, EXIT, isNoSuch } from '../client.js';
import { endpointsText, expiresIn, labelsText, printable, table } from '../format.js';
import { specName } from '../spec.js';
import { type CommandContext, collect, pair, ttlOption } from './context.js';
import { databaseDetails, dbResources } from './db.js';
import { registerApplyCommand } from './sandbox-apply.js';
import { type SandboxJson, waitReady } from './sandbox-status.js';

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

/** Registers `sandbox` and its subcommands; returns it so more subcommands can be added. */
export function registerSandboxCommand(program: Command, ctx: CommandContext): Command {
  const { out, client, print, globals: g } = ctx;
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
          `  ${printable(s.header ?? `baggage: ${routingBaggage(s.key)}`)}`,
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
          `key:      ${printable(`${s.key}   (header: baggage: ${routingBaggage(s.key)})`)}`,
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
    .argument('[name]', 'the sandbox (or give -f)')
    .option('-f, --file <spec>', 'delete the sandbox this spec file names (only its name is read)')
    .option('--ignore-not-found', 'succeed (exit 0) when there is no sandbox of that name')
    .action(async (given: string | undefined, opts, cmd: Command) => {
      if ((given === undefined) === (opts.file === undefined))
        throw new CliError('sandbox delete needs a sandbox name or -f <spec file>, not both', EXIT.usage);
      const name = given ?? specName(opts.file);
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
  registerApplyCommand(sandbox, ctx);
  return sandbox;
}
