import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..', '..');

/** Where scripts/node-env.sh keeps the Node.js versions it installs (same rule as the script). */
export const nodeCache =
  process.env.BRANCHLINE_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'branchline');

function majorOf(bin: string): number | undefined {
  try {
    const v = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    return Number(/^v(\d+)\./.exec(v)?.[1]);
  } catch {
    return undefined;
  }
}

/**
 * The `node` binary of a Node.js major version: this process's own when it is that version,
 * else the one scripts/node-env.sh keeps in the cache, else (`onPath`) one on PATH, else the
 * cache's after installing it there (from the npm registry, once) — so a fresh machine needs
 * no step before `npm test`.
 */
export function nodeBinary(major: number, { onPath = false } = {}): string {
  if (Number(process.versions.node.split('.')[0]) === major) return process.execPath;
  const bin = join(nodeCache, `node${major}`, 'node_modules', 'node', 'bin', 'node');
  if (existsSync(bin)) return bin;
  if (onPath)
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      const candidate = join(dir, 'node');
      if (dir && existsSync(candidate) && majorOf(candidate) === major) return candidate;
    }
  try {
    execFileSync('bash', ['-c', 'source scripts/node-env.sh "$1" >/dev/null', 'node-env', String(major)], {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit'],
      timeout: 300_000,
    });
  } catch (err) {
    throw new Error(
      `could not install Node ${major} into ${nodeCache} with scripts/node-env.sh (${(err as Error).message}); it needs the npm registry once`,
    );
  }
  if (!existsSync(bin)) throw new Error(`scripts/node-env.sh ${major} finished but ${bin} is missing`);
  return bin;
}
