import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * `read`: list and watch. `write`: create, change and delete (implies `read`, `report` and
 * `announce`). `report`: only send routing activity (`POST /v1/activity`), for services' SDKs.
 * `announce`: only announce, renew and withdraw endpoints by heartbeat
 * (`POST /v1/sandboxes/{name}/heartbeat`), for sandbox workloads; see `TokenEntry.sandboxes`.
 */
export type Scope = 'read' | 'write' | 'report' | 'announce';

const SCOPES: readonly Scope[] = ['read', 'write', 'report', 'announce'];

export interface TokenEntry {
  token: string;
  scopes: Scope[];
  /** Shown in logs and 403 messages instead of the token. */
  name?: string;
  /**
   * With the `announce` scope (and not `write`): the sandboxes it may announce for, as names or
   * patterns where `*` stands for any characters (`pr-*`). Default: every sandbox.
   */
  sandboxes?: string[];
}

/** A sandbox name, or a pattern of one with `*` for any characters. */
const SANDBOX_PATTERN_RE = /^[a-z0-9*-]{1,63}$/;

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * Reads tokens from a file's text: a JSON array of `{token, scopes, name, sandboxes}`, or lines
 * of `TOKEN SCOPES [NAME] [sandboxes=PATTERN,…]` (scopes comma-separated; `#` starts a comment).
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
    const where = `${source} line ${i + 1}`;
    const [token, scopes = 'read', ...rest] = l.split(/\s+/);
    let name: string | undefined;
    let sandboxes: string[] | undefined;
    for (const field of rest) {
      if (field.startsWith('sandboxes=')) sandboxes = field.slice('sandboxes='.length).split(',');
      else if (name === undefined) name = field;
      else
        throw new Error(
          `${where}: unexpected ${JSON.stringify(field)}; a line is TOKEN SCOPES [NAME] [sandboxes=PATTERN,…]`,
        );
    }
    out.push(checkEntry({ token, scopes: scopes.split(','), name, sandboxes }, where));
  });
  return out;
}

function checkEntry(
  e: { token?: unknown; scopes?: unknown; name?: unknown; sandboxes?: unknown },
  where: string,
): TokenEntry {
  if (typeof e.token !== 'string' || e.token.length < 16)
    throw new Error(`${where}: a token must be a string of at least 16 characters`);
  const scopes = Array.isArray(e.scopes) ? e.scopes : [];
  for (const s of scopes)
    if (!SCOPES.includes(s))
      throw new Error(`${where}: unknown scope ${JSON.stringify(s)} (${SCOPES.join(', ')})`);
  const entry: TokenEntry = {
    token: e.token,
    scopes: scopes as Scope[],
    name: typeof e.name === 'string' ? e.name : undefined,
  };
  if (e.sandboxes === undefined) return entry;
  return { ...entry, sandboxes: checkSandboxes(entry.scopes, e.sandboxes, where) };
}

/** The sandboxes an announce token is bound to, checked: patterns, and only with `announce` without `write`. */
function checkSandboxes(scopes: readonly Scope[], sandboxes: unknown, where: string): string[] {
  if (!Array.isArray(sandboxes) || sandboxes.length === 0)
    throw new Error(
      `${where}: sandboxes must be a non-empty list of sandbox names or patterns such as "pr-*"`,
    );
  for (const p of sandboxes)
    if (typeof p !== 'string' || !SANDBOX_PATTERN_RE.test(p))
      throw new Error(
        `${where}: sandboxes: ${JSON.stringify(p)} is not a sandbox name or pattern (lowercase letters, digits, "-" and "*" for any characters, like "pr-*")`,
      );
  if (!scopes.includes('announce'))
    throw new Error(
      `${where}: sandboxes limits the announce scope; add "announce" to the scopes or drop sandboxes`,
    );
  if (scopes.includes('write'))
    throw new Error(
      `${where}: a write token may announce for every sandbox, so sandboxes would not limit it; drop "write" or sandboxes`,
    );
  return [...sandboxes];
}

/** Whether `name` matches a sandbox pattern (`*` stands for any characters, also none). */
export function matchesSandboxPattern(pattern: string, name: string): boolean {
  const parts = pattern.split('*');
  if (parts.length === 1) return pattern === name;
  const first = parts[0]!;
  const last = parts[parts.length - 1]!;
  if (name.length < first.length + last.length || !name.startsWith(first) || !name.endsWith(last))
    return false;
  let at = first.length;
  const end = name.length - last.length;
  for (const mid of parts.slice(1, -1)) {
    const i = name.indexOf(mid, at);
    if (i < 0 || i + mid.length > end) return false;
    at = i + mid.length;
  }
  return true;
}

/** Who presented a token: its name, scopes and (for a bound announce token) its sandboxes. */
export interface TokenHolder {
  name: string;
  scopes: Set<Scope>;
  /** The sandboxes an announce token is bound to; undefined: every sandbox. */
  sandboxes?: string[];
}

export function readTokensFile(path: string): TokenEntry[] {
  return parseTokens(readFileSync(path, 'utf8'), path);
}

/** Bearer-token checks. Each presented token is hashed and compared with every known hash in constant time. */
export class TokenAuth {
  private readonly entries: (TokenHolder & { hash: Buffer })[];

  constructor(tokens: TokenEntry[]) {
    this.entries = tokens.map((t, i) => ({
      hash: sha256(t.token),
      // write implies read (a writer can always see what it wrote), report and announce.
      scopes: new Set<Scope>(t.scopes.includes('write') ? SCOPES : t.scopes),
      name: t.name ?? `token #${i + 1}`,
      ...(t.sandboxes !== undefined
        ? { sandboxes: checkSandboxes(t.scopes, t.sandboxes, `tokens[${i}] (${t.name ?? 'unnamed'})`) }
        : {}),
    }));
  }

  get enabled(): boolean {
    return this.entries.length > 0;
  }

  /** The entry the bearer token belongs to, or undefined. */
  identify(authorization: string | undefined): TokenHolder | undefined {
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
