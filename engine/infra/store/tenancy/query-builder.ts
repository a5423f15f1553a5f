/**
 * Custom queries inside a tenant scope: a Kysely query builder bound to the scope's connection,
 * over the tenant tables only (`tx.kysely` in withOrg). It replaces raw SQL in the scope, which
 * let one string leave the scope (`reset role`, `set_config('app.org_id', ...)`, `commit`) or
 * plant state for the next user of the connection (temp tables, prepared statements, locks).
 *
 * What runs is only ever the compilation of a rebuilt operation tree, never SQL text a caller
 * wrote: the tree handed over (by the builder, or as `compiledQuery.query`) is parsed into fresh
 * plain nodes by query-tree.ts, whose schema allows only the tenant tables, listed functions,
 * operators and data types (query-names.ts); the organization filter is added to that tree
 * (query-routing.ts), and only it is compiled. A forged `CompiledQuery` with other SQL text runs
 * its tree's SQL or nothing. Refused: `sql` template fragments (RawNode), names off the lists,
 * EXPLAIN, MERGE, RIGHT, FULL and lateral joins, transactions and savepoints (the scope is the
 * transaction).
 */
import {
  type ColumnType,
  type CompiledQuery,
  type DatabaseConnection,
  type Driver,
  type Generated,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryResult as KyselyResult,
} from 'kysely';
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { run } from '../connection/run.ts';
import { withOrganizationFilter } from './query-routing.ts';
import { parseTenantQuery } from './query-tree.ts';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json = ColumnType<unknown, string | null | undefined, string | null>;
/** Set by the database from the scope: never written by a caller. */
type OrgId = ColumnType<string, never, never>;

/** What workflow and task states both carry: payloads and the database's timestamps. */
interface ExecutionStateColumns {
  input: Json;
  output: Json;
  error: Json;
  usage: Json;
  created_at: Generated<Date>;
  updated_at: ColumnType<Date, never, never>;
}

/** The tables a tenant scope may query, as app_tenant sees them (its organization's rows only). */
export interface TenantTables {
  organizations: {
    id: ColumnType<string, never, never>;
    name: ColumnType<string, never, never>;
    temporal_namespace: ColumnType<string, never, never>;
    status: ColumnType<string, never, never>;
    created_at: ColumnType<Date, never, never>;
    updated_at: ColumnType<Date, never, never>;
    deleted_at: ColumnType<Date | null, never, never>;
  };
  users: {
    org_id: OrgId;
    id: Generated<string>;
    email: string;
    email_lower: ColumnType<string, never, never>;
    role: string;
    status: Generated<string>;
    created_at: Generated<Date>;
    updated_at: ColumnType<Date, never, never>;
    deleted_at: Timestamp | null;
  };
  api_keys: {
    org_id: OrgId;
    id: ColumnType<string, never, never>;
    user_id: ColumnType<string, never, string>;
    prefix: ColumnType<string, never, never>;
    name: ColumnType<string, never, string>;
    expires_at: ColumnType<Date | null, never, Date | string | null>;
    rate_limit_per_hour: ColumnType<number, never, number>;
    status: ColumnType<string, never, string>;
    last_used_at: ColumnType<Date | null, never, never>;
    scopes: ColumnType<string[] | null, never, never>;
    replaced_by: ColumnType<string | null, never, never>;
    created_at: ColumnType<Date, never, never>;
    updated_at: ColumnType<Date, never, never>;
    deleted_at: ColumnType<Date | null, never, Date | string | null>;
  };
  api_key_usage: {
    org_id: OrgId;
    api_key_id: ColumnType<string, never, never>;
    window_start: ColumnType<Date, never, never>;
    request_count: ColumnType<number, never, never>;
  };
  workflow_states: ExecutionStateColumns & {
    org_id: OrgId;
    workflow_exec_id: string;
    workflow_id: string;
    status: string;
  };
  task_states: ExecutionStateColumns & {
    org_id: OrgId;
    task_exec_id: string;
    task_id: string;
    workflow_exec_id: string;
    workflow_id: string;
    component: string;
    status: string;
    execution_type: Generated<string>;
    agent_id: string | null;
    tool_id: string | null;
    action_id: string | null;
    parent_state_id: string | null;
  };
  schedules: {
    org_id: OrgId;
    id: Generated<string>;
    workflow_id: string;
    cron_expression: string;
    timezone: Generated<string>;
    enabled: Generated<boolean>;
    input: Json;
    created_at: Generated<Date>;
    updated_at: ColumnType<Date, never, never>;
    deleted_at: Timestamp | null;
  };
  permissions: { key: ColumnType<string, never, never>; description: ColumnType<string, never, never> };
  role_permissions: { role: ColumnType<string, never, never>; permission: ColumnType<string, never, never> };
}

export type TenantQueryBuilder = Kysely<TenantTables>;

const compiler = new PostgresQueryCompiler();

/** A connection that runs only checked trees, compiled here, on the scope's connection. */
class TenantConnection implements DatabaseConnection {
  constructor(
    private readonly connection: Queryable,
    private readonly orgId: string,
  ) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<KyselyResult<R>> {
    // The caller's tree is read once, here; from then on only rebuilt trees. The routed tree is
    // rebuilt again: the routing makes nodes with Kysely's factories, which leave out fields
    // that the compiler would then read from a (polluted) Object.prototype.
    const root = parseTenantQuery(compiledQuery.query);
    const routed = parseTenantQuery(withOrganizationFilter(root, this.orgId));
    const recompiled = compiler.compileQuery(routed, compiledQuery.queryId);
    const { rows, rowCount } = await run<R>(this.connection, recompiled.sql, recompiled.parameters, { prepare: false });
    return root.kind === 'SelectQueryNode' ? { rows } : { rows, numAffectedRows: BigInt(rowCount) };
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<KyselyResult<R>> {
    throw new StoreError('FORBIDDEN', 'tenant queries do not stream; page with limit and a cursor', { reason: 'query_not_allowed' });
  }
}

function noTransactions(): Promise<never> {
  return Promise.reject(
    new StoreError('FORBIDDEN', 'the tenant scope is the transaction: no BEGIN, COMMIT or savepoint inside it', {
      reason: 'query_not_allowed',
    }),
  );
}

class TenantDriver implements Driver {
  readonly #connection: TenantConnection;

  constructor(connection: Queryable, orgId: string) {
    this.#connection = new TenantConnection(connection, orgId);
  }

  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    return this.#connection;
  }
  beginTransaction = noTransactions;
  commitTransaction = noTransactions;
  rollbackTransaction = noTransactions;
  savepoint = noTransactions;
  rollbackToSavepoint = noTransactions;
  releaseSavepoint = noTransactions;
  async releaseConnection(): Promise<void> {}
  async destroy(): Promise<void> {}
}

/** A query builder over `connection`, the scope of organization `orgId`: see the module comment. */
export function tenantQueryBuilder(connection: Queryable, orgId: string): TenantQueryBuilder {
  return new Kysely<TenantTables>({
    dialect: {
      createAdapter: () => new PostgresAdapter(),
      createDriver: () => new TenantDriver(connection, orgId),
      createIntrospector: (db) => new PostgresIntrospector(db),
      createQueryCompiler: () => compiler,
    },
  });
}
