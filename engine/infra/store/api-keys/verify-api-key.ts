/**
 * Verifying an API key: one SQL statement (verify_api_key, see its migration) that finds the
 * key by prefix, checks it, its user and its organization, counts the request against the
 * hourly limit, and returns the principal. A malformed key is refused before any I/O.
 *
 * The store runs it on a pool of its own whose connections carry short lock and statement
 * timeouts (VerifyTimeouts; store.ts): verify_api_key waits on no row lock a tenant can take, and
 * a table lock it does meet ends it with LOCK_TIMEOUT or TIMEOUT instead of holding the caller.
 */
import type { Queryable } from '../connection/database.ts';
import { StoreError, isStoreError } from '../errors.ts';
import { parseKey, type ParsedKey } from './api-keys.ts';
import type { Permission } from './rbac.ts';
import type { CallOptions } from '../connection/call-options.ts';
import { run } from '../connection/run.ts';
import type { PrefixOrgs } from './prefix-orgs.ts';
import { millisecondLimits, type Role } from '../repositories/validation.ts';

/** Limits of every verification, set on the verification pool's connections (PostgreSQL only). */
export interface VerifyTimeouts {
  /** statement_timeout, ms (default 2,000): a slower verification fails with TIMEOUT. */
  statementMs?: number;
  /** lock_timeout, ms (default 100): a lock not granted in time fails with LOCK_TIMEOUT. */
  lockMs?: number;
}

export const DEFAULT_VERIFY_TIMEOUTS: Required<VerifyTimeouts> = { statementMs: 2_000, lockMs: 100 };

/** Connections kept for verification alone, unless the store is told otherwise. */
export const DEFAULT_VERIFY_POOL_SIZE = 2;

/** The verification limits, defaults filled in, checked: 0 would mean "no limit" to PostgreSQL. */
export function verifyTimeoutValues(timeouts: VerifyTimeouts = {}): Required<VerifyTimeouts> {
  return millisecondLimits(DEFAULT_VERIFY_TIMEOUTS, timeouts);
}

/** The verification pool's size, default filled in, checked. */
export function verifyPoolSizeValue(size: number = DEFAULT_VERIFY_POOL_SIZE): number {
  if (!Number.isInteger(size) || size < 1 || size > 1_000) {
    throw new StoreError('INVALID_INPUT', 'verifyPoolSize must be a whole number of connections from 1 to 1,000', {
      field: 'verifyPoolSize',
    });
  }
  return size;
}

export const VERIFY_REASONS = [
  'MALFORMED',
  'NOT_FOUND',
  'EXPIRED',
  'REVOKED',
  'USER_INACTIVE',
  'ORG_INACTIVE',
  'RATE_LIMITED',
  // Only when the caller names a permission (VerifyOptions): the key lacks it; not counted.
  'MISSING_PERMISSION',
] as const;
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

/** A row of verify_api_key, verify_api_key_in_org and (its first columns) lease_api_key_permits. */
export interface VerifyRow {
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
 * The row of a verification as one JSON array, in VerifyRow's order. node-postgres reads a
 * column description and builds a parser list for every result it receives, and the server sends
 * each column's value on its own: nine columns cost 0.02 ms over one, and one JSON value half of
 * that (by turns in one process, docs/benchmarks.md).
 */
const asOneValue = (call: string) =>
  `select pg_catalog.json_build_array(v.outcome, v.org_id, v.user_id, v.api_key_id, v.role, v.permissions,
     v.rate_limit_per_hour, v.remaining, v.resets_at) as v from ${call} v`;
/** A key whose organization is not known yet: found by its prefix first. */
const BY_PREFIX = asOneValue('public.verify_api_key($1, $2, $3)');
/** A key whose organization the store has seen: one statement fewer (bench/instructions.ts counts it). */
export const IN_ORG = asOneValue('public.verify_api_key_in_org($1, $2, $3, $4)');

type VerifyArray = [
  VerifyRow['outcome'],
  string | null,
  string | null,
  string | null,
  Role | null,
  Permission[] | null,
  number | null,
  number | null,
  string | null,
];

/** A verification's JSON array (asOneValue) as the row it stands for. */
function verifyRowOf([outcome, orgId, userId, apiKeyId, role, permissions, limit, remaining, resetsAt]: VerifyArray): VerifyRow {
  return {
    outcome,
    org_id: orgId,
    user_id: userId,
    api_key_id: apiKeyId,
    role,
    permissions,
    rate_limit_per_hour: limit,
    remaining,
    resets_at: resetsAt === null ? null : new Date(resetsAt),
  };
}

/**
 * @example
 * const result = await verifyApiKey(db, request.headers['x-api-key']);
 * if (!result.ok) return reply(result.reason === 'RATE_LIMITED' ? 429 : 401);
 * assertAuthorized(result.principal, 'workflow:execute');
 */
export async function verifyApiKey(
  db: Queryable,
  key: unknown,
  call: CallOptions = {},
  permission?: Permission,
  prefixOrgs?: PrefixOrgs,
  onRecordError?: RecordErrorReporter,
): Promise<Verification> {
  const parsed = parseKey(key);
  if (!parsed) return malformed();
  return verifyParsedKey(db, parsed, call, permission, prefixOrgs, onRecordError);
}

/** The answer to a key that is not a key, decided without any I/O (a new object: callers may keep it). */
export function malformed(): Verification {
  return { ok: false, reason: 'MALFORMED' };
}

/** verifyApiKey of a key already parsed (and so hashed once). */
export async function verifyParsedKey(
  db: Queryable,
  parsed: ParsedKey,
  call: CallOptions,
  permission: Permission | undefined,
  prefixOrgs: PrefixOrgs | undefined,
  onRecordError?: RecordErrorReporter,
): Promise<Verification> {
  const knownOrg = prefixOrgs?.orgOf(parsed.prefix);
  const [sql, params] =
    knownOrg === undefined
      ? [BY_PREFIX, [parsed.prefix, parsed.hash, permission ?? null]]
      : [IN_ORG, [knownOrg, parsed.prefix, parsed.hash, permission ? [permission] : []]];
  let value: VerifyArray | undefined;
  try {
    value = (await run<{ v: VerifyArray }>(db, sql, params, { prepare: true, ...call })).rows[0]?.v;
  } catch (error) {
    throw verificationError(error);
  }
  // No row only for a NULL argument (verify_api_key_in_org is STRICT), which none of the above is.
  if (value === undefined) return { ok: false, reason: 'NOT_FOUND' };
  const row = verifyRowOf(value);
  // The organization comes back only once the digest matched.
  prefixOrgs?.settle(parsed.prefix, knownOrg, row.org_id);
  await recordRefusal(db, parsed, row.outcome, call, onRecordError);
  return verificationOf(row);
}

/**
 * The refusals the audit trail records, when they name a key that exists: a wrong secret (NOT_FOUND
 * for a real prefix), a revoked, rotated, deleted or expired key, an inactive user or organization,
 * and rate limiting. Not MISSING_PERMISSION: the key was good, the route needed more.
 */
const AUDITED_REFUSALS = new Set<string>(['NOT_FOUND', 'REVOKED', 'EXPIRED', 'USER_INACTIVE', 'ORG_INACTIVE', 'RATE_LIMITED']);

const RECORD_REFUSAL = 'select public.record_api_key_failure($1, $2)';

/** Told when a refusal could not be recorded (the store's onError, operation `recordRefusal`). */
export type RecordErrorReporter = (error: StoreError) => void;

/**
 * Records a refused verification in the audit trail of the key's organization (migration
 * 20261205120000): the database works the reason out again from the key itself, appends one
 * event per key, reason and minute, and counts the rest, so a flood adds no rows. A second
 * round trip, on the refusals only: an accepted key costs nothing more. A failure to record does
 * not change the answer, which is a refusal either way; it goes to `onRecordError`, so that a
 * trail that stopped recording is seen (on Citus it once did, silently).
 */
export async function recordRefusal(
  db: Queryable,
  parsed: ParsedKey,
  outcome: string,
  call: CallOptions,
  onRecordError?: RecordErrorReporter,
): Promise<void> {
  if (!AUDITED_REFUSALS.has(outcome)) return;
  await run(db, RECORD_REFUSAL, [parsed.prefix, parsed.hash], { prepare: true, ...call }).catch((error: unknown) => {
    onRecordError?.(
      isStoreError(error) ? error : new StoreError('DATABASE_ERROR', 'the refusal could not be recorded', {}, { cause: error }),
    );
  });
}

/** A verification ended by its limits, said as such: the key was neither accepted nor counted. */
export function verificationError(error: unknown): unknown {
  if (isStoreError(error, 'LOCK_TIMEOUT')) {
    return new StoreError(
      'LOCK_TIMEOUT',
      'the API key could not be verified: a lock it needs was not granted in time (nothing was counted); try again',
      { reason: 'verification' },
      { cause: error },
    );
  }
  if (isStoreError(error, 'TIMEOUT') && error.details.reason === 'client_deadline') {
    // The server did not answer: whether it counted the request is unknown.
    return new StoreError(
      'TIMEOUT',
      `the API key could not be verified: ${error.message} (the request may have been counted); try again`,
      { reason: 'client_deadline' },
      { cause: error },
    );
  }
  if (isStoreError(error, 'TIMEOUT')) {
    return new StoreError(
      'TIMEOUT',
      'the API key could not be verified in time (nothing was counted); try again',
      { reason: 'verification' },
      { cause: error },
    );
  }
  return error;
}

export function verificationOf(row: VerifyRow): Verification {
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
