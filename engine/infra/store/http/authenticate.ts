/**
 * API-key authentication for HTTP, independent of any framework: `authenticate(store, headers,
 * { permission })` reads the key from `Authorization: Bearer <key>` or `x-api-key`, verifies it
 * (one statement), checks the permission, and answers with what the response needs: the
 * principal, or a status (401, 403, 429, 503) with a problem body, and the headers of both:
 * `WWW-Authenticate` (RFC 6750), `Retry-After`, and the IETF draft's `RateLimit-Policy` and
 * `RateLimit` (draft-ietf-httpapi-ratelimit-headers) whenever the key's limit is known.
 *
 * The permission is checked before the request is counted: it travels with the verification
 * (verify_api_key's third argument), which refuses a key that lacks it with MISSING_PERMISSION
 * and counts nothing, so a 403 costs no unit of the key's hourly limit.
 */
import type { Permission } from '../api-keys/rbac.ts';
import type { Principal, RateLimitState, Verification, VerifyReason } from '../api-keys/verify-api-key.ts';

export type { Principal };
import { isPermission } from '../api-keys/rbac.ts';
import { StoreError, isStoreError } from '../errors.ts';

/** Request headers as Node gives them (lower-case names), or a Fetch `Headers`. */
export type RequestHeaders = Record<string, string | string[] | undefined> | { get(name: string): string | null };

export interface AuthenticateOptions {
  /** The permission the route needs; without it, any valid key passes. */
  permission?: Permission;
  /** The realm in `WWW-Authenticate` (default `engine-store`). */
  realm?: string;
}

export type Authentication =
  | { ok: true; principal: Principal; headers: Record<string, string> }
  | { ok: false; status: 401 | 403 | 429 | 503; body: ProblemBody; headers: Record<string, string> };

/** An RFC 9457 problem body, with the store's reason. */
export interface ProblemBody {
  type: 'about:blank';
  title: string;
  status: number;
  /** `MALFORMED`, `NOT_FOUND`, `REVOKED` … (see VerifyReason), `MISSING_KEY`, `MISSING_PERMISSION`, or a store error code. */
  reason: string;
  detail: string;
}

/** What authenticate needs of a store. */
export interface KeyVerifier {
  verifyApiKey(key: unknown, options?: { permission?: Permission }): Promise<Verification>;
}

const TITLES: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 429: 'Too Many Requests', 503: 'Service Unavailable' };

/** Refusals of the key itself: the client must present another (401); the others are about who holds it (403). */
const UNAUTHORIZED: ReadonlySet<VerifyReason> = new Set(['MALFORMED', 'NOT_FOUND', 'EXPIRED', 'REVOKED']);

export async function authenticate(
  store: KeyVerifier,
  headers: RequestHeaders,
  options: AuthenticateOptions = {},
): Promise<Authentication> {
  const { permission, realm } = authenticateOptions(options);
  const challenge = (error?: string) => `Bearer realm="${realm}"${error ? `, error="${error}"` : ''}`;
  const presented = presentedKey(headers);
  if (presented.kind !== 'key') {
    const missing = presented.kind === 'missing';
    return refusal(401, missing ? 'MISSING_KEY' : 'MALFORMED', missing ? 'an API key is required' : presented.why, {
      'WWW-Authenticate': challenge(missing ? undefined : 'invalid_request'),
    });
  }
  let verification: Verification;
  try {
    verification = await store.verifyApiKey(presented.key, permission ? { permission } : undefined);
  } catch (error) {
    if (!isStoreError(error)) throw error;
    // The store could not answer (a timeout, a full pool, the database away): try again later.
    return refusal(503, error.code, 'the API key could not be verified now; try again', { 'Retry-After': '1' });
  }
  const limits = rateLimitHeaders(verification.rateLimit);
  if (!verification.ok) {
    const { reason } = verification;
    if (reason === 'RATE_LIMITED') {
      const retryAfter = verification.rateLimit ? secondsUntil(verification.rateLimit.resetsAt) : 60;
      return refusal(429, reason, 'this API key has used its requests for this hour', { ...limits, 'Retry-After': String(retryAfter) });
    }
    if (reason === 'MISSING_PERMISSION') return missingPermission(permission!, limits, challenge);
    if (UNAUTHORIZED.has(reason)) {
      return refusal(401, reason, 'the API key is not valid', { ...limits, 'WWW-Authenticate': challenge('invalid_token') });
    }
    return refusal(403, reason, 'the API key belongs to a user or organization that is not active', limits);
  }
  // Checked again here, for a verifier that does not take the permission itself.
  if (permission && !verification.principal.permissions.includes(permission)) return missingPermission(permission, limits, challenge);
  return { ok: true, principal: verification.principal, headers: limits };
}

function missingPermission(permission: Permission, limits: Record<string, string>, challenge: (error: string) => string): Authentication {
  return refusal(403, 'MISSING_PERMISSION', `this API key lacks the permission ${permission}`, {
    ...limits,
    'WWW-Authenticate': `${challenge('insufficient_scope')}, scope="${permission}"`,
  });
}

function refusal(status: 401 | 403 | 429 | 503, reason: string, detail: string, headers: Record<string, string>): Authentication {
  return {
    ok: false,
    status,
    body: { type: 'about:blank', title: TITLES[status]!, status, reason, detail },
    headers: { ...headers, 'Content-Type': 'application/problem+json' },
  };
}

/** The options, read once: a permission the store knows, a realm that fits in a quoted string. */
function authenticateOptions(options: AuthenticateOptions): { permission: Permission | undefined; realm: string } {
  const { permission, realm = 'engine-store' } = options;
  if (permission !== undefined && !isPermission(permission)) {
    throw new StoreError('INVALID_INPUT', `unknown permission ${JSON.stringify(permission)}`, { field: 'permission' });
  }
  if (typeof realm !== 'string' || !/^[\x20-\x7e]{1,100}$/.test(realm) || /["\\]/.test(realm)) {
    throw new StoreError('INVALID_INPUT', 'realm must be 1 to 100 printable ASCII characters, without quotes or backslashes', {
      field: 'realm',
    });
  }
  return { permission, realm };
}

type Presented = { kind: 'key'; key: string } | { kind: 'missing' } | { kind: 'malformed'; why: string };

function header(headers: RequestHeaders, name: string): string | string[] | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') {
    return (headers as { get(name: string): string | null }).get(name) ?? undefined;
  }
  return (headers as Record<string, string | string[] | undefined>)[name];
}

/** The key a request presents, from `Authorization: Bearer` or `x-api-key`: one, exactly. */
function presentedKey(headers: RequestHeaders): Presented {
  const authorization = header(headers, 'authorization');
  const apiKey = header(headers, 'x-api-key');
  if (Array.isArray(authorization) || Array.isArray(apiKey)) return { kind: 'malformed', why: 'the API key header is repeated' };
  let bearer: string | undefined;
  if (authorization !== undefined) {
    const match = /^Bearer +(\S+) *$/i.exec(authorization);
    if (!match) return { kind: 'malformed', why: 'the Authorization header is not "Bearer <key>"' };
    bearer = match[1]!;
  }
  const fromHeader = apiKey?.trim();
  if (bearer !== undefined && fromHeader !== undefined && bearer !== fromHeader) {
    return { kind: 'malformed', why: 'Authorization and x-api-key present two different keys' };
  }
  const key = bearer ?? fromHeader;
  return key ? { kind: 'key', key } : { kind: 'missing' };
}

/** `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers): the hourly quota, what is left, when it resets. */
function rateLimitHeaders(state: RateLimitState | undefined): Record<string, string> {
  if (!state) return {};
  return {
    'RateLimit-Policy': `"hour";q=${state.limit};w=3600`,
    RateLimit: `"hour";r=${Math.max(0, state.remaining)};t=${secondsUntil(state.resetsAt)}`,
  };
}

function secondsUntil(moment: Date): number {
  return Math.max(0, Math.ceil((moment.getTime() - Date.now()) / 1000));
}
