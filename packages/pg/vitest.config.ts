import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'pg',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    provide: { services: ['postgres'] },
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
