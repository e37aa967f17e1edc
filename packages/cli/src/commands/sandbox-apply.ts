import { routingBaggage } from '@branchline/core';
// `branchline sandbox apply -f spec.yaml`: makes the registry hold the sandbox the file
// describes, creating or updating it, and joins the route groups it names.
import { parseDuration } from '@branchline/registry';
import type { Command } from 'commander';
import { CliError, EXIT, isNoSuch, type RegistryClient } from '../client.js';
import { endpointsText, expiresIn, printable } from '../format.js';
import { groupLabel, inSpecTerms, loadKubernetes, loadSandboxSpec, sandboxBody } from '../spec.js';
import type { CommandContext } from './context.js';
import { type SandboxJson, waitReady } from './sandbox-status.js';

interface GroupJson {
  name: string;
  key: string;
  match: { labels: Record<string, string>; mode: 'all' | 'any' };
  members?: string[];
  header?: string;
}

type Endpoint = { http?: string | string[]; grpc?: string | string[] };

const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const sameEndpoint = (a: Endpoint | undefined, b: Endpoint | undefined) =>
  JSON.stringify([list(a?.http), list(a?.grpc)]) === JSON.stringify([list(b?.http), list(b?.grpc)]);

async function getOrNone<T>(c: RegistryClient, path: string, what: string, expect: string) {
  return c
    .request<T>('GET', path, undefined, expect)
    .then((r) => r.body)
    .catch((err) => {
      if (isNoSuch(err, what)) return undefined;
      throw err;
    });
}

/** What applying would change, one line each (`+` added, `~` changed, `-` removed, `!` refused). */
export function planLines(
  existing: SandboxJson | undefined,
  body: ReturnType<typeof sandboxBody>,
  newGroups: string[],
): { lines: string[]; refused: string[] } {
  const lines: string[] = [];
  const refused: string[] = [];
  const declared = existing?.declared ?? existing?.overrides ?? {};
  for (const [svc, ep] of Object.entries(body.overrides))
    if (!declared[svc]) lines.push(`+ service ${svc} → ${endpointsText(ep)}`);
    else if (!sameEndpoint(declared[svc], ep))
      lines.push(`~ service ${svc} → ${endpointsText(ep)} (was ${endpointsText(declared[svc])})`);
  for (const svc of Object.keys(declared))
    if (!body.overrides[svc]) lines.push(`- service ${svc} (was ${endpointsText(declared[svc])})`);
  const had = existing?.resources ?? {};
  for (const [r, v] of Object.entries(body.resources)) {
    const old = had[r];
    if (!old) lines.push(`+ resource ${r} (${v.type})`);
    else if (old.type !== v.type || JSON.stringify(old.spec ?? {}) !== JSON.stringify(v.spec))
      refused.push(
        `resource ${r} (${v.type}) differs from the sandbox's (${changedFields(old.spec, v.spec)})`,
      );
  }
  for (const r of Object.keys(had))
    if (!body.resources[r]) refused.push(`resource ${r} is not in the spec any more`);
  const labels = existing?.labels ?? {};
  for (const [k, v] of Object.entries(body.labels))
    if (labels[k] === undefined) lines.push(`+ label ${k}=${v}`);
    else if (labels[k] !== v) lines.push(`~ label ${k}=${v} (was ${labels[k]})`);
  for (const g of newGroups) lines.push(`+ route group ${g}`);
  return { lines: lines.map(printable), refused: refused.map(printable) };
}

function changedFields(a: Record<string, unknown> = {}, b: Record<string, unknown> = {}): string {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
    (k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]),
  );
  return keys
    .map((k) => `${k}: ${JSON.stringify(a[k]) ?? 'unset'} → ${JSON.stringify(b[k]) ?? 'unset'}`)
    .join(', ');
}

/** Waits until the tombstone of `name` says its resources are gone. */
async function waitDeleted(c: RegistryClient, name: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await getOrNone<SandboxJson>(
      c,
      `/v1/sandboxes/${encodeURIComponent(name)}?deleted=true`,
      'sandbox',
      'name',
    );
    if (!s || s.status === 'deleted') return;
    if (Date.now() > deadline)
      throw new CliError(
        `sandbox ${name}: its old resources are still being removed after ${timeoutMs} ms; apply again later`,
        EXIT.notReady,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

export function registerApplyCommand(sandbox: Command, { out, client, globals }: CommandContext): void {
  sandbox
    .command('apply')
    .description('create or update the sandbox a spec file describes (YAML or JSON; see docs/ci.md)')
    .requiredOption('-f, --file <spec>', 'the sandbox spec file (- for stdin)')
    .option('-w, --wait', "wait until the sandbox's resources (databases, forks) are ready")
    .option('--wait-timeout <duration>', 'give up waiting after this long', '10m')
    .option('--dry-run', 'print what would change, change nothing')
    .option(
      '--recreate',
      "when a resource in the spec differs from the sandbox's (a new image), delete the sandbox and create it again",
    )
    .action(async (opts, cmd: Command) => {
      const json = !!globals(cmd).json;
      const waitMs = parseDuration(opts.waitTimeout);
      if (waitMs === undefined)
        throw new CliError(
          `--wait-timeout ${JSON.stringify(opts.waitTimeout)} is not a duration`,
          EXIT.usage,
        );
      const spec = loadSandboxSpec(opts.file);
      const body = sandboxBody(spec, opts.file, await loadKubernetes());
      const say = (line: string) => out.err(printable(line));
      const c = client(cmd);
      const path = `/v1/sandboxes/${encodeURIComponent(spec.name)}`;
      const existing = await getOrNone<SandboxJson>(c, path, 'sandbox', 'name');

      // Route groups: join an existing group by taking on the labels it matches; a group that
      // does not exist yet is created matching the label group.<name>, and goes away with its
      // last member (expireWhenUnmatched).
      const groupLabels: Record<string, string> = {};
      const newGroups: string[] = [];
      for (const g of spec.groups) {
        const found = await getOrNone<GroupJson>(
          c,
          `/v1/routegroups/${encodeURIComponent(g)}`,
          'route group',
          'name',
        );
        if (!found) {
          newGroups.push(g);
          groupLabels[groupLabel(g)] = 'true';
        } else if (found.match.mode === 'all') {
          for (const [k, v] of Object.entries(found.match.labels)) {
            if (body.labels[k] !== undefined && body.labels[k] !== v)
              throw new CliError(
                `${opts.file}: groups: route group ${g} matches sandboxes labelled ${k}=${v}, but labels.${k} is ${JSON.stringify(body.labels[k])}; change one of them`,
                EXIT.usage,
              );
            groupLabels[k] = v;
          }
        } else {
          const current = { ...existing?.labels, ...body.labels };
          const labels = Object.entries(found.match.labels);
          if (!labels.some(([k, v]) => current[k] === v)) {
            const free = labels.find(([k]) => body.labels[k] === undefined) ?? labels[0]!;
            groupLabels[free[0]] = free[1];
          }
        }
      }
      // Labels the sandbox has and the spec does not mention are kept (the pr and repo labels
      // tie it to its pull request); the spec's win.
      const want = { ...body, labels: { ...body.labels, ...groupLabels } };
      const plan = planLines(existing, want, newGroups);
      want.labels = { ...(existing?.labels ?? {}), ...want.labels };

      if (opts.dryRun) {
        const verdict = !existing
          ? `sandbox ${spec.name} would be created`
          : plan.lines.length || plan.refused.length
            ? `sandbox ${spec.name} would be updated`
            : `sandbox ${spec.name} is up to date`;
        if (json)
          out.log(
            JSON.stringify(
              {
                name: spec.name,
                action: existing ? 'update' : 'create',
                changes: plan.lines,
                refused: plan.refused,
                body: want,
              },
              null,
              2,
            ),
          );
        else
          out.log(
            [
              printable(verdict),
              ...plan.lines.map((l) => `  ${l}`),
              ...(existing && want.ttl !== undefined
                ? [`  ~ ttl: ${printable(String(want.ttl))} from now`]
                : []),
              ...plan.refused.map(
                (l) =>
                  `  ! ${l}: a live sandbox's resources cannot change; --recreate deletes and creates it`,
              ),
            ].join('\n'),
          );
        return;
      }

      if (existing && plan.refused.length) {
        if (!opts.recreate)
          throw new CliError(
            `sandbox ${spec.name}: ${plan.refused.join('; ')}; a live sandbox's resources cannot change (they hold data): add --recreate to delete the sandbox and create it again with the same key`,
            EXIT.conflict,
          );
        say(`sandbox ${spec.name}: deleting it to recreate it (${plan.refused.join('; ')})`);
        await c.request('DELETE', path, undefined, 'deleted');
        await waitDeleted(c, spec.name, waitMs);
        // It comes back with the same key, unless the spec names another.
        want.key ??= existing.key;
      }
      const recreated = !!existing && plan.refused.length > 0;
      const { status, body: put } = await c
        .request<SandboxJson>('PUT', path, want, 'name')
        .catch((err: unknown) => {
          if (!(err instanceof CliError) || err.exitCode !== EXIT.usage) throw err;
          throw new CliError(`${opts.file}: ${inSpecTerms(err.message, spec)}`, err.exitCode, err.response);
        });
      say(
        status === 201
          ? `sandbox ${spec.name}: ${recreated ? 'recreated' : 'created'} (key ${put.key})`
          : plan.lines.length
            ? `sandbox ${spec.name}: updated (${plan.lines.join(', ')})`
            : `sandbox ${spec.name}: unchanged${body.ttl !== undefined ? ', ttl renewed' : ''}`,
      );
      const groups: GroupJson[] = [];
      for (const g of spec.groups) {
        if (newGroups.includes(g)) {
          const { body: made } = await c.request<GroupJson>(
            'PUT',
            `/v1/routegroups/${encodeURIComponent(g)}`,
            { match: { labels: { [groupLabel(g)]: 'true' }, mode: 'all' }, expireWhenUnmatched: true },
            'name',
          );
          say(`route group ${g}: created (key ${made.key}); ${spec.name} is a member`);
          groups.push(made);
        } else {
          const found = await getOrNone<GroupJson>(
            c,
            `/v1/routegroups/${encodeURIComponent(g)}`,
            'route group',
            'name',
          );
          if (found) {
            say(`route group ${g}: ${spec.name} is a member (key ${found.key})`);
            groups.push(found);
          }
        }
      }
      let s: SandboxJson = put;
      if (opts.wait) s = await waitReady(c, spec.name, s, waitMs, out, false);
      const header = s.header ?? `baggage: ${routingBaggage(s.key)}`;
      const result = {
        ...s,
        header,
        ...(groups.length
          ? {
              routeGroups: groups.map((g) => ({
                name: g.name,
                key: g.key,
                header: `baggage: ${routingBaggage(g.key)}`,
              })),
            }
          : {}),
      };
      if (json) {
        out.log(JSON.stringify(result, null, 2));
        return;
      }
      out.log(
        [
          printable(
            `sandbox ${s.name} ${s.status === 'ready' ? 'is ready' : `is ${s.status}`} (key ${s.key}, expires ${expiresIn(s.expiresAt)})`,
          ),
          'send this header to route requests to it:',
          `  ${printable(header)}`,
          ...groups.map((g) => printable(`route group ${g.name}: baggage: ${routingBaggage(g.key)}`)),
          ...(s.sandboxToken
            ? [`sandbox token (shown once, for heartbeats): ${printable(s.sandboxToken)}`]
            : []),
        ].join('\n'),
      );
    });
}
