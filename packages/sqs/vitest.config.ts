import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'sqs',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    provide: { services: ['elasticmq'] },
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
