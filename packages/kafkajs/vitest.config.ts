import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'kafkajs',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    provide: { services: ['kafka'] },
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
