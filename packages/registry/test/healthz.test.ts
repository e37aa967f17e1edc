import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { send, startRegistry, stopRegistries } from './helpers.js';

afterAll(stopRegistries);

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

describe('GET /healthz', () => {
  it('reports the version of the running registry package, also to callers without a token', async () => {
    const { url } = await startRegistry({
      tokens: [{ token: 'healthz-token-0123456789', scopes: ['read'] }],
    });
    const r = await send(url, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ status: 'ok', version: pkg.version });
    expect(r.json.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.json.revision).toBeTypeOf('number');
  });
});
