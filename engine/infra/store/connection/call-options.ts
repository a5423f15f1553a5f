/**
 * What a caller may say about one call of the store (withOrg, readOrg, verifyApiKey), rebuilt
 * into plain data once, before anything reads it: a getter or a prototype is read here and
 * never again, and a misspelt option is refused instead of ignored.
 */
import { StoreError } from '../errors.ts';
import { isPermission, type Permission } from '../api-keys/rbac.ts';
import type { AuditActor, AuditContext } from '../audit/actor.ts';

export interface CallOptions {
  /**
   * How long any one round trip of this call may go unanswered, in ms (1 to 86,400,000), instead
   * of the default of its pool (a little above the statement timeout of the scopes or of the
   * verifications). Past it the call fails with TIMEOUT (reason client_deadline) and its
   * connection is destroyed. With the key cache, also how long a verification waits for another
   * caller's lease of the same key. PostgreSQL only: the embedded database runs its statements
   * in this process, where nothing can stop one half-way.
   */
  deadlineMs?: number;
}

/** The longest deadline a call accepts: beyond a day, a mistake rather than a plan. */
const MAX_DEADLINE_MS = 86_400_000;

export function callOptions(options: unknown): CallOptions {
  return parseCallOptions(options, ['deadlineMs']).call;
}

/** withOrg's options: a call's, and who acts and from where, for the audit trail. */
export interface WithOrgOptions extends CallOptions {
  /**
   * Whom the scope acts for, recorded with every change it makes (see audit/actor.ts): the
   * `principal` verifyApiKey returned, `{ userId }` or `{ operator }`. Signed by the store; the
   * default is the store's operator, if it was opened with one, else `system`.
   */
  actor?: AuditActor;
  /** The request behind the scope, kept with each event: `{ requestId, ip, userAgent }` (at most 2 KiB). */
  context?: AuditContext;
}

/** withOrg's options read once: the actor and context as given, checked against the organization by the scope. */
export function withOrgOptions(options: unknown): { call: CallOptions; actor?: unknown; context?: unknown } {
  if (options === undefined) return NO_OPTIONS;
  const { call } = parseCallOptions(options, ['deadlineMs', 'actor', 'context']);
  const { actor, context } = options as { actor?: unknown; context?: unknown };
  return { call, ...(actor === undefined ? {} : { actor }), ...(context === undefined ? {} : { context }) };
}

/** verifyApiKey's options: a call's, and the permission the caller's route needs. */
export interface VerifyOptions extends CallOptions {
  /**
   * Refuse the key, without counting the request, if it lacks this permission (reason
   * MISSING_PERMISSION): so that a request the key may not make costs no unit of its limit.
   */
  permission?: Permission;
}

export function verifyOptions(options: unknown): { call: CallOptions; permission?: Permission } {
  return parseCallOptions(options, ['deadlineMs', 'permission']);
}

/** What a call without options parses to: shared, frozen, so that the hot paths allocate nothing for it. */
const NO_OPTIONS: { call: CallOptions } = Object.freeze({ call: Object.freeze({}) });

function parseCallOptions(options: unknown, allowed: readonly string[]): { call: CallOptions; permission?: Permission } {
  if (options === undefined) return NO_OPTIONS;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new StoreError('INVALID_INPUT', 'the call options must be an object such as { deadlineMs: 2000 }', {
      field: 'options',
      reason: 'not_object',
    });
  }
  const unknown = Object.keys(options).find((key) => !allowed.includes(key));
  if (unknown !== undefined) {
    throw new StoreError('INVALID_INPUT', `unknown call option ${JSON.stringify(unknown)}; the options are ${allowed.join(', ')}`, {
      field: 'options',
      reason: 'unknown_option',
    });
  }
  const { deadlineMs, permission } = options as { deadlineMs?: unknown; permission?: unknown };
  if (
    deadlineMs !== undefined &&
    (typeof deadlineMs !== 'number' || !Number.isInteger(deadlineMs) || deadlineMs < 1 || deadlineMs > MAX_DEADLINE_MS)
  ) {
    throw new StoreError('INVALID_INPUT', `deadlineMs must be a whole number of milliseconds from 1 to ${MAX_DEADLINE_MS}`, {
      field: 'deadlineMs',
      reason: 'out_of_range',
    });
  }
  if (permission !== undefined && !isPermission(permission)) {
    throw new StoreError('INVALID_INPUT', `unknown permission ${JSON.stringify(permission)}`, { field: 'permission' });
  }
  return {
    call: deadlineMs === undefined ? {} : { deadlineMs: deadlineMs as number },
    ...(permission === undefined ? {} : { permission }),
  };
}
