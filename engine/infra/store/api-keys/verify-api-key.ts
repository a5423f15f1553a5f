/**
 * Verifying an API key: one SQL statement (verify_api_key, see its migration) that finds the
 * key by prefix, checks it, its user and its organization, counts the request against the
 * hourly limit, and returns the principal. A malformed key is refused before any I/O.
 */
import type { Queryable } from '../connection/database.ts';
import { parseKey } from './api-keys.ts';
import type { Permission } from './rbac.ts';
import { run } from '../connection/run.ts';
import type { Role } from '../repositories/validation.ts';

export const VERIFY_REASONS = ['MALFORMED', 'NOT_FOUND', 'EXPIRED', 'REVOKED', 'USER_INACTIVE', 'ORG_INACTIVE', 'RATE_LIMITED'] as const;
export type VerifyReason = (typeof VERIFY_REASONS)[number];

export interface Principal {
  orgId: string;
  userId: string;
  role: Role;
  permissions: Permission[];
  apiKeyId: string;
}

export interface RateLimitState {
  limit: number;
  remaining: number;
  resetsAt: Date;
}

export type Verification =
  { ok: true; principal: Principal; rateLimit: RateLimitState } | { ok: false; reason: VerifyReason; rateLimit?: RateLimitState };

interface VerifyRow {
  outcome: 'OK' | VerifyReason;
  org_id: string | null;
  user_id: string | null;
  api_key_id: string | null;
  role: Role | null;
  permissions: Permission[] | null;
  rate_limit_per_hour: number | null;
  remaining: number | null;
  resets_at: Date | null;
}

/**
 * @example
 * const result = await verifyApiKey(db, request.headers['x-api-key']);
 * if (!result.ok) return reply(result.reason === 'RATE_LIMITED' ? 429 : 401);
 * assertAuthorized(result.principal, 'workflow:execute');
 */
export async function verifyApiKey(db: Queryable, key: unknown): Promise<Verification> {
  const parsed = parseKey(key);
  if (!parsed) return { ok: false, reason: 'MALFORMED' };
  const { rows } = await run<VerifyRow>(db, 'select * from public.verify_api_key($1, $2)', [parsed.prefix, parsed.hash]);
  return verification(rows[0]!);
}

function verification(row: VerifyRow): Verification {
  const rateLimit =
    row.rate_limit_per_hour !== null && row.remaining !== null && row.resets_at !== null
      ? { limit: row.rate_limit_per_hour, remaining: row.remaining, resetsAt: new Date(row.resets_at) }
      : undefined;
  if (row.outcome !== 'OK') return { ok: false, reason: row.outcome, ...(rateLimit ? { rateLimit } : {}) };
  return {
    ok: true,
    principal: { orgId: row.org_id!, userId: row.user_id!, role: row.role!, permissions: row.permissions ?? [], apiKeyId: row.api_key_id! },
    rateLimit: rateLimit!,
  };
}
