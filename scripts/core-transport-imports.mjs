// Rewrites `import {…} from '@branchline/core'` lines so that each name comes from the entry
// point that exports it now: the application API (`@branchline/core`) or the transport SDK
// (`@branchline/core/transport`). Run `npx biome check --write` on the files afterwards.
// Usage: node scripts/core-transport-imports.mjs <files…>
// Re-exports (`export … from`), require() and dynamic import() are not rewritten.
import { readFileSync, writeFileSync } from 'node:fs';

const root = new URL('../packages/core/src/', import.meta.url).pathname;

function exportedNames(file) {
  const text = readFileSync(root + file, 'utf8');
  const names = new Set();
  for (const m of text.matchAll(/export\s+(?:type\s+)?\{([^}]*)\}/g))
    for (const n of m[1].split(',')) if (n.trim()) names.add(n.trim().replace(/^type\s+/, ''));
  return names;
}

const app = exportedNames('index.ts');
const transport = exportedNames('transport.ts');
const MARK = '@@branchline-core-import@@';
const MARK_RE = /@@branchline-core-import@@\n?/g;
const IMPORT = /import\s+(type\s+)?\{([^}]*)\}\s*from\s*(['"])@branchline\/core(?:\/transport)?\3;?/g;

function render(mod, items) {
  const allTypes = items.every((i) => i.startsWith('type '));
  const bare = (i) => i.replace(/^type\s+/, '');
  const list = items
    .map((i) => (allTypes ? bare(i) : i))
    .sort((a, b) => bare(a).localeCompare(bare(b), 'en', { sensitivity: 'base' }));
  return `import ${allTypes ? 'type ' : ''}{ ${list.join(', ')} } from '${mod}';`;
}

for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, 'utf8');
  const byModule = new Map();
  const marked = text.replace(IMPORT, (_all, typeKeyword, list) => {
    for (const raw of list.split(',')) {
      const item = `${typeKeyword ? 'type ' : ''}${raw.trim()}`;
      if (!raw.trim()) continue;
      const name = item.replace(/^type\s+/, '').split(/\s+as\s+/)[0];
      const mod = app.has(name)
        ? '@branchline/core'
        : transport.has(name)
          ? '@branchline/core/transport'
          : undefined;
      if (mod === undefined) throw new Error(`${file}: @branchline/core exports no ${name}`);
      const items = byModule.get(mod) ?? [];
      if (!items.includes(item)) items.push(item);
      byModule.set(mod, items);
    }
    return MARK;
  });
  if (byModule.size === 0) continue;
  const statements = [...byModule]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([mod, items]) => render(mod, items))
    .join('\n');
  let placed = false;
  const out = marked.replace(MARK_RE, (m) => {
    if (placed) return '';
    placed = true;
    return statements + (m.endsWith('\n') ? '\n' : '');
  });
  if (out !== text) {
    writeFileSync(file, out);
    console.log('updated', file);
  }
}
