import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'mysql',
    include: ['test/**/*.test.ts'],
    globalSetup: ['../../test/setup/global.ts'],
    provide: { services: ['mariadb'] },
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
