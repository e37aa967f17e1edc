import { defineConfig } from 'vitest/config';

// `npm test` runs every package's tests and the cross-package tests in test/ as one run.
export default defineConfig({
  test: {
    projects: ['packages/*', 'test'],
  },
});
