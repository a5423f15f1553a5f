/**
 * withOrg() and readOrg(): the only ways into an organization's data. A transaction, on one
 * connection, that enters the role app_tenant and sets app.org_id, both LOCAL to the
 * transaction: row-level security then confines every statement to that organization, and
 * nothing of it outlives the transaction on a pooled connection.
 *
 * Round trips are most of the cost of a short transaction, so entering the scope travels with
 * the scope's first statement (one pipeline, see db.ts), and a readOrg() read is one pipeline
 * by itself: one round trip, as the bare statement would be.
 */
import { ApiKeysRepository } from './api-keys.ts';
import type { Database, PipelinedStatement, QueryOptions, QueryResult, Queryable, Session } from './db.ts';
import { toStoreError } from './database-errors.ts';
import { StoreError, databaseErrorFields } from './errors.ts';
import { run } from './sql.ts';
import { SchedulesRepository } from './schedules.ts';
import { TaskStatesRepository } from './tasks.ts';
import { UsersRepository } from './users.ts';
import { parseInput, uuid } from './validation.ts';
import { WorkflowStatesRepository } from './workflows.ts';

/** What a `withOrg` callback works with; valid only until the callback's promise settles. */
export class TenantScope {
  // Made on first use: most scopes touch one repository, and a read is a hot path.
  #users?: UsersRepository;
  #workflows?: WorkflowStatesRepository;
  #tasks?: TaskStatesRepository;
  #schedules?: SchedulesRepository;
  #apiKeys?: ApiKeysRepository;

  constructor(
    readonly orgId: string,
    private readonly connection: Queryable,
  ) {}

  get users(): UsersRepository {
    return (this.#users ??= new UsersRepository(this.connection));
  }

  get workflows(): WorkflowStatesRepository {
    return (this.#workflows ??= new WorkflowStatesRepository(this.connection));
  }

  get tasks(): TaskStatesRepository {
    return (this.#tasks ??= new TaskStatesRepository(this.connection));
  }

  get schedules(): SchedulesRepository {
    return (this.#schedules ??= new SchedulesRepository(this.connection));
  }

  get apiKeys(): ApiKeysRepository {
    return (this.#apiKeys ??= new ApiKeysRepository(this.connection));
  }

  /** Raw SQL in the scope, as app_tenant: row-level security applies as to everything else. */
  query<Row = Record<string, unknown>>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<Row>> {
    return run<Row>(this.connection, sql, params, { prepare: false });
  }
}

/**
 * The statements that enter organization `org`'s scope: the role and the setting, LOCAL to the
 * transaction (set_config(..., true) is SET LOCAL), and for reads the transaction made read-only
 * so that the database, not only the API, refuses writes there.
 *
 * Generic plans, too: under row-level security the organization is an InitPlan, not a
 * parameter, so a plan made for one call's values gains nothing over the generic one, yet the
 * planner keeps re-planning a keyset page whose values look selective (0.2 ms a call here).
 */
const ENTER_READ_WRITE = `select set_config('role', 'app_tenant', true), set_config('app.org_id', $1, true),
  set_config('plan_cache_mode', 'force_generic_plan', true)`;
const ENTER_READ_ONLY = `${ENTER_READ_WRITE}, set_config('transaction_read_only', 'on', true)`;

/** What opens a withOrg transaction, sent ahead of its first statement. */
function beginScope(org: string): PipelinedStatement[] {
  return [
    { sql: 'begin', prepare: true, rows: false },
    { sql: ENTER_READ_WRITE, params: [org], prepare: true, rows: false },
  ];
}

function validOrgId(orgId: string): string {
  if (orgId === undefined || orgId === null || orgId === '') {
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
function scopedConnection(session: Session, org: string) {
  let open = true;
  let begun = false;
  let aborted = false;
  // Whether SQL other than the store's own prepared statements ran (tx.query): only such SQL
  // can have changed the session (a SET, a set_config(..., false)) and call for a reset.
  let oneOff = false;
  const guarded = async <T>(statement: (first: boolean) => Promise<T>): Promise<T> => {
    if (!open) {
      throw new StoreError('TENANT_SCOPE_REQUIRED', 'this tenant scope has ended; use the scope only inside its withOrg callback', { reason: 'scope_ended' });
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
        if (!options?.prepare) oneOff = true;
        if (!first) return session.query<Row>(sql, params, options);
        const results = await session.pipeline([...beginScope(org), { sql, params, prepare: options?.prepare ?? false }]);
        return results.at(-1) as QueryResult<Row>;
      }),
    exec: (sql) =>
      guarded(async (first) => {
        oneOff = true;
        if (first) await session.pipeline(beginScope(org));
        await session.exec(sql);
      }),
  };
  return {
    connection,
    begun: () => begun,
    ranOneOffSql: () => oneOff,
    aborted: () => aborted,
    end: () => {
      open = false;
    },
  };
}

/**
 * Ends the transaction and gives the connection back as it was found: whatever raw SQL in the
 * scope set for the whole session (`SET ROLE`, `set_config(..., false)`) must not reach the
 * next user of the pooled connection. In the same round trip as COMMIT or ROLLBACK; after a
 * commit only when raw SQL ran (the store's own statements set nothing beyond the transaction).
 */
const AND_RESET_SESSION = 'reset all; reset role;';

/**
 * Runs `work` in one transaction scoped to organization `orgId`; commits when it resolves,
 * rolls back when it throws. Errors come out as StoreErrors.
 *
 * @example
 * const users = await withOrg(db, orgId, (tx) => tx.users.list({ role: 'admin' }));
 */
export async function withOrg<T>(db: Database, orgId: string, work: (scope: TenantScope) => Promise<T>): Promise<T> {
  const org = validOrgId(orgId);
  return db.withSession(async (session) => {
    const scoped = scopedConnection(session, org);
    try {
      const result = await work(new TenantScope(org, scoped.connection));
      if (scoped.aborted()) {
        // PostgreSQL would turn this COMMIT into a ROLLBACK without a word: say so instead.
        throw new StoreError('TRANSACTION_ABORTED', 'a statement in this withOrg failed and the callback went on; nothing was committed', {
          reason: 'failed_statement_swallowed',
        });
      }
      if (scoped.begun()) await session.exec(scoped.ranOneOffSql() ? `commit; ${AND_RESET_SESSION}` : 'commit');
      return result;
    } catch (error) {
      if (scoped.begun()) await session.exec(`rollback; ${AND_RESET_SESSION}`).catch(() => undefined);
      // The callback's own errors pass through as they are; the database's become StoreErrors.
      throw asStoreError(error);
    } finally {
      scoped.end();
    }
  });
}

/** The read methods of a tenant scope: what readOrg() offers. */
export interface TenantReads {
  readonly orgId: string;
  readonly users: Pick<UsersRepository, 'get' | 'getByEmail' | 'list'>;
  readonly workflows: Pick<WorkflowStatesRepository, 'get' | 'list'>;
  readonly tasks: Pick<TaskStatesRepository, 'get' | 'list' | 'children'>;
  readonly schedules: Pick<SchedulesRepository, 'get' | 'list'>;
  readonly apiKeys: Pick<ApiKeysRepository, 'get' | 'list'>;
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
export function readOrg(db: Database, orgId: string): TenantReads {
  const org = validOrgId(orgId);
  return new TenantScope(org, new ReadOnlyScope(db, org));
}

/** readOrg()'s connection: each statement a pipeline of its own, on any pooled connection. */
class ReadOnlyScope implements Queryable {
  constructor(
    private readonly db: Database,
    private readonly org: string,
  ) {}

  query<Row>(sql: string, params?: readonly unknown[], options?: QueryOptions): Promise<QueryResult<Row>> {
    const statements: PipelinedStatement[] = [
      { sql: ENTER_READ_ONLY, params: [this.org], prepare: true, rows: false },
      { sql, params, prepare: options?.prepare ?? false },
    ];
    // No BEGIN: the pipeline is one transaction by itself, and the settings end with it.
    return this.db.withSession((session) => session.pipeline(statements)).then((results) => results[1] as QueryResult<Row>);
  }

  exec(): Promise<void> {
    return Promise.reject(new StoreError('FORBIDDEN', 'readOrg only reads; change data in withOrg', { reason: 'read_only' }));
  }
}
