#!/usr/bin/env node
// Sets the npm metadata of every published package (packages/*, unless private) from the root
// package.json's `repository`: repository (with the package directory), homepage, bugs,
// publishConfig.access public, a "branchline" keyword, and "!**/*.tsbuildinfo" in `files`.
// Run it after adding a package or moving the repository (then also update the docs links in the
// package READMEs); test/packaging.test.ts checks the result. Other fields are left as they are.
//
//   node scripts/package-metadata.mjs
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const rootManifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const match = /^(?:git\+)?(https:\/\/github\.com\/[^/]+\/[^/]+?)(?:\.git)?$/.exec(
  rootManifest.repository?.url ?? '',
);
if (!match) {
  console.error(
    'package-metadata: the root package.json needs "repository": { "type": "git", "url": "git+https://github.com/<owner>/<repo>.git" }',
  );
  process.exit(1);
}
const repo = match[1];
const fields = ['repository', 'homepage', 'bugs', 'keywords', 'publishConfig'];

for (const dir of readdirSync(join(root, 'packages')).sort()) {
  const file = join(root, 'packages', dir, 'package.json');
  if (!existsSync(file)) continue;
  const pkg = JSON.parse(readFileSync(file, 'utf8'));
  if (pkg.private) continue;
  const keywords = Array.isArray(pkg.keywords) ? pkg.keywords : [];
  const meta = {
    repository: { type: 'git', url: `git+${repo}.git`, directory: `packages/${dir}` },
    homepage: `${repo}/tree/main/packages/${dir}#readme`,
    bugs: { url: `${repo}/issues` },
    keywords: keywords.includes('branchline') ? keywords : ['branchline', ...keywords],
    publishConfig: { ...pkg.publishConfig, access: 'public' },
  };
  // The metadata goes right after "license", where the other packages have it.
  const out = {};
  for (const [key, value] of Object.entries(pkg)) {
    if (fields.includes(key)) continue;
    out[key] = value;
    if (key === 'license') Object.assign(out, meta);
  }
  if (!('repository' in out)) Object.assign(out, meta);
  if (Array.isArray(out.files) && !out.files.includes('!**/*.tsbuildinfo'))
    out.files.push('!**/*.tsbuildinfo');
  const text = `${JSON.stringify(out, null, 2)}\n`;
  if (text !== readFileSync(file, 'utf8')) {
    writeFileSync(file, text);
    console.log(`package-metadata: updated packages/${dir}/package.json`);
  }
}
