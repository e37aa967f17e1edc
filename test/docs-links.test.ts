// Relative links in the user docs (docs/*.md) and the package READMEs (packages/*/README.md)
// must point at files that exist, and `#anchors` into Markdown files at headings that exist.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function markdownFiles(): string[] {
  const files = readdirSync(join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(root, 'docs', f));
  for (const p of readdirSync(join(root, 'packages'))) {
    const readme = join(root, 'packages', p, 'README.md');
    if (existsSync(readme)) files.push(readme);
  }
  files.push(join(root, 'README.md'));
  return files;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = !fenced && /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const slug = m[1]!
      .replace(/`/g, '')
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

/** Every relative link target in a Markdown file (inline links and images, outside code). */
function relativeLinks(markdown: string): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.trimStart().startsWith('```')) {
      fenced = !fenced;
      continue;
    }
    if (fenced) continue;
    const text = line.replace(/`[^`]*`/g, '');
    for (const m of text.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = m[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      out.push(target);
    }
  }
  return out;
}

/** The broken links of one file, as "target (reason)". */
function brokenLinks(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const broken: string[] = [];
  for (const link of relativeLinks(text)) {
    const [path, anchor] = link.split('#') as [string, string | undefined];
    const target = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
    if (!existsSync(target)) {
      broken.push(`${link} (no such file)`);
      continue;
    }
    if (anchor && target.endsWith('.md') && statSync(target).isFile()) {
      if (!anchors(readFileSync(target, 'utf8')).has(anchor.toLowerCase()))
        broken.push(`${link} (no heading #${anchor})`);
    }
  }
  return broken;
}

// Paths the docs name that a run creates, not the repository: benchmark results, and the
// directory the getting-started guide has the reader create.
const GENERATED = [/^bench\/results\//, /^examples\/mine\//];

/** Repository paths the text names in backticks (`packages/http/src/forward.ts`). */
function namedPaths(markdown: string): string[] {
  const out: string[] = [];
  for (const m of markdown.matchAll(
    /`(?:\.\.\/)?((?:packages|bench|test|docs|examples|scripts|deploy|kafka|elasticmq)\/[^`\s*]+)`/g,
  )) {
    const path = m[1]!.replace(/[:#].*$/, '');
    if (!GENERATED.some((g) => g.test(path))) out.push(path);
  }
  return out;
}

describe('documentation links', () => {
  it('finds the links it checks, and reports a missing file and a missing heading', () => {
    expect(relativeLinks('see [a](b.md#c), ![i](images/x.png), [w](https://x.y) and `[n](nope.md)`')).toEqual(
      ['b.md#c', 'images/x.png'],
    );
    const readme = join(root, 'docs', 'README.md');
    expect(existsSync(readme)).toBe(true);
    expect(anchors('# Getting started\n## The `IncomingRouter` (HTTP)\n')).toEqual(
      new Set(['getting-started', 'the-incomingrouter-http']),
    );
  });

  it('finds the repository paths a text names', () => {
    expect(
      namedPaths('see `packages/http/src/forward.ts`, `bench/results/x.json` and `../scripts/run.sh`'),
    ).toEqual(['packages/http/src/forward.ts', 'scripts/run.sh']);
  });

  for (const file of markdownFiles()) {
    it(`${file.slice(root.length + 1)} names only repository paths that exist`, () => {
      const missing = namedPaths(readFileSync(file, 'utf8')).filter((p) => !existsSync(join(root, p)));
      expect(missing).toEqual([]);
    });
    it(`${file.slice(root.length + 1)} links only to files and headings that exist`, () => {
      expect(brokenLinks(file)).toEqual([]);
    });
  }
});
