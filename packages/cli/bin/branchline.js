#!/usr/bin/env node
// The `branchline` command that npm links into node_modules/.bin. It is committed rather than
// built, so `npm ci` in a fresh clone links it before the build has run (npm links only files
// that exist); it runs the built CLI, or says how to build it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const built = new URL('../dist/bin.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  process.stderr.write(
    `branchline: the CLI is not built yet (${fileURLToPath(built)} is missing); run "npm run build" at the root of the repository, then try again.\n`,
  );
  process.exitCode = 1;
}
