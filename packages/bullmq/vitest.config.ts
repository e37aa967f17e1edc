import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'bullmq',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    provide: { services: ['redis'] },
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
