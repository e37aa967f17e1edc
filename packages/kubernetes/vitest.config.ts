import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'kubernetes',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    testTimeout: 30_000,
    passWithNoTests: true,
    hookTimeout: 60_000,
  },
});
