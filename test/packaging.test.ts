import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeBinary } from './helpers/node-runtime.js';

// What a user gets from npm: every published package is packed with `npm pack`, installed from
// its tarball (with its dependencies and peers from the registry) into an application outside
// the repository, and loaded there with import, require and tsc. Nothing resolves through the
// workspace's node_modules.

const root = resolve(import.meta.dirname, '..');
const run = promisify(execFile);
// The repository the packages point at, from the root package.json (scripts/package-metadata.mjs
// writes the packages' fields from it).
const repoUrl =
  (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Manifest).repository?.url ?? '';
const ORG_REPO =
  /^git\+(https:\/\/github\.com\/[^/]+\/[^/]+?)\.git$/.exec(repoUrl)?.[1] ??
  `(root package.json repository.url "${repoUrl}" is not git+https://github.com/<owner>/<repo>.git)`;

interface Manifest {
  name: string;
  version: string;
  private?: boolean;
  license?: string;
  exports?: unknown;
  bin?: string | Record<string, string>;
  repository?: { type?: string; url?: string; directory?: string };
  homepage?: string;
  bugs?: { url?: string };
  keywords?: string[];
  publishConfig?: { access?: string };
}

const published = readdirSync(join(root, 'packages'))
  .filter((dir) => existsSync(join(root, 'packages', dir, 'package.json')))
  .map((dir) => ({
    dir,
    manifest: JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')) as Manifest,
  }))
  .filter(({ manifest }) => !manifest.private);

/** The subpaths a package exports (read from `exports`, so new entry points are tested too). */
function entryPoints(manifest: Manifest): string[] {
  const { exports } = manifest;
  if (exports === undefined || typeof exports === 'string' || Array.isArray(exports)) return [manifest.name];
  const keys = Object.keys(exports as object);
  // An object of conditions (no subpaths) describes ".".
  if (!keys.some((k) => k.startsWith('.'))) return [manifest.name];
  // JSON files (package.json, a JSON Schema) are data, not modules: `import` needs an attribute.
  return keys
    .filter((k) => !k.endsWith('.json'))
    .map((k) => {
      if (k.includes('*'))
        throw new Error(
          `${manifest.name}: this test lists entry points from exports and cannot expand "${k}"`,
        );
      return k === '.' ? manifest.name : `${manifest.name}/${k.slice(2)}`;
    });
}

/** Every file an `exports` map points at, whatever the condition. */
function exportTargets(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(exportTargets);
  if (value && typeof value === 'object') return Object.values(value).flatMap(exportTargets);
  return [];
}

/** The environment for npm in the temporary application, without what `npm test` set for this repo. */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (
      /^npm_(package_|lifecycle_|config_(local_prefix|prefix|workspaces?|include_workspace_root|global)$)/i.test(
        k,
      )
    )
      continue;
    env[k] = v;
  }
  return env;
}

async function npm(args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await run('npm', args, { cwd, env: npmEnv(), maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(
      `npm ${args.join(' ')} (in ${cwd}) failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`,
    );
  }
}

interface PackResult {
  name: string;
  version: string;
  filename: string;
  files: { path: string }[];
}

const entries = published.flatMap(({ manifest }) => entryPoints(manifest));
const work = mkdtempSync(join(tmpdir(), 'branchline-packaging-'));
const packs = join(work, 'packs');
const app = join(work, 'app');
let packed: PackResult[] = [];

beforeAll(async () => {
  for (const { dir, manifest } of published)
    for (const target of exportTargets(manifest.exports))
      if (!existsSync(join(root, 'packages', dir, target)))
        throw new Error(
          `${manifest.name} exports ${target}, which is missing: run "npm run build" first (npm test does)`,
        );
  mkdirSync(packs);
  mkdirSync(app);
  const out = await npm(
    [
      'pack',
      '--json',
      '--pack-destination',
      packs,
      ...published.flatMap(({ dir }) => ['-w', `packages/${dir}`]),
    ],
    root,
  );
  packed = JSON.parse(out) as PackResult[];
  const rootManifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    devDependencies: Record<string, string>;
  };
  // Type packages a TypeScript user of these libraries installs: @branchline/pg's declarations
  // use pg's types, @kubernetes/client-node's use ws's, and ioredis's (under @branchline/bullmq)
  // import redis-errors, which ships none.
  const typesFor = ['@types/node', '@types/pg', '@types/ws', '@types/redis-errors'];
  writeFileSync(
    join(app, 'package.json'),
    `${JSON.stringify(
      {
        name: 'branchline-packaging-check',
        private: true,
        dependencies: Object.fromEntries(packed.map((p) => [p.name, `file:../packs/${p.filename}`])),
        devDependencies: Object.fromEntries(typesFor.map((t) => [t, rootManifest.devDependencies[t] ?? '*'])),
      },
      null,
      2,
    )}\n`,
  );
  // Peers are installed by npm (they are not optional); no install script is needed by any of it.
  await npm(
    ['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'],
    app,
  );
}, 300_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('published packages', () => {
  it('are every non-private package under packages/', () => {
    expect(packed.map((p) => p.name).sort()).toEqual(published.map(({ manifest }) => manifest.name).sort());
    expect(entries).toContain('@branchline/core');
  });

  it('pack their build, README and LICENSE, and no build info or tests', () => {
    for (const { dir, manifest } of published) {
      const result = packed.find((p) => p.name === manifest.name);
      if (!result) throw new Error(`${manifest.name} was not packed`);
      const files = result.files.map((f) => f.path);
      expect(files, manifest.name).toEqual(expect.arrayContaining(['package.json', 'README.md', 'LICENSE']));
      for (const target of exportTargets(manifest.exports))
        expect(files, `${manifest.name} exports ${target}`).toContain(target.replace(/^\.\//, ''));
      const unwanted = files.filter(
        (f) =>
          /\.tsbuildinfo$/.test(f) ||
          /(^|\/)(test|tests|__tests__)\//.test(f) ||
          /\.(test|spec)\.[cm]?[jt]sx?$/.test(f),
      );
      expect(unwanted, `${manifest.name} packs files users do not need`).toEqual([]);
      expect(
        readFileSync(join(root, 'packages', dir, 'LICENSE'), 'utf8'),
        `${dir}/LICENSE (scripts/sync-license.sh)`,
      ).toBe(readFileSync(join(root, 'LICENSE'), 'utf8'));
    }
  });

  it('carry the metadata npm shows: repository, homepage, issues, license, public access', () => {
    for (const { dir, manifest } of published) {
      expect(manifest.license, manifest.name).toBe('Apache-2.0');
      expect(manifest.repository, manifest.name).toEqual({
        type: 'git',
        url: `git+${ORG_REPO}.git`,
        directory: `packages/${dir}`,
      });
      expect(manifest.homepage, manifest.name).toBe(`${ORG_REPO}/tree/main/packages/${dir}#readme`);
      expect(manifest.bugs?.url, manifest.name).toBe(`${ORG_REPO}/issues`);
      expect(manifest.publishConfig?.access, manifest.name).toBe('public');
      expect(manifest.keywords, manifest.name).toContain('branchline');
    }
  });

  it('link from their READMEs with absolute URLs, which work on npmjs.com', () => {
    for (const { dir } of published) {
      const readme = readFileSync(join(root, 'packages', dir, 'README.md'), 'utf8');
      const targets = [
        ...readme.matchAll(/\]\(\s*<?([^)\s>]+)/g),
        ...readme.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?\s*$/gm),
      ]
        .map((m) => m[1] ?? '')
        .filter((t) => !/^(https?:|mailto:|#)/.test(t));
      expect(targets, `relative links in packages/${dir}/README.md`).toEqual([]);
      const elsewhere = [...readme.matchAll(/https:\/\/github\.com\/[^/\s)]+\/branchline\b[^\s)]*/g)]
        .map((m) => m[0])
        .filter((url) => !url.startsWith(`${ORG_REPO}/`));
      expect(elsewhere, `links in packages/${dir}/README.md to another copy of the repository`).toEqual([]);
    }
  });

  // Node 22.12+ and 24 load ES modules with require(), so the ESM-only packages serve both.
  describe.each([24, 22])('on Node %i', (major) => {
    let node: string;
    beforeAll(() => {
      node = nodeBinary(major);
    }, 300_000);

    it('load every entry point with import and with require, with the same exports', async () => {
      const load = (kind: 'import' | 'require') =>
        `const out = {};
for (const s of ${JSON.stringify(entries)}) {
  try {
    const m = ${kind === 'import' ? 'await import(s)' : 'require(s)'};
    out[s] = Object.keys(m).filter((k) => k !== '__esModule').sort();
  } catch (e) {
    out[s] = { error: String(e.code ?? '') + ' ' + e.message };
  }
}
console.log(JSON.stringify(out));
`;
      writeFileSync(join(app, 'load.mjs'), load('import'));
      writeFileSync(join(app, 'load.cjs'), load('require'));
      const [esm, cjs] = await Promise.all(
        ['load.mjs', 'load.cjs'].map(async (file) => {
          const { stdout } = await run(node, ['--no-warnings', file], {
            cwd: app,
            maxBuffer: 16 * 1024 * 1024,
          });
          return JSON.parse(stdout) as Record<string, string[] | { error: string }>;
        }),
      );
      for (const s of entries) {
        expect(esm?.[s], `import('${s}')`).toEqual(expect.arrayContaining([expect.any(String)]));
        expect(cjs?.[s], `require('${s}')`).toEqual(esm?.[s]);
      }
    });
  });

  it('declare a type for every runtime export, for import and for require (tsc, nodenext)', async () => {
    const { stdout } = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const out = {}; for (const s of ${JSON.stringify(entries)}) out[s] = Object.keys(await import(s)); console.log(JSON.stringify(out));`,
      ],
      { cwd: app },
    );
    const names = JSON.parse(stdout) as Record<string, string[]>;
    let esm = '';
    let cjs = '';
    entries.forEach((s, i) => {
      const ids = (names[s] ?? []).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n));
      expect(ids.length, s).toBeGreaterThan(0);
      esm += `import { ${ids.map((n) => `${n} as m${i}_${n}`).join(', ')} } from '${s}';\n`;
      esm += `export const e${i} = [${ids.map((n) => `m${i}_${n}`).join(', ')}];\n`;
      cjs += `import m${i} = require('${s}');\nexport const c${i} = [${ids.map((n) => `m${i}.${n}`).join(', ')}];\n`;
    });
    writeFileSync(join(app, 'types.mts'), esm);
    writeFileSync(join(app, 'types.cts'), cjs);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2023',
          strict: true,
          noEmit: true,
          // The packages' declaration files are checked too, as a user's stricter setup would.
          skipLibCheck: false,
          types: ['node'],
        },
        files: ['types.mts', 'types.cts'],
      }),
    );
    // The compiler is the repository's; the packages and their types are the application's.
    const tsc = join(createRequire(import.meta.url).resolve('typescript/package.json'), '..', 'bin', 'tsc');
    const result = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: app }).then(
      () => '',
      (err: Error & { stdout?: string }) => err.stdout || err.message,
    );
    expect(result).toBe('');
  }, 120_000);

  it('install a working branchline command', async () => {
    const cli = published.find(({ manifest }) => manifest.bin);
    if (!cli) throw new Error('no published package has a bin');
    const { stdout } = await run(join(app, 'node_modules', '.bin', 'branchline'), ['--version'], {
      cwd: app,
      env: { ...process.env, PATH: `${join(process.execPath, '..')}:${process.env.PATH ?? ''}` },
    });
    expect(stdout.trim()).toBe(cli.manifest.version);
  });
});
