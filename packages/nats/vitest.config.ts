import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'nats',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    provide: { services: ['nats'] },
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
