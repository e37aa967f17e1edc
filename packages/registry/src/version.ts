import { createRequire } from 'node:module';

/** This package's version (from its package.json), reported by `GET /healthz`. */
export const REGISTRY_VERSION: string = (
  createRequire(import.meta.url)('../package.json') as { version: string }
).version;
