import type { IncomingMessage } from 'node:http';
import { RegistryError } from './state.js';

/** Methods that change nothing; every other method is a write. */
export function isWrite(method: string): boolean {
  return method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS';
}

/** `allowOrigins` entries as browsers send them in `Origin` (scheme://host[:port], lowercase). */
export function parseAllowedOrigins(entries: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const raw of entries) {
    const e = typeof raw === 'string' ? raw.trim() : '';
    if (typeof raw === 'string' && e === '') continue;
    let origin: string | undefined;
    try {
      const u = new URL(e);
      const bare = u.pathname === '/' && !u.search && !u.hash && !u.username && !u.password;
      if ((u.protocol === 'http:' || u.protocol === 'https:') && bare) origin = u.origin;
    } catch {}
    if (origin === undefined)
      throw new TypeError(
        `branchline registry: allowOrigins entry ${JSON.stringify(raw)} is not an origin such as "https://tools.example.com" (scheme, host and port only)`,
      );
    out.add(origin);
  }
  return out;
}

/**
 * A write from a web page (browsers send `Origin` with every write) is refused unless its
 * origin is listed, or it comes from the registry's own origin and the registry has tokens (the
 * write then needs a token as any other). Without tokens even the own origin is refused: a page
 * that rebinds its DNS name to the registry's address is "same-origin" with it.
 */
export function checkBrowserWrite(req: IncomingMessage, allowed: Set<string>, tokens: boolean): void {
  const origin = req.headers.origin;
  if (origin === undefined || allowed.has(origin)) return;
  if (tokens) {
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {}
    if (host !== undefined && host === req.headers.host?.toLowerCase()) return;
  }
  const why = tokens
    ? "only the registry's own origin and the origins listed in --allow-origins (allowOrigins) may write from a browser"
    : 'this registry has no tokens, so a browser may write only from an origin listed in --allow-origins (allowOrigins)';
  throw new RegistryError(
    403,
    'cross_origin',
    `a write from the web page at ${JSON.stringify(origin)} is refused: ${why}. If that page is yours, start the registry with --allow-origins ${origin === 'null' ? '<origin>' : origin}`,
  );
}

/** The media type of a `Content-Type` header, lowercase, without parameters. */
function mediaType(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  return header.split(';', 1)[0]!.trim().toLowerCase();
}

export function isJsonType(header: string | undefined): boolean {
  const t = mediaType(header);
  return t === 'application/json' || (t !== undefined && /^application\/[a-z0-9!#$&^_.+-]+\+json$/.test(t));
}

/**
 * A write body must be declared JSON: text/plain, form and multipart bodies are what a web page
 * can send to another site without asking first (no CORS preflight), and a body without a
 * type is what `fetch` sends for a Blob. An empty body may come without a type.
 */
export function checkJsonBody(req: IncomingMessage, body: Buffer): void {
  const header = req.headers['content-type'];
  if (header === undefined ? body.length === 0 : isJsonType(header)) return;
  throw new RegistryError(
    415,
    'unsupported_media_type',
    `this write needs a JSON body sent as "Content-Type: application/json" (got ${header === undefined ? 'no Content-Type' : JSON.stringify(mediaType(header))}); with curl add -H 'content-type: application/json' or use --json`,
  );
}

/** The path's segments, percent-decoded; a malformed escape is the client's error (400). */
export function pathSegments(rawUrl: string): { url: URL; parts: string[] } {
  let url: URL;
  try {
    url = new URL(rawUrl, 'http://registry');
  } catch {
    throw new RegistryError(400, 'invalid_path', `${JSON.stringify(clip(rawUrl))} is not a request path`);
  }
  const parts: string[] = [];
  for (const seg of url.pathname.split('/')) {
    if (seg === '') continue;
    try {
      parts.push(decodeURIComponent(seg));
    } catch {
      throw new RegistryError(
        400,
        'invalid_path',
        `the path segment ${JSON.stringify(clip(seg))} has a malformed percent-escape: "%" must start a UTF-8 byte as two hex digits (encode names with encodeURIComponent)`,
      );
    }
  }
  return { url, parts };
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

/** The client went away before its request body was complete: nothing to answer. */
export class ClientGoneError extends Error {
  constructor() {
    super('the client disconnected before its request body was complete');
    this.name = 'ClientGoneError';
  }
}
