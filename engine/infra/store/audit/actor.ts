/**
 * Who did it, and from where, as the audit trail records it (migration 20261205120000). The actor
 * comes from the store, never from free text: a tenant scope carries the principal that
 * verifyApiKey returned, a user id, or the store's operator, and the store signs it with the
 * scope (the database refuses an actor it did not sign). Operator actions outside any scope
 * (store.organizations) name the operator the store was opened for.
 */
import type { Database, PipelinedStatement, QueryOptions, QueryResult, Session } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { UUID } from '../repositories/validation.ts';

/** Whom a tenant scope acts for, as `withOrg(orgId, fn, { actor })` takes it. */
export type AuditActor =
  /** The principal of a verified key (`verification.principal`): recorded as the key. */
  | { apiKeyId: string; orgId: string }
  /** A user of the organization, signed in by the caller's own means. */
  | { userId: string }
  /** An operator, by name. */
  | { operator: string };

/** What the caller knows about the request: kept with each event it causes. */
export interface AuditContext {
  requestId?: string;
  ip?: string;
  userAgent?: string;
}

/**
 * An operator's name: what the CLI's --actor takes (an OS user name, an email). Letters, digits
 * and . _ @ + -, so that it needs no quoting anywhere it is printed.
 */
export const OPERATOR_NAME = /^[A-Za-z0-9._@+-]{1,200}$/;

/** The longest context the database accepts, in bytes of JSON. */
const MAX_CONTEXT_BYTES = 2048;
const CONTEXT_FIELDS = { requestId: 200, ip: 64, userAgent: 512 } as const;

function invalid(field: string, message: string, reason: string): StoreError {
  return new StoreError('INVALID_INPUT', message, { field, reason });
}

/** An operator's name, checked (`field`: where the caller gave it). */
export function operatorName(name: unknown, field = 'operator'): string {
  if (typeof name !== 'string' || !OPERATOR_NAME.test(name)) {
    throw invalid(field, 'an operator is named by 1 to 200 letters, digits and . _ @ + -', 'bad_operator');
  }
  return name;
}

/**
 * The actor as the database records it (`<kind>:<id>`), from what a caller handed in, read once
 * (a getter is called here and never again). A principal of another organization is refused: a
 * key of one organization does not act in another.
 */
export function actorText(actor: unknown, orgId: string): string {
  if (typeof actor !== 'object' || actor === null || Array.isArray(actor)) {
    throw invalid('actor', 'actor must be a verified principal, { userId } or { operator }', 'not_object');
  }
  const { apiKeyId, orgId: principalOrg, userId, operator } = actor as Record<string, unknown>;
  if (apiKeyId !== undefined) {
    if (typeof apiKeyId !== 'string' || !UUID.test(apiKeyId) || typeof principalOrg !== 'string') {
      throw invalid('actor', 'actor.apiKeyId must be the id of a verified key, with its orgId', 'bad_actor');
    }
    if (principalOrg.toLowerCase() !== orgId) {
      throw invalid('actor', "the actor's key belongs to another organization", 'actor_other_org');
    }
    return `api_key:${apiKeyId.toLowerCase()}`;
  }
  if (userId !== undefined) {
    if (typeof userId !== 'string' || !UUID.test(userId)) throw invalid('actor', 'actor.userId must be a user id', 'bad_actor');
    return `user:${userId.toLowerCase()}`;
  }
  if (operator !== undefined) return `operator:${operatorName(operator, 'actor')}`;
  throw invalid('actor', 'actor must be a verified principal, { userId } or { operator }', 'bad_actor');
}

/** The context as the JSON the database keeps, checked and rebuilt from the known fields only. */
export function contextJson(context: unknown): string {
  if (typeof context !== 'object' || context === null || Array.isArray(context)) {
    throw invalid('context', 'context must be an object such as { requestId, ip, userAgent }', 'not_object');
  }
  const given = context as Record<string, unknown>;
  const unknownField = Object.keys(given).find((key) => !(key in CONTEXT_FIELDS));
  if (unknownField !== undefined) {
    throw invalid(
      'context',
      `unknown context field ${JSON.stringify(unknownField)}; the fields are requestId, ip, userAgent`,
      'unknown_field',
    );
  }
  const rebuilt: Record<string, string> = {};
  for (const [field, max] of Object.entries(CONTEXT_FIELDS)) {
    const value = given[field];
    if (value === undefined) continue;
    if (typeof value !== 'string' || value.length > max)
      throw invalid('context', `context.${field} must be a string of at most ${max} characters`, 'bad_field');
    rebuilt[field] = value;
  }
  const json = JSON.stringify(rebuilt);
  if (Buffer.byteLength(json) > MAX_CONTEXT_BYTES)
    throw invalid('context', `context is longer than ${MAX_CONTEXT_BYTES} bytes`, 'too_long');
  return json;
}

/** Sets the transaction's actor, for a pipeline that is one transaction (see Session.pipeline). */
const SET_ACTOR = `select pg_catalog.set_config('app.actor', $1, true)`;
/**
 * On Citus the capture triggers run on the workers, which a setting reaches only by SET LOCAL
 * with propagate_set_commands 'local', and only in a transaction block: the pipeline gets one.
 */
const SET_ACTOR_ON_CITUS = `select pg_catalog.set_config('citus.propagate_set_commands', 'local', true), public.enter_audit_actor($1, '', '')`;
const BEGIN: PipelinedStatement = { sql: 'begin', rows: false };
const COMMIT: PipelinedStatement = { sql: 'commit', rows: false };

/**
 * `db`, whose statements record `actor` (`operator:<name>`) as their actor: each one goes with
 * the setting, in one transaction and one round trip. For the operator's repository
 * (store.organizations), outside any tenant scope, where the database takes app.actor as given.
 */
export function actingAs(db: Database, actor: string, options: { citus: boolean }): Database {
  const setActor: PipelinedStatement = { sql: options.citus ? SET_ACTOR_ON_CITUS : SET_ACTOR, params: [actor], prepare: true, rows: false };
  /** `statements` with the actor set first in their transaction, and the results of `statements` alone. */
  const withActor = async (session: Session, statements: readonly PipelinedStatement[]) => {
    const opensBlock = statements[0] !== undefined && /^\s*begin\b/i.test(statements[0].sql);
    if (opensBlock || !options.citus) {
      const at = opensBlock ? 1 : 0;
      const results = await session.pipeline([...statements.slice(0, at), setActor, ...statements.slice(at)]);
      results.splice(at, 1);
      return results;
    }
    const results = await session.pipeline([BEGIN, setActor, ...statements, COMMIT]);
    return results.slice(2, -1);
  };
  const acting = (session: Session): Session => ({
    query: (sql, params, options) => session.query(sql, params, options),
    exec: (sql) => session.exec(sql),
    pipeline: (statements) => withActor(session, statements),
  });
  return {
    kind: db.kind,
    location: db.location,
    query: async <Row>(sql: string, params?: readonly unknown[], options?: QueryOptions) => {
      const results = await db.withSession(
        (session) => withActor(session, [{ sql, params, prepare: options?.prepare ?? false }]),
        options?.deadlineMs === undefined ? undefined : { deadlineMs: options.deadlineMs },
      );
      return results[0] as QueryResult<Row>;
    },
    exec: (sql) => db.exec(sql),
    withSession: (work, options) => db.withSession((session) => work(acting(session)), options),
    loginAs: (user, password, pool) => db.loginAs(user, password, pool),
    snapshot: () => db.snapshot(),
    listen: (channel, handlers) => db.listen(channel, handlers),
    close: () => db.close(),
  };
}
