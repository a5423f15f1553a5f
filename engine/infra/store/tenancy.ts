/**
 * withOrg(): the only way into an organization's data. One transaction, on one connection, that
 * enters the role app_tenant and sets app.org_id, both LOCAL to the transaction: row-level
 * security then confines every statement to that organization, and nothing of it outlives the
 * transaction on a pooled connection.
 */
import { ApiKeysRepository } from './api-keys.ts';
import type { Database, QueryResult, Queryable, Session } from './db.ts';
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
  readonly users: UsersRepository;
  readonly workflows: WorkflowStatesRepository;
  readonly tasks: TaskStatesRepository;
  readonly schedules: SchedulesRepository;
  readonly apiKeys: ApiKeysRepository;

  constructor(
    readonly orgId: string,
    private readonly connection: Queryable,
  ) {
    this.users = new UsersRepository(connection);
    this.workflows = new WorkflowStatesRepository(connection);
    this.tasks = new TaskStatesRepository(connection);
    this.schedules = new SchedulesRepository(connection);
    this.apiKeys = new ApiKeysRepository(connection);
  }

  /** Raw SQL in the scope, as app_tenant: row-level security applies as to everything else. */
  query<Row = Record<string, unknown>>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<Row>> {
    return run<Row>(this.connection, sql, params, { prepare: false });
  }
}

/**
 * The scope's view of its connection. It refuses to be used once the scope has ended (a scope
 * kept past its callback would otherwise run statements on a connection that went back to the
 * pool), and it remembers whether the transaction is aborted: a statement failed and nothing
 * succeeded since (only a ROLLBACK TO SAVEPOINT can succeed in an aborted transaction).
 */
function scopedConnection(session: Session): { connection: Queryable; aborted(): boolean; end(): void } {
  let open = true;
  let aborted = false;
  const guarded = async <T>(statement: () => Promise<T>): Promise<T> => {
    if (!open) {
      throw new StoreError('TENANT_SCOPE_REQUIRED', 'this tenant scope has ended; use the scope only inside its withOrg callback', { reason: 'scope_ended' });
    }
    try {
      const result = await statement();
      aborted = false;
      return result;
    } catch (error) {
      aborted = true;
      throw error;
    }
  };
  return {
    connection: {
      query: (sql, params, options) => guarded(() => session.query(sql, params, options)),
      exec: (sql) => guarded(() => session.exec(sql)),
    },
    aborted: () => aborted,
    end: () => {
      open = false;
    },
  };
}

/**
 * Ends the transaction and gives the connection back as it was found: whatever raw SQL in the
 * scope set for the whole session (`SET ROLE`, `set_config(..., false)`) must not reach the
 * next user of the pooled connection. In the same round trip as COMMIT or ROLLBACK.
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
  if (orgId === undefined || orgId === null || orgId === '') {
    throw new StoreError('TENANT_SCOPE_REQUIRED', 'withOrg needs the id of an organization', { field: 'orgId' });
  }
  // Validated as a UUID before it is spelled into the statement below: the role change, the
  // setting and BEGIN travel in one round trip, which needs the simple protocol (no parameters).
  const org = parseInput(uuid, orgId, 'orgId');
  return db.withSession(async (session) => {
    const scoped = scopedConnection(session);
    try {
      await session.exec(`begin; set local role app_tenant; select set_config('app.org_id', '${org}', true);`);
      const result = await work(new TenantScope(org, scoped.connection));
      if (scoped.aborted()) {
        // PostgreSQL would turn this COMMIT into a ROLLBACK without a word: say so instead.
        throw new StoreError('TRANSACTION_ABORTED', 'a statement in this withOrg failed and the callback went on; nothing was committed', {
          reason: 'failed_statement_swallowed',
        });
      }
      await session.exec(`commit; ${AND_RESET_SESSION}`);
      return result;
    } catch (error) {
      await session.exec(`rollback; ${AND_RESET_SESSION}`).catch(() => undefined);
      // The callback's own errors pass through as they are; the database's become StoreErrors.
      throw databaseErrorFields(error) ? toStoreError(error) : error;
    } finally {
      scoped.end();
    }
  });
}
