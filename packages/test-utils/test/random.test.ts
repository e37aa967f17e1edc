import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { seededRandom } from '../src/index.js';

describe('seededRandom', () => {
  it('gives the same sequence for the same seed and another for another seed', () => {
    const a = seededRandom(42);
    const b = seededRandom(42);
    const c = seededRandom(43);
    const seqA = Array.from({ length: 5 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(seqA);
    expect(Array.from({ length: 5 }, () => c())).not.toEqual(seqA);
    expect(a.seed).toBe(42);
  });

  it('stays in range', () => {
    const r = seededRandom(7);
    for (let i = 0; i < 1000; i++) {
      const x = r();
      expect(x >= 0 && x < 1).toBe(true);
      const n = r.int(-3, 2);
      expect(Number.isInteger(n) && n >= -3 && n < 2).toBe(true);
      const y = r.between(10, 20);
      expect(y >= 10 && y < 20).toBe(true);
    }
  });

  it('takes its seed from BRANCHLINE_TEST_SEED and prints it, with the command to repeat the run, when the test fails', () => {
    // A real vitest run of a failing test, in a child process: what a contributor sees. The
    // scratch directory sits inside this workspace so the child resolves vitest from it.
    const dir = mkdtempSync(join(import.meta.dirname, '.tmp-seed-'));
    try {
      const file = join(dir, 'fails.test.ts');
      writeFileSync(
        file,
        `import { expect, it } from 'vitest';
import { seededRandom } from '../../src/index.js';
it('fails', () => {
  const random = seededRandom();
  console.log('first draw', random());
  expect(random.seed).toBe(-1);
});
`,
      );
      // Called at module level: only the failing test of the file prints the seed.
      writeFileSync(
        join(dir, 'module.test.ts'),
        `import { expect, it } from 'vitest';
import { seededRandom } from '../../src/index.js';
const random = seededRandom(777);
it('passes quietly', () => expect(random()).toBeLessThan(1));
it('fails loudly', () => expect(random.seed).toBe(-1));
`,
      );
      const out = spawnSync(process.execPath, [vitestBin(), 'run', '--root', dir], {
        env: {
          ...process.env,
          BRANCHLINE_TEST_SEED: '12345',
          CI: 'true',
          NO_COLOR: '1',
          FORCE_COLOR: undefined,
        },
        encoding: 'utf8',
        timeout: 60_000,
      });
      const text = out.stdout + out.stderr;
      expect(out.status).toBe(1);
      expect(text).toContain(
        '[seeded random] this run used seed 12345; repeat it with: BRANCHLINE_TEST_SEED=12345',
      );
      expect(text).toContain(`first draw ${seededRandom(12345)()}`);
      expect(text).toMatch(
        /stderr \| module\.test\.ts > fails loudly\n\[seeded random\] this run used seed 777;/,
      );
      expect(text).not.toContain('module.test.ts > passes quietly');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a seed that is not a 32-bit unsigned integer, naming the variable', () => {
    const before = process.env.BRANCHLINE_TEST_SEED;
    process.env.BRANCHLINE_TEST_SEED = 'abc';
    try {
      expect(() => seededRandom()).toThrow(
        'BRANCHLINE_TEST_SEED must be an integer from 0 to 4294967295, got "abc"',
      );
    } finally {
      if (before === undefined) delete process.env.BRANCHLINE_TEST_SEED;
      else process.env.BRANCHLINE_TEST_SEED = before;
    }
  });
});

function vitestBin(): string {
  return join(import.meta.dirname, '..', '..', '..', 'node_modules', 'vitest', 'vitest.mjs');
}
