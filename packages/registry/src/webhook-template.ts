// biome-ignore-all lint/suspicious/noTemplateCurlyInString: templates spell ${PR} and friends

// The sandbox template of the GitHub webhook (`githubSandboxTemplate`, `--github-sandbox-template`):
// a sandbox create body plus its `name`, with `${PR}`, `${REPO}`, `${SHA}`, `${BRANCH}`,
// `${BRANCH_SLUG}` and `${OWNER}` filled in from a pull request event. Read and checked once at start-up; each event's
// values are checked against core's naming rules where they land in a name, key or label.

import { readFileSync } from 'node:fs';
import {
  isValidLabelName,
  isValidLabelValue,
  isValidRoutingKey,
  isValidSandboxName,
  LABEL_NAME_RULE,
  MAX_KEY_LENGTH,
  MAX_LABEL_VALUE_LENGTH,
  ROUTING_KEY_RULE,
  SANDBOX_NAME_RULE,
} from '@branchline/core';
import { parse as parseYaml } from 'yaml';
import { sandboxBody } from './schemas.js';

/** The values a template may use, from the pull request event. */
export const TEMPLATE_VARIABLES = ['PR', 'REPO', 'SHA', 'BRANCH', 'BRANCH_SLUG', 'OWNER'] as const;
export type TemplateVariable = (typeof TEMPLATE_VARIABLES)[number];
export type TemplateValues = Record<TemplateVariable, string>;

/**
 * `${BRANCH_SLUG}`: the branch made fit for a sandbox name or key. Lowercased, every run of
 * characters other than a-z and 0-9 turned into one `-`, trimmed of `-`, and cut to the
 * 63 characters a name may have; a branch with nothing left (`___`, `日本`) gives `pr-<number>`.
 * `feature/Foo_bar` gives `feature-foo-bar`.
 */
export function branchSlug(branch: string, pr: string): string {
  const slug = branch
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, MAX_KEY_LENGTH)
    .replace(/-+$/, '');
  return slug === '' ? `pr-${pr}` : slug;
}

/** The fields of a template: a sandbox create body (docs/registry.md) and the sandbox's name. */
const FIELDS = ['name', 'key', 'labels', 'overrides', 'resources', 'ttl'];

/** What a template says, as read from its file (or given as an object). */
export interface GithubSandboxTemplate {
  /** The sandbox's name, e.g. `pr-${PR}`. */
  name: string;
  key?: string;
  labels?: Record<string, string>;
  overrides?: Record<string, { http?: string | string[]; grpc?: string | string[] }>;
  resources?: Record<string, { type: string; spec?: Record<string, unknown> }>;
  ttl?: string | number;
}

/** A template filled in for one event: the sandbox's name and its create body. */
export interface RenderedSandbox {
  name: string;
  body: Record<string, unknown>;
}

/** An event whose values do not fit the template; answered 422 with this message. */
export class TemplateRenderError extends Error {}

const VAR = /\$\$\{|\$\{([^}]*)\}/g;
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Values of a made-up event, to check at start-up that the template yields a valid body. */
const SAMPLE: TemplateValues = {
  PR: '1',
  REPO: 'repo',
  SHA: '0123456789abcdef0123456789abcdef01234567',
  BRANCH: 'main',
  BRANCH_SLUG: 'main',
  OWNER: 'owner',
};

/**
 * A template from `githubSandboxTemplate`: a JSON or YAML file's path, or the object itself.
 * Throws a TypeError naming the file and the field when it cannot be used.
 */
export class SandboxTemplate {
  readonly source: string;
  private readonly doc: Record<string, unknown>;

  constructor(template: string | GithubSandboxTemplate) {
    this.source = typeof template === 'string' ? template : 'githubSandboxTemplate';
    const doc = typeof template === 'string' ? readTemplateFile(template) : (template as unknown);
    const fail: (msg: string) => never = (msg) => {
      throw new TypeError(`branchline registry: the GitHub sandbox template ${this.source}: ${msg}`);
    };
    if (!isObject(doc)) fail(`must be an object with at least "name" (got ${JSON.stringify(doc)})`);
    for (const k of Object.keys(doc))
      if (!FIELDS.includes(k))
        fail(`${k}: not a field of a sandbox template; the fields are ${FIELDS.join(', ')}`);
    if (typeof doc.name !== 'string' || doc.name === '')
      fail('name: required, the sandbox\'s name such as "pr-${PR}"');
    // Placeholders go in values only; label and service names are fixed.
    const bad: string[] = [];
    walk(doc, '', (s, path) => {
      for (const m of s.matchAll(VAR))
        if (m[1] !== undefined && !(TEMPLATE_VARIABLES as readonly string[]).includes(m[1]))
          bad.push(
            `${path}: ${m[0]} is not a template variable (use ${TEMPLATE_VARIABLES.map((v) => `\${${v}}`).join(', ')}; $\${ is a literal \${)`,
          );
      return s;
    });
    if (bad.length) fail(bad.join('; '));
    this.doc = doc;
    // A made-up event must yield a valid body, so a typo shows at start-up, not on the first PR.
    let sample: RenderedSandbox | undefined;
    try {
      sample = this.render(SAMPLE);
    } catch (err) {
      fail(`with PR=1, REPO=repo, OWNER=owner, BRANCH=main: ${(err as Error).message}`);
    }
    const r = sandboxBody.safeParse(sample?.body);
    if (!r.success) {
      const i = r.error.issues[0]!;
      fail(`${i.path.map(String).join('.') || '(body)'}: ${i.message}`);
    }
  }

  /** Whether the template uses `${name}`. */
  uses(name: TemplateVariable): boolean {
    let found = false;
    walk(this.doc, '', (s) => {
      if (s.includes(`\${${name}}`)) found = true;
      return s;
    });
    return found;
  }

  /**
   * The template filled in with `values`. Throws a TemplateRenderError when a value makes the
   * name, key, a label or the ttl invalid, saying which variable and which rule.
   */
  render(values: TemplateValues): RenderedSandbox {
    const problems: string[] = [];
    const used = new Map<string, Set<TemplateVariable>>();
    const filled = walk(this.doc, '', (s, path) =>
      s.replace(VAR, (_m, v: string | undefined) => {
        if (v === undefined) return '${';
        const set = used.get(path) ?? new Set();
        set.add(v as TemplateVariable);
        used.set(path, set);
        return values[v as TemplateVariable];
      }),
    ) as Record<string, unknown>;
    const from = (path: string): string => {
      const vars = [...(used.get(path) ?? [])];
      return vars.length ? ` (from ${vars.map((v) => `${v}=${JSON.stringify(values[v])}`).join(', ')})` : '';
    };
    const name = filled.name as string;
    if (!isValidSandboxName(name))
      problems.push(
        `name: ${JSON.stringify(name)}${from('name')} is not a sandbox name: ${SANDBOX_NAME_RULE}`,
      );
    if (filled.key !== undefined && !isValidRoutingKey(filled.key))
      problems.push(
        `key: ${JSON.stringify(filled.key)}${from('key')} is not a routing key: ${ROUTING_KEY_RULE}`,
      );
    if (isObject(filled.labels))
      for (const [k, v] of Object.entries(filled.labels)) {
        if (!isValidLabelName(k))
          problems.push(`labels: ${JSON.stringify(k)} is not a label name: ${LABEL_NAME_RULE}`);
        if (!isValidLabelValue(v))
          problems.push(
            `labels.${k}: ${typeof v === 'string' ? `is ${v.length} characters${from(`labels.${k}`)}` : 'must be a string'}; a label value is at most ${MAX_LABEL_VALUE_LENGTH} characters`,
          );
      }
    if (problems.length) throw new TemplateRenderError(problems.join('; '));
    const { name: _name, ...body } = filled;
    return { name, body };
  }
}

/** Applies `fn` to every string value (not to keys), keeping the document's shape. */
function walk(v: unknown, path: string, fn: (s: string, path: string) => string): unknown {
  if (typeof v === 'string') return fn(v, path);
  if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}.${i}`, fn));
  if (isObject(v))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, path ? `${path}.${k}` : k, fn)]));
  return v;
}

function readTemplateFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new TypeError(
      `branchline registry: cannot read the GitHub sandbox template ${file} (${e.code === 'ENOENT' ? 'no such file' : e.message})`,
    );
  }
  try {
    // JSON is YAML too.
    return parseYaml(text, { uniqueKeys: true });
  } catch (err) {
    throw new TypeError(
      `branchline registry: the GitHub sandbox template ${file} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`,
    );
  }
}
