import { afterAll, describe, expect, it } from 'vitest';
import { send, sendJson, startRegistry, stopRegistries } from './helpers.js';

afterAll(stopRegistries);

const WRITE = 'browser-write-token-0123456789';
const beat = JSON.stringify({ service: 'payments', http: 'http://127.0.0.1:4900', ttl: 60 });

describe('writes a web page could send', () => {
  it('refuses a text/plain, form or untyped write body with 415 and says to send application/json', async () => {
    const { url, registry } = await startRegistry();
    await registry.putSandbox('victim', {});
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'])
      for (const [method, path] of [
        ['POST', '/v1/sandboxes/victim/heartbeat'],
        ['PUT', '/v1/sandboxes/victim'],
        ['PUT', '/v1/routegroups/g'],
        ['POST', '/v1/activity'],
      ] as const) {
        const r = await send(url, method, path, { headers: { 'content-type': type }, body: beat });
        expect(r.status, `${method} ${path} as ${type}`).toBe(415);
        expect(r.json.error).toBe('unsupported_media_type');
        expect(r.json.message).toContain('application/json');
        expect(r.json.message).toContain(type.split(';')[0]);
      }
    // A body without any content type (what fetch sends for a Blob) is refused too.
    const untyped = await send(url, 'POST', '/v1/sandboxes/victim/heartbeat', { body: beat });
    expect(untyped.status).toBe(415);
    expect((await send(url, 'GET', '/v1/sandboxes/victim')).json.announced).toEqual({});
  });

  it('accepts application/json with parameters and +json types, and a write with no body at all', async () => {
    const { url } = await startRegistry();
    const put = await send(url, 'PUT', '/v1/sandboxes/a', {
      headers: { 'content-type': 'Application/JSON; charset=utf-8' },
      body: '{}',
    });
    expect(put.status).toBe(201);
    const hb = await send(url, 'POST', '/v1/sandboxes/a/heartbeat', {
      headers: { 'content-type': 'application/merge-patch+json' },
      body: beat,
    });
    expect(hb.status).toBe(200);
    expect((await send(url, 'PUT', '/v1/sandboxes/b')).status).toBe(201);
    expect((await send(url, 'DELETE', '/v1/sandboxes/b')).status).toBe(200);
  });

  it('without tokens, refuses a write from a browser on another site with 403, JSON body or not', async () => {
    const { url, registry } = await startRegistry();
    await registry.putSandbox('victim', {});
    const r = await sendJson(
      url,
      'POST',
      '/v1/sandboxes/victim/heartbeat',
      { service: 'payments', http: 'https://attacker.example', ttl: 1e6 },
      { origin: 'https://attacker.example' },
    );
    expect(r.status).toBe(403);
    expect(r.json.error).toBe('cross_origin');
    expect(r.json.message).toContain('https://attacker.example');
    expect(r.json.message).toContain('--allow-origins');
    expect((await send(url, 'DELETE', '/v1/sandboxes/victim', { headers: { origin: 'null' } })).status).toBe(
      403,
    );
    expect((await send(url, 'GET', '/v1/sandboxes/victim')).json.announced).toEqual({});
  });

  it("without tokens, refuses a browser write even from the registry's own origin (a DNS-rebinding page is same-origin)", async () => {
    const { url } = await startRegistry();
    const host = new URL(url).host;
    const own = await sendJson(url, 'PUT', '/v1/sandboxes/x', {}, { origin: url, host });
    expect(own.status).toBe(403);
    const rebound = await sendJson(
      url,
      'PUT',
      '/v1/sandboxes/x',
      {},
      { origin: 'http://rebound.attacker.example:7070', host: 'rebound.attacker.example:7070' },
    );
    expect(rebound.status).toBe(403);
  });

  it('accepts a browser write from an origin listed in allowOrigins, and answers its CORS preflight', async () => {
    const tools = 'https://tools.staging.example';
    const { url } = await startRegistry({ allowOrigins: [tools] });
    const preflight = await send(url, 'OPTIONS', '/v1/sandboxes/from-tools', {
      headers: {
        origin: tools,
        'access-control-request-method': 'PUT',
        'access-control-request-headers': 'content-type',
      },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-origin']).toBe(tools);
    expect(preflight.headers['access-control-allow-methods']).toContain('PUT');
    expect(preflight.headers['access-control-allow-headers']).toContain('content-type');
    const r = await sendJson(url, 'PUT', '/v1/sandboxes/from-tools', {}, { origin: tools });
    expect(r.status).toBe(201);
    expect(r.headers['access-control-allow-origin']).toBe(tools);
    const evil = 'https://tools.staging.example.evil';
    const other = await sendJson(url, 'PUT', '/v1/sandboxes/x', {}, { origin: evil });
    expect(other.status).toBe(403);
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const otherPreflight = await send(url, 'OPTIONS', '/v1/sandboxes/x', { headers: { origin: evil } });
    expect(otherPreflight.headers['access-control-allow-origin']).toBeUndefined();
  });

  it("with tokens, accepts a write from the registry's own origin that carries a write token", async () => {
    const { url } = await startRegistry({ tokens: [{ token: WRITE, scopes: ['write'] }] });
    const origin = url;
    const noToken = await sendJson(url, 'PUT', '/v1/sandboxes/x', {}, { origin });
    expect(noToken.status).toBe(401);
    const ok = await sendJson(
      url,
      'PUT',
      '/v1/sandboxes/x',
      {},
      { origin, authorization: `Bearer ${WRITE}` },
    );
    expect(ok.status).toBe(201);
    const foreign = await sendJson(
      url,
      'PUT',
      '/v1/sandboxes/y',
      {},
      { origin: 'https://attacker.example', authorization: `Bearer ${WRITE}` },
    );
    expect(foreign.status).toBe(403);
  });

  it('reads from a browser on any origin are unaffected (a page cannot read the answer without CORS)', async () => {
    const { url } = await startRegistry();
    const r = await send(url, 'GET', '/v1/sandboxes', { headers: { origin: 'https://attacker.example' } });
    expect(r.status).toBe(200);
    expect(r.json.sandboxes).toEqual([]);
  });
});
