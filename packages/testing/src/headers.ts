import { explainInvalidKey, isValidRoutingKey, resolveBaggageKey, routingBaggage } from '@branchline/core';
import { mergeBaggageMember } from '@branchline/core/transport';

/** Options shared by every helper that puts a routing key on a request. */
export interface KeyHeaderOptions {
  /** Baggage member name. Default `BRANCHLINE_BAGGAGE_KEY`, else `branchline`. */
  baggageKey?: string;
}

/** Throws a TypeError a person can act on when `key` is not a routing key. */
export function checkKey(key: unknown, where = 'key'): string {
  if (!isValidRoutingKey(key))
    throw new TypeError(
      `@branchline/testing: ${where} is not a routing key: ${explainInvalidKey(key)}; use the key \`branchline sandbox create\` printed`,
    );
  return key;
}

export function baggageKeyOf(options: KeyHeaderOptions | undefined): string {
  return resolveBaggageKey(options?.baggageKey);
}

/**
 * The `baggage` header value carrying `key`, merged into `existing`: other members are kept in
 * order; a routing-key member already there is replaced, because a test that asks for a key means
 * that key. A malformed or full existing header is replaced by the key alone rather than sent on
 * without it (in a test, the key is the point).
 */
export function baggageWithKey(existing: string | null | undefined, key: string, baggageKey: string): string {
  const merged = mergeBaggageMember(existing ?? undefined, baggageKey, key);
  return merged.ok ? merged.header : routingBaggage(key, baggageKey);
}

/**
 * The headers that route a request to the sandbox of `key`, as a plain object: for Playwright's
 * `extraHTTPHeaders`, axios `headers`, supertest `.set()`, k6, curl scripts.
 *
 * ```js
 * const context = await browser.newContext({ extraHTTPHeaders: routingHeaders('pr-42') });
 * ```
 */
export function routingHeaders(key: string, options?: KeyHeaderOptions): { baggage: string } {
  checkKey(key);
  const name = baggageKeyOf(options);
  return { baggage: `${name}=${key}` };
}

/** A fetch-compatible function. */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface WithKeyOptions extends KeyHeaderOptions {
  /** The fetch to wrap. Default: the global `fetch` at call time. */
  fetch?: FetchLike;
}

/**
 * A `fetch` that sends every request with `key` in its `baggage` header, merged with any
 * baggage the caller set (in `init.headers` or on a `Request`).
 *
 * ```js
 * const keyed = withKey('pr-42');
 * const res = await keyed('http://gateway.staging/checkout', { method: 'POST' });
 * ```
 */
export function withKey(key: string, options: WithKeyOptions = {}): FetchLike {
  checkKey(key);
  const name = baggageKeyOf(options);
  const inner = options.fetch;
  return function keyedFetch(input, init) {
    // As in fetch itself, `init.headers` replaces a Request's headers rather than adding to them.
    const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
    headers.set('baggage', baggageWithKey(headers.get('baggage'), key, name));
    const f = inner ?? globalThis.fetch;
    return f(input, { ...init, headers });
  };
}

/** The part of a superagent/supertest request `setKey` uses. */
export interface HeaderSettable {
  set(field: string, value: string): unknown;
  get?(field: string): string | undefined;
}

/**
 * A supertest (superagent) plugin that adds `key` to the request's `baggage` header:
 *
 * ```js
 * await request(app).get('/checkout').use(setKey('pr-42')).expect(200);
 * ```
 *
 * Baggage set before `.use(...)` is kept; `.set('baggage', …)` after it replaces the header.
 */
export function setKey<R extends HeaderSettable>(key: string, options?: KeyHeaderOptions): (req: R) => R {
  checkKey(key);
  const name = baggageKeyOf(options);
  return (req: R) => {
    const existing = typeof req.get === 'function' ? req.get('baggage') : undefined;
    req.set('baggage', baggageWithKey(existing, key, name));
    return req;
  };
}
