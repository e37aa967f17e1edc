import {
  isValidRoutingKey,
  LABEL_NAME_PATTERN,
  LABEL_NAME_RULE,
  MAX_LABEL_VALUE_LENGTH,
  ROUTING_KEY_RULE,
  SANDBOX_NAME_PATTERN,
  SANDBOX_NAME_RULE,
  SERVICE_NAME_PATTERN,
  SERVICE_NAME_RULE,
} from '@branchline/core';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { RegistryError } from './state.js';

/** Sandbox, route group and resource names (core's sandbox-name rule). */
export const NAME_RE = SANDBOX_NAME_PATTERN;

/** A service name, in schemas (core's service-name rule). */
export const serviceName = z.string().regex(SERVICE_NAME_PATTERN, `service names are ${SERVICE_NAME_RULE}`);

/** The first space or C0/C1 control character: `new URL` drops or encodes them, so they are refused. */
function unsafeChar(v: string): string | undefined {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c <= 0x20 || (c >= 0x7f && c <= 0xa0)) {
      const code = c.toString(16).toUpperCase().padStart(4, '0');
      return `must not contain spaces or control characters (found U+${code} at position ${i})`;
    }
  }
  return undefined;
}

/** The URL as `new URL` reads it, without the trailing slash of an empty path (or `v` if none). */
export function normaliseHttpUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return v;
  }
  return u.pathname === '/' && !u.search && !u.hash ? u.href.slice(0, -1) : u.href;
}

const httpUrl = z
  .string()
  .max(2048)
  .superRefine((v, ctx) => {
    const bad = unsafeChar(v);
    if (bad) {
      ctx.addIssue({ code: 'custom', message: bad });
      return;
    }
    let ok = false;
    try {
      const u = new URL(v);
      ok = u.protocol === 'http:' || u.protocol === 'https:';
    } catch {}
    if (!ok)
      ctx.addIssue({
        code: 'custom',
        message: 'must be an absolute http(s) URL such as "http://10.0.0.7:8080"',
      });
  })
  .overwrite(normaliseHttpUrl);
const grpcTarget = z
  .string()
  .min(1)
  .max(2048)
  .superRefine((v, ctx) => {
    const bad = unsafeChar(v);
    if (bad) ctx.addIssue({ code: 'custom', message: `${bad}; a gRPC target looks like "10.0.0.7:50051"` });
  });

const list = <T extends z.ZodType>(item: T) => z.union([item, z.array(item).min(1).max(32)]);

export const endpointSchema = z
  .strictObject({ http: list(httpUrl).optional(), grpc: list(grpcTarget).optional() })
  .refine((e) => e.http !== undefined || e.grpc !== undefined, 'needs "http" and/or "grpc"');

const routingKey = z.string().refine(isValidRoutingKey, `must be a routing key: ${ROUTING_KEY_RULE}`);

const ttl = z
  .union([z.number().positive(), z.string()])
  .refine((v) => parseDuration(v) !== undefined, 'must be a duration such as "2h", "30m", "90s" or seconds');

const labels = z.record(
  z.string().regex(LABEL_NAME_PATTERN, `label names are ${LABEL_NAME_RULE}`),
  z.string().max(MAX_LABEL_VALUE_LENGTH),
);

export const sandboxBody = z.strictObject({
  name: z.string().optional(),
  key: routingKey.optional(),
  overrides: z.record(serviceName, endpointSchema).default({}),
  labels: labels.default({}),
  ttl: ttl.optional(),
  expiresAt: z.number().int().positive().nullable().optional(),
  resources: z
    .record(
      z.string().regex(NAME_RE, `resource names are ${SANDBOX_NAME_RULE}`),
      z.strictObject({
        type: z.string().min(1).max(100),
        spec: z.record(z.string(), z.unknown()).default({}),
      }),
    )
    .default({}),
});
export type SandboxBody = z.infer<typeof sandboxBody>;

export const groupBody = z.strictObject({
  name: z.string().optional(),
  key: routingKey.optional(),
  match: z.strictObject({
    labels: labels.refine((l) => Object.keys(l).length > 0, 'needs at least one label'),
    mode: z.enum(['all', 'any']).default('all'),
  }),
  ttl: ttl.optional(),
  expiresAt: z.number().int().positive().nullable().optional(),
  expireWhenUnmatched: z.boolean().default(false),
});
export type GroupBody = z.infer<typeof groupBody>;

export const heartbeatBody = z
  .strictObject({
    service: serviceName,
    http: list(httpUrl).optional(),
    grpc: list(grpcTarget).optional(),
    endpoint: endpointSchema.optional(),
    ready: z.boolean().default(true),
    /** How long the announcement lasts without another heartbeat. */
    ttl: ttl.optional(),
  })
  .refine(
    (b) => b.http !== undefined || b.grpc !== undefined || b.endpoint !== undefined,
    'needs "http", "grpc" or "endpoint"',
  );
export type HeartbeatBody = z.infer<typeof heartbeatBody>;

/** Parses `input` with `schema`, or throws a 400 naming each bad field and why. */
export function parseBody<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issues = r.error.issues.map((i) => ({
    path: i.path.map(String).join('.') || '(body)',
    message: i.message,
  }));
  const first = issues[0]!;
  throw new RegistryError(400, 'invalid_request', `${first.path}: ${first.message}`, { issues });
}

export function checkName(name: string, what: string): void {
  if (!NAME_RE.test(name))
    throw new RegistryError(
      400,
      'invalid_name',
      `${what} name ${JSON.stringify(name)} is not valid: use ${SANDBOX_NAME_RULE}`,
    );
}
