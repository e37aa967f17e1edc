import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeBinary } from './helpers/node-runtime.js';

const root = resolve(import.meta.dirname, '..');
const packages = readdirSync(join(root, 'packages')).filter((p) =>
  existsSync(join(root, 'packages', p, 'package.json')),
);
// An application outside the repository that depends on the built packages, as a user's would.
const app = mkdtempSync(join(tmpdir(), 'branchline-app-'));
symlinkSync(join(root, 'node_modules'), join(app, 'node_modules'));
afterAll(() => rmSync(app, { recursive: true, force: true }));

// Package entry points, and the subpaths their package.json exports.
const entries = [...packages.map((p) => `@branchline/${p}`), '@branchline/core/transport'];
const list = JSON.stringify(entries);
writeFileSync(
  join(app, 'load.cjs'),
  `const out = {}; for (const n of ${list}) out[n] = Object.keys(require(n)).length; console.log(JSON.stringify(out));\n`,
);
writeFileSync(
  join(app, 'load.mjs'),
  `const out = {}; for (const n of ${list}) out[n] = Object.keys(await import(n)).length; console.log(JSON.stringify(out));\n`,
);

describe.each([22, 24])('packages load on Node %i', (major) => {
  let node: string;
  // Installed into the cache on first use, so a fresh machine runs this with no step before it.
  beforeAll(() => {
    node = nodeBinary(major);
  }, 300_000);

  for (const kind of ['cjs', 'mjs'] as const) {
    it(`from a ${kind === 'cjs' ? 'CommonJS (require)' : 'ESM (import)'} application`, () => {
      const out = execFileSync(node, ['--no-warnings', join(app, `load.${kind}`)], {
        cwd: app,
        encoding: 'utf8',
      });
      const loaded = JSON.parse(out) as Record<string, number>;
      expect(Object.keys(loaded).sort()).toEqual([...entries].sort());
      // core has real exports on every runtime and module system, in both entry points
      expect(loaded['@branchline/core']).toBeGreaterThan(20);
      expect(loaded['@branchline/core/transport']).toBeGreaterThan(20);
    });
  }
});
