/**
 * withOrg() and readOrg(): the only ways into an organization's data. A transaction, on a
 * connection of the tenant login, that enters the role app_tenant (on the embedded database,
 * whose one user is a superuser) and the organization's scope (app.org_id, with this store's
 * signature of it that the policies check in every statement; see scope-signer.ts), all LOCAL
 * to the transaction: row-level security then confines every statement to that organization, and nothing of it outlives the transaction on a pooled connection. Each scope
 * also runs under statement, lock and idle timeouts, so that one tenant cannot hold others
 * (local to it, or on one server the tenant pool's own: ScopeSettings.limitsPinned).
 *
 * A scope takes no SQL text from its caller: the repositories' own statements, and custom
 * queries through `tx.kysely`, a query builder that runs only checked trees
 * (query-builder.ts).
 *
 * Round trips are most of the cost of a short transaction, so entering the scope travels with
 * the scope's first statement (one pipeline, see connection/database.ts), and a readOrg() read is one pipeline
 * by itself: one round trip, as the bare statement would be.
 */
import { ApiKeysRepository } from '../api-keys/api-keys.ts';
import type {
  Database,
  PipelinedStatement,
  QueryOptions,
  QueryResult,
  Queryable,
  Session,
  SessionLimits,
  SessionOptions,
} from '../connection/database.ts';
import type { CallOptions } from '../connection/call-options.ts';
import { observed, type ObservabilityOptions } from '../observability.ts';
import { databaseErrorFields, toStoreError } from '../connection/database-errors.ts';
import { StoreError, isStoreError } from '../errors.ts';
import { SchedulesRepository } from '../repositories/schedules.ts';
import { TaskStatesRepository } from '../repositories/tasks.ts';
import { UsersRepository } from '../repositories/users.ts';
import { run } from '../connection/run.ts';
import { tenantQueryBuilder, type TenantQueryBuilder } from './query-builder.ts';
import { millisecondLimits, parseInput, uuid } from '../repositories/validation.ts';
import { WorkflowStatesRepository } from '../repositories/workflows.ts';
import { ScopeSigner } from './scope-signer.ts';
import { actorText, contextJson } from '../audit/actor.ts';
import { AuditLog } from '../audit/audit-log.ts';
import type { OrgShare } from './org-share.ts';

/** What a `withOrg` callback works with; valid only until the callback's promise settles. */
export class TenantScope {
  // Made on first use: most scopes touch one repository, and a read is a hot path.
  #users?: UsersRepository;
  #workflows?: WorkflowStatesRepository;
  #tasks?: TaskStatesRepository;
  #schedules?: SchedulesRepository;
  #apiKeys?: ApiKeysRepository;
  #kysely?: TenantQueryBuilder;
  #audit?: AuditLog;

  constructor(
    readonly orgId: string,
    private readonly connection: Queryable,
  ) {}

  get users(): UsersRepository {
    return (this.#users ??= new UsersRepository(this.connection, this.orgId));
  }

  get workflows(): WorkflowStatesRepository {
    return (this.#workflows ??= new WorkflowStatesRepository(this.connection, this.orgId));
  }

  get tasks(): TaskStatesRepository {
    return (this.#tasks ??= new TaskStatesRepository(this.connection, this.orgId));
  }

  get schedules(): SchedulesRepository {
    return (this.#schedules ??= new SchedulesRepository(this.connection, this.orgId));
  }

  get apiKeys(): ApiKeysRepository {
    return (this.#apiKeys ??= new ApiKeysRepository(this.connection, this.orgId));
  }

  /** The organization's audit trail (read only: the database writes it). */
  get audit(): AuditLog {
    return (this.#audit ??= new AuditLog(this.connection, this.orgId));
  }

  /**
   * Custom queries over the tenant tables, as app_tenant, in this scope's transaction: a Kysely
   * query builder that refuses SQL text and anything off its allow-lists.
   *
   * @example
   * const running = await tx.kysely.selectFrom('workflow_states').select(['workflow_exec_id']).where('status', '=', 'running').execute();
   */
  get kysely(): TenantQueryBuilder {
    return (this.#kysely ??= tenantQueryBuilder(this.connection, this.orgId));
  }
}

/** Local limits of every tenant scope, so that one tenant's statement cannot hold others. */
export interface ScopeTimeouts {
  /** statement_timeout, ms (default 5,000): a slower statement fails with TIMEOUT. */
  statementMs?: number;
  /** lock_timeout, ms (default 1,000): a lock not granted in time fails with LOCK_TIMEOUT. */
  lockMs?: number;
  /** idle_in_transaction_session_timeout, ms (default 30,000): a scope idle longer is ended. */
  idleInTransactionMs?: number;
}

export const DEFAULT_SCOPE_TIMEOUTS: Required<ScopeTimeouts> = { statementMs: 5_000, lockMs: 1_000, idleInTransactionMs: 30_000 };

/**
 * What every scope of one store carries: the signer of its scopes, its timeouts, and whether
 * its database is a Citus coordinator (there, plans stay custom: Citus cannot plan a generic
 * statement that spans shards).
 */
export interface ScopeSettings extends ScopeTimeouts {
  signer: ScopeSigner;
  citus?: boolean;
  /**
   * Whether a scope enters the role app_tenant (default true): not needed when the tenant
   * login is app_tenant itself, which saves each scope a role lookup.
   */
  enterRole?: boolean;
  /**
   * Whether the tenant pool's connections start with the scope's limits (scopeSessionLimits)
   * instead of each scope setting them (default false). About 0.012 ms a scope on one server.
   * Not on Citus, where only the scope's SET LOCALs reach the workers, nor on the embedded
   * database, whose one connection also runs the owner's statements.
   */
  limitsPinned?: boolean;
  /** One organization's share of the tenant pool (see org-share.ts). */
  share?: OrgShare;
  /** The actor of scopes that name none (`operator:<name>`): the store's operator, if it has one. */
  operator?: string;
}

/** A store's scope settings, checked once, as the entry statement needs them. */
export interface ScopeEntry {
  readonly signer: ScopeSigner;
  readonly citus: boolean;
  /** The entry statements of this store's scopes (enterStatement), made once. */
  readonly enterReadWrite: string;
  readonly enterReadOnly: string;
  /** One organization's share of the tenant pool (a server's; none on the embedded database). */
  readonly share?: OrgShare;
  /**
   * statement_timeout, lock_timeout, idle_in_transaction_session_timeout, plan_cache_mode, as
   * the entry statement's parameters; none where the pool pins them (ScopeSettings.limitsPinned).
   */
  readonly limits: readonly string[];
  /** The actor of write scopes that name none (ScopeSettings.operator), or '' for the database's default (system). */
  readonly operator: string;
}

/**
 * The limits a tenant pool's connections start with where they are pinned
 * (ScopeSettings.limitsPinned): a RESET ALL at the end of a scope returns to them, and tenant
 * code has no SET (query-builder.ts).
 */
export function scopeSessionLimits(timeouts: Required<ScopeTimeouts>): SessionLimits {
  return { ...timeouts, genericPlans: true };
}

/** A caller's scope timeouts, checked and copied once (with the defaults for those not given). */
export function scopeTimeoutValues(timeouts: ScopeTimeouts = {}): Required<ScopeTimeouts> {
  return millisecondLimits(DEFAULT_SCOPE_TIMEOUTS, timeouts);
}

/**
 * The scope's settings as the entry statement's parameters, checked: a timeout of 0 would mean
 * "no limit" to PostgreSQL.
 */
export function scopeEntry(settings: ScopeSettings): ScopeEntry {
  const { citus = false, enterRole = true, limitsPinned = false, share, signer, operator = '', ...timeouts } = settings;
  if (!(signer instanceof ScopeSigner))
    throw new StoreError('INVALID_INPUT', "a tenant scope needs the store's signer", { field: 'signer' });
  if (limitsPinned && citus) {
    throw new StoreError('INVALID_INPUT', "on Citus a scope's limits must travel with it to the workers", { field: 'limitsPinned' });
  }
  const limits = scopeTimeoutValues(timeouts);
  const shape = { citus, enterRole, limits: !limitsPinned };
  return {
    signer,
    citus,
    operator,
    ...(share ? { share } : {}),
    enterReadWrite: enterStatement({ ...shape, readOnly: false }),
    enterReadOnly: enterStatement({ ...shape, readOnly: true }),
    limits: limitsPinned
      ? []
      : [`${limits.statementMs}ms`, `${limits.lockMs}ms`, `${limits.idleInTransactionMs}ms`, citus ? 'auto' : 'force_generic_plan'],
  };
}

/**
 * The statement that enters organization `org`'s scope: the role (unless the login is
 * app_tenant itself), the organization with its expiry and this store's signature of both (the
 * policies check the signature, and whether the organization is live, once per statement:
 * checking it here too would cost every scope a PL/pgSQL call for nothing) and the scope's limits (unless the pool pins them), all LOCAL to the transaction
 * (the settings the store's statements depend on are the connection's own: see
 * PINNED_STARTUP_SETTINGS); for reads the transaction made read-only so that the database, not
 * only the API, refuses writes there.
 *
 * Generic plans, too: under row-level security the organization is a setting, not a
 * parameter, so a plan made for one call's values gains nothing over the generic one, yet the
 * planner keeps re-planning a keyset page whose values look selective (0.2 ms a call here).
 * Not on Citus (ScopeSettings.citus).
 *
 * On Citus only SET LOCAL reaches the workers the transaction uses, and only with
 * citus.propagate_set_commands = 'local', set first: there enter_org_scope sets the three
 * settings (with SET LOCAL only then), after checking the signature itself.
 */
function enterStatement(shape: { citus: boolean; readOnly: boolean; enterRole: boolean; limits: boolean }): string {
  const calls = [
    ...(shape.enterRole ? [`set_config('role', 'app_tenant', true)`] : []),
    ...(shape.citus
      ? [`set_config('citus.propagate_set_commands', 'local', true)`, 'public.enter_org_scope($1::uuid, $2::bigint, $3::bytea)']
      : [
          `set_config('app.org_id', $1, true)`,
          `set_config('app.org_expires', $2, true)`,
          // Whatever a session may hold: this scope's token says nothing of it (see scope_org).
          `set_config('app.org_live', '', true)`,
          `set_config('app.org_token', $3, true)`,
        ]),
    ...(shape.limits
      ? [
          `set_config('plan_cache_mode', $7, true)`,
          `set_config('statement_timeout', $4, true)`,
          `set_config('lock_timeout', $5, true)`,
          `set_config('idle_in_transaction_session_timeout', $6, true)`,
        ]
      : []),
    ...(shape.readOnly
      ? [`set_config('transaction_read_only', 'on', true)`]
      : // Who acts, signed, and the caller's context, for the audit trail (audit/actor.ts): always
        // set, so that nothing a session holds (the embedded database's owner) speaks for the scope.
        // On Citus with SET LOCAL, by enter_audit_actor: the capture triggers run on the workers.
        auditSettings(shape.citus, shape.limits ? 8 : 4)),
  ];
  return `select ${calls.join(', ')}`;
}

function auditSettings(citus: boolean, first: number): string[] {
  const [actor, token, context] = [first, first + 1, first + 2].map((n) => `$${n}`);
  if (citus) return [`public.enter_audit_actor(${actor}, ${token}, ${context})`];
  return [
    `set_config('app.actor', ${actor}, true)`,
    `set_config('app.actor_token', ${token}, true)`,
    `set_config('app.audit_context', ${context}, true)`,
  ];
}

/** Who acts in a write scope, and the caller's context, as the entry statement sets them. */
export interface ScopeAudit {
  /** `<kind>:<id>` (audit/actor.ts), or '' for the database's default. */
  actor: string;
  /** JSON text, or ''. */
  context: string;
}

const NO_AUDIT: ScopeAudit = Object.freeze({ actor: '', context: '' });

/** The parameters of the entry statement for organization `org` (`audit` for a write scope). */
function entryParams(org: string, entry: ScopeEntry, audit?: ScopeAudit): unknown[] {
  const { expiresAt, proof, token } = entry.signer.sign(org);
  const params = entry.citus ? [org, expiresAt, proof, ...entry.limits] : [org, String(expiresAt), token, ...entry.limits];
  if (audit === undefined) return params;
  const actor = audit.actor || entry.operator;
  return [...params, actor, actor === '' ? '' : entry.signer.signActor(org, expiresAt, actor), audit.context];
}

/**
 * Read committed and read-write whatever the session's defaults say (a leaked tenant login can
 * set default_transaction_read_only or a stricter isolation level for its role).
 */
const BEGIN: PipelinedStatement = { sql: 'begin isolation level read committed read write', prepare: true, rows: false };
const BEGIN_READ: PipelinedStatement = { sql: 'begin isolation level read committed', prepare: true, rows: false };
const COMMIT: PipelinedStatement = { sql: 'commit', prepare: true, rows: false };

/** What opens a withOrg transaction, sent ahead of its first statement. */
function beginScope(org: string, entry: ScopeEntry, audit: ScopeAudit): PipelinedStatement[] {
  return [BEGIN, { sql: entry.enterReadWrite, params: entryParams(org, entry, audit), prepare: true, rows: false }];
}

/** A missing id is TENANT_SCOPE_REQUIRED; one given but not a UUID (the empty string too) INVALID_INPUT. */
/** `work` within organization `org`'s share of the pool (`org` validated, so lower case), where the store has one. */
function withinShare<T>(entry: ScopeEntry, org: string, work: () => Promise<T>): Promise<T> {
  return entry.share ? entry.share.run(org, work) : work();
}

function validOrgId(orgId: string): string {
  if (orgId === undefined || orgId === null) {
    throw new StoreError('TENANT_SCOPE_REQUIRED', 'a tenant scope needs the id of an organization', { field: 'orgId' });
  }
  return parseInput(uuid, orgId, 'orgId');
}

/** The database's errors as StoreErrors; anything else (a callback's own error) as it is. */
function asStoreError(error: unknown): unknown {
  return databaseErrorFields(error) ? toStoreError(error) : error;
}

/**
 * The scope's view of its connection. The transaction begins with the first statement, in the
 * same round trip. The view refuses to be used once the scope has ended (a scope kept past its
 * callback would otherwise run statements on a connection that went back to the pool), and it
 * remembers whether the transaction is aborted: a statement failed and nothing succeeded since
 * (only a ROLLBACK TO SAVEPOINT can succeed in an aborted transaction).
 */
function scopedConnection(session: Session, org: string, entry: ScopeEntry, sqlText: boolean, audit: ScopeAudit) {
  let open = true;
  let begun = false;
  let aborted = false;
  const guarded = async <T>(statement: (first: boolean) => Promise<T>): Promise<T> => {
    if (!open) {
      throw new StoreError('TENANT_SCOPE_REQUIRED', 'this tenant scope has ended; use the scope only inside its withOrg callback', {
        reason: 'scope_ended',
      });
    }
    // Decided before any await, so that statements issued together still begin only once.
    const first = !begun;
    begun = true;
    try {
      const result = await statement(first);
      aborted = false;
      return result;
    } catch (error) {
      aborted = true;
      throw error;
    }
  };
  const connection: Queryable = {
    query: <Row>(sql: string, params?: readonly unknown[], options?: QueryOptions) =>
      guarded(async (first) => {
        if (!first) return session.query<Row>(sql, params, options);
        const results = await session.pipeline([...beginScope(org, entry, audit), { sql, params, prepare: options?.prepare ?? false }]);
        return results.at(-1) as QueryResult<Row>;
      }),
    // Scripts are SQL text: no repository sends one, and only a trusted scope runs one.
    exec: (sql) =>
      sqlText
        ? guarded(async (first) => {
            if (first) await session.pipeline(beginScope(org, entry, audit));
            await session.exec(sql);
          })
        : Promise.reject(new StoreError('FORBIDDEN', 'a tenant scope runs no SQL scripts', { reason: 'query_not_allowed' })),
  };
  return {
    connection,
    begun: () => begun,
    aborted: () => aborted,
    end: () => {
      open = false;
    },
  };
}

/**
 * Gives the connection back as it was found, in the same round trip as COMMIT or ROLLBACK,
 * whatever the scope did: session settings (RESET ALL; the role apart, which RESET ALL leaves),
 * listeners, and session advisory locks. The store's statements set nothing beyond the
 * transaction and tx.kysely runs only checked trees, so this is the second layer: a route out
 * that nobody has found yet still ends with its scope. Not DISCARD ALL: it would also drop the
 * store's own prepared statements, which every scope would then prepare again.
 *
 * Not on the embedded database's advisory locks: its one connection is also the owner's, whose
 * migration runner holds one.
 */
const RESET_SESSION = {
  server: 'reset all; reset role; unlisten *; select pg_catalog.pg_advisory_unlock_all();',
  pglite: 'reset all; reset role; unlisten *;',
};

/**
 * Runs `work` in one transaction scoped to organization `orgId`; commits when it resolves,
 * rolls back when it throws. Errors come out as StoreErrors.
 *
 * @example
 * const users = await withOrg(db, orgId, (tx) => tx.users.list({ role: 'admin' }));
 */
export function withOrg<T>(
  db: Database,
  orgId: string,
  work: (scope: TenantScope) => Promise<T>,
  entry: ScopeEntry,
  call: CallOptions = {},
  audit: AuditRequest = {},
): Promise<T> {
  return runScope(db, orgId, (org, connection) => new TenantScope(org, connection), work, entry, false, call, audit);
}

/** Who acts and from where, as a caller handed them in (withOrgOptions): checked against the organization by the scope. */
export interface AuditRequest {
  actor?: unknown;
  context?: unknown;
}

/** The scope's actor and context, parsed (audit/actor.ts), for organization `org`. */
function scopeAudit(org: string, request: AuditRequest): ScopeAudit {
  if (request.actor === undefined && request.context === undefined) return NO_AUDIT;
  return {
    actor: request.actor === undefined ? '' : actorText(request.actor, org),
    context: request.context === undefined ? '' : contextJson(request.context),
  };
}

/** A tenant scope that also runs SQL text: for trusted code only, see withOrgTrustedSql. */
export class TrustedSqlScope extends TenantScope {
  constructor(
    orgId: string,
    private readonly sqlConnection: Queryable,
  ) {
    super(orgId, sqlConnection);
  }

  /** SQL text as app_tenant in this scope: row-level security applies, nothing else guards it. */
  query<Row = Record<string, unknown>>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<Row>> {
    return run<Row>(this.sqlConnection, sql, params, { prepare: false });
  }
}

/**
 * withOrg with SQL text in the scope, for trusted operator code and the tests that play an
 * injected query: not part of the public API. SQL text can leave the scope (SET ROLE on the
 * embedded database, set_config of app.org_id) and can set session state; the connection is
 * reset when the scope ends, but what the text does inside is only as safe as its author.
 */
export function withOrgTrustedSql<T>(
  db: Database,
  orgId: string,
  work: (scope: TrustedSqlScope) => Promise<T>,
  entry: ScopeEntry,
  audit: AuditRequest = {},
): Promise<T> {
  return runScope(db, orgId, (org, connection) => new TrustedSqlScope(org, connection), work, entry, true, {}, audit);
}

async function runScope<Scope extends TenantScope, T>(
  db: Database,
  orgId: string,
  makeScope: (org: string, connection: Queryable) => Scope,
  work: (scope: Scope) => Promise<T>,
  entry: ScopeEntry,
  sqlText: boolean,
  call: CallOptions = {},
  request: AuditRequest = {},
): Promise<T> {
  const org = validOrgId(orgId);
  const audit = scopeAudit(org, request);
  const reset = RESET_SESSION[db.kind === 'pglite' ? 'pglite' : 'server'];
  return withinShare(entry, org, () =>
    db.withSession(async (session) => {
      const scoped = scopedConnection(session, org, entry, sqlText, audit);
      try {
        const result = await work(makeScope(org, scoped.connection));
        if (scoped.aborted()) {
          // PostgreSQL would turn this COMMIT into a ROLLBACK without a word: say so instead.
          throw new StoreError(
            'TRANSACTION_ABORTED',
            'a statement in this withOrg failed and the callback went on; nothing was committed',
            {
              reason: 'failed_statement_swallowed',
            },
          );
        }
        if (scoped.begun()) await commit(session, reset);
        return result;
      } catch (error) {
        // A rollback that fails means a lost connection: db.withSession discards it.
        if (scoped.begun()) await session.exec(`rollback; ${reset}`).catch(() => undefined);
        // The callback's own errors pass through as they are; the database's become StoreErrors.
        throw asStoreError(error);
      } finally {
        scoped.end();
      }
    }, sessionOptions(call)),
  );
}

/**
 * COMMIT, and the one failure whose outcome nobody can know: a connection lost while COMMIT was
 * on its way. The server may have committed before it went, or not; the caller must check
 * before doing the work again.
 */
async function commit(session: Session, reset: string): Promise<void> {
  try {
    await session.exec(`commit; ${reset}`);
  } catch (error) {
    if (!isStoreError(error, 'CONNECTION_LOST')) throw error;
    throw new StoreError(
      'CONNECTION_LOST',
      'the connection to the database was lost while committing: the transaction may or may not have been committed; check before doing it again',
      { reason: 'commit_outcome_unknown' },
      { cause: error },
    );
  }
}

/** The read methods of a tenant scope: what readOrg() offers. */
export interface TenantReads {
  readonly orgId: string;
  readonly users: Pick<UsersRepository, 'get' | 'getByEmail' | 'list'>;
  readonly workflows: Pick<WorkflowStatesRepository, 'get' | 'list'>;
  readonly tasks: Pick<TaskStatesRepository, 'get' | 'list' | 'children'>;
  readonly schedules: Pick<SchedulesRepository, 'get' | 'list'>;
  readonly apiKeys: Pick<ApiKeysRepository, 'get' | 'list'>;
  readonly audit: Pick<AuditLog, 'list'>;
}

/**
 * Reads of organization `orgId`, each in its own read-only transaction sent in one round trip
 * (entering the scope and the statement, as one pipeline), with the same isolation as withOrg:
 * the role and row-level security. For a single read this halves the cost of withOrg; reads
 * that must see one snapshot together, and every write, belong in withOrg.
 *
 * @example
 * const page = await readOrg(db, orgId).workflows.list({ limit: 50 });
 */
export function readOrg(db: Database, orgId: string, entry: ScopeEntry, call: CallOptions = {}, hooks?: ObservabilityOptions): TenantReads {
  const org = validOrgId(orgId);
  return new TenantScope(org, new ReadOnlyStatementRunner(db, org, entry, sessionOptions(call), hooks));
}

/** A call's deadline, for its session: the pool's default where the call names none. */
function sessionOptions(call: CallOptions): SessionOptions | undefined {
  return call.deadlineMs === undefined ? undefined : { deadlineMs: call.deadlineMs };
}

/** readOrg()'s connection: each statement a read-only pipeline of its own, on any pooled connection. */
class ReadOnlyStatementRunner implements Queryable {
  constructor(
    private readonly db: Database,
    private readonly org: string,
    private readonly entry: ScopeEntry,
    private readonly session: SessionOptions | undefined,
    private readonly hooks: ObservabilityOptions | undefined,
  ) {}

  query<Row>(sql: string, params?: readonly unknown[], options?: QueryOptions): Promise<QueryResult<Row>> {
    const { citus } = this.entry;
    const enter: PipelinedStatement = {
      sql: this.entry.enterReadOnly,
      params: entryParams(this.org, this.entry),
      prepare: true,
      rows: false,
    };
    const read: PipelinedStatement = { sql, params, prepare: options?.prepare ?? false };
    // Without BEGIN the pipeline is one transaction by itself, and the settings end with it. On
    // Citus, a transaction block: Citus sends the scope's SET LOCALs to the workers only in one
    // (a pipeline without BEGIN is not, and the workers would see no organization).
    const statements = citus ? [BEGIN_READ, enter, read, COMMIT] : [enter, read];
    const readIndex = statements.indexOf(read);
    const run = () =>
      withinShare(this.entry, this.org, () => this.db.withSession((session) => session.pipeline(statements), this.session)).then(
        (results) => results[readIndex] as QueryResult<Row>,
      );
    return this.hooks ? observed(this.hooks, 'readOrg', { 'engine_store.org_id': this.org }, run) : run();
  }

  exec(): Promise<void> {
    return Promise.reject(new StoreError('FORBIDDEN', 'readOrg only reads; change data in withOrg', { reason: 'read_only' }));
  }
}
