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
    return run<Row>(this.connection, sql, params);
  }
}

/**
 * A connection that refuses to be used once its scope has ended: a scope kept past its
 * callback would otherwise run statements on a connection that went back to the pool.
 */
function scopedConnection(session: Session): { connection: Queryable; end(): void } {
  let open = true;
  const guard = () => {
    if (!open) throw new StoreError('TENANT_SCOPE_REQUIRED', 'this tenant scope has ended; use the scope only inside its withOrg callback', { reason: 'scope_ended' });
  };
  return {
    connection: {
      query: async (sql, params) => {
        guard();
        return session.query(sql, params);
      },
      exec: async (sql) => {
        guard();
        return session.exec(sql);
      },
    },
    end: () => {
      open = false;
    },
  };
}

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
      await session.exec('commit');
      return result;
    } catch (error) {
      await session.exec('rollback').catch(() => undefined);
      // The callback's own errors pass through as they are; the database's become StoreErrors.
      throw databaseErrorFields(error) ? toStoreError(error) : error;
    } finally {
      scoped.end();
    }
  });
}
