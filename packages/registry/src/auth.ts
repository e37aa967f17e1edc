import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * `read`: list and watch. `write`: create, change and delete (implies `read` and `report`).
 * `report`: only send routing activity (`POST /v1/activity`), for services' SDKs.
 */
export type Scope = 'read' | 'write' | 'report';

export interface TokenEntry {
  token: string;
  scopes: Scope[];
  /** Shown in logs and 403 messages instead of the token. */
  name?: string;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * Reads tokens from a file's text: a JSON array of `{token, scopes, name}`, or lines of
 * `TOKEN SCOPES [NAME]` (scopes comma-separated; `#` starts a comment).
 */
export function parseTokens(text: string, source = 'tokens'): TokenEntry[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('[') || trimmed.startsWith('{')) {
    const doc = JSON.parse(trimmed);
    const list = Array.isArray(doc) ? doc : doc.tokens;
    if (!Array.isArray(list)) throw new Error(`${source}: expected a JSON array of {token, scopes, name}`);
    return list.map((e, i) => checkEntry(e, `${source}[${i}]`));
  }
  const out: TokenEntry[] = [];
  trimmed.split(/[\n;]/).forEach((line, i) => {
    const l = line.replace(/#.*/, '').trim();
    if (!l) return;
    const [token, scopes = 'read', name] = l.split(/\s+/);
    out.push(checkEntry({ token, scopes: scopes.split(','), name }, `${source} line ${i + 1}`));
  });
  return out;
}

function checkEntry(e: { token?: unknown; scopes?: unknown; name?: unknown }, where: string): TokenEntry {
  if (typeof e.token !== 'string' || e.token.length < 16)
    throw new Error(`${where}: a token must be a string of at least 16 characters`);
  const scopes = Array.isArray(e.scopes) ? e.scopes : [];
  for (const s of scopes)
    if (s !== 'read' && s !== 'write' && s !== 'report')
      throw new Error(`${where}: unknown scope ${JSON.stringify(s)} (read, write, report)`);
  return { token: e.token, scopes: scopes as Scope[], name: typeof e.name === 'string' ? e.name : undefined };
}

export function readTokensFile(path: string): TokenEntry[] {
  return parseTokens(readFileSync(path, 'utf8'), path);
}

/** Bearer-token checks. Each presented token is hashed and compared with every known hash in constant time. */
export class TokenAuth {
  private readonly entries: { hash: Buffer; scopes: Set<Scope>; name: string }[];

  constructor(tokens: TokenEntry[]) {
    this.entries = tokens.map((t, i) => ({
      hash: sha256(t.token),
      // write implies read (a writer can always see what it wrote) and report.
      scopes: new Set<Scope>(t.scopes.includes('write') ? ['read', 'write', 'report'] : t.scopes),
      name: t.name ?? `token #${i + 1}`,
    }));
  }

  get enabled(): boolean {
    return this.entries.length > 0;
  }

  /** The entry the bearer token belongs to, or undefined. */
  identify(authorization: string | undefined): { name: string; scopes: Set<Scope> } | undefined {
    const token = bearer(authorization);
    if (token === undefined) return undefined;
    const h = sha256(token);
    let found: (typeof this.entries)[number] | undefined;
    for (const e of this.entries) if (timingSafeEqual(e.hash, h) && !found) found = e;
    return found;
  }
}

export function bearer(authorization: string | undefined): string | undefined {
  if (!authorization) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return m?.[1];
}

export function hashToken(token: string): string {
  return sha256(token).toString('hex');
}

/** Compares a presented token with a stored sha256 hex digest in constant time. */
export function tokenMatchesHash(token: string, hashHex: string): boolean {
  const a = sha256(token);
  const b = Buffer.from(hashHex, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Exactly what GitHub sends: `sha256=` and the HMAC's 64 hex digits, nothing before or after. */
const GITHUB_SIGNATURE_RE = /^sha256=([0-9a-fA-F]{64})$/;

/**
 * Verifies GitHub's `X-Hub-Signature-256: sha256=<hex>` over the raw body. The header is parsed
 * strictly: `Buffer.from(hex)` alone stops at the first non-hex character, so trailing bytes
 * would pass unnoticed.
 */
export function verifyGithubSignature(secret: string, body: Buffer, header: string | undefined): boolean {
  const hex = header === undefined ? undefined : GITHUB_SIGNATURE_RE.exec(header)?.[1];
  if (hex === undefined) return false;
  const given = Buffer.from(hex, 'hex');
  const expected = createHmac('sha256', secret).update(body).digest();
  return timingSafeEqual(given, expected);
}
