/**
 * Custom queries inside a tenant scope: a Kysely query builder bound to the scope's connection,
 * over the tenant tables only (`tx.kysely` in withOrg). It replaces raw SQL in the scope, which
 * let one string leave the scope (`reset role`, `set_config('app.org_id', ...)`, `commit`) or
 * plant state for the next user of the connection (temp tables, prepared statements, locks).
 *
 * What runs is only ever the compilation of a checked operation tree, never SQL text a caller
 * wrote: every node is checked against an allow-list (query kinds, tables, functions,
 * operators, data types), and a query handed over already compiled is compiled again from its
 * tree, so a forged `CompiledQuery` with other SQL text runs that tree's SQL or nothing.
 * Refused: `sql` template fragments (RawNode), functions and tables off the lists, EXPLAIN,
 * MERGE, transactions and savepoints (the scope is the transaction).
 */
import {
  type ColumnType,
  type CompiledQuery,
  type DatabaseConnection,
  type Driver,
  type Generated,
  Kysely,
  OPERATORS,
  type OperationNode,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryResult as KyselyResult,
  type RootOperationNode,
} from 'kysely';
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { run } from '../connection/run.ts';
import { namesDefinedBy, withOrganizationFilter } from './query-routing.ts';

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

const TABLES = new Set<string>([
  'organizations',
  'users',
  'api_keys',
  'api_key_usage',
  'workflow_states',
  'task_states',
  'schedules',
  'permissions',
  'role_permissions',
]);

/**
 * Functions a query may call: plain computations over its own rows. Nothing that reads or
 * changes settings, sessions, locks, files or the catalog (set_config, pg_advisory_lock,
 * pg_sleep, dblink, lo_*, ...), and no store function that takes part in the scope itself.
 */
const FUNCTIONS = new Set<string>([
  'count',
  'sum',
  'avg',
  'min',
  'max',
  'bool_and',
  'bool_or',
  'every',
  'array_agg',
  'string_agg',
  'json_agg',
  'jsonb_agg',
  'json_object_agg',
  'jsonb_object_agg',
  'coalesce',
  'nullif',
  'greatest',
  'least',
  'lower',
  'upper',
  'length',
  'char_length',
  'btrim',
  'ltrim',
  'rtrim',
  'substr',
  'replace',
  'concat',
  'concat_ws',
  'left',
  'right',
  'starts_with',
  'abs',
  'round',
  'floor',
  'ceil',
  'ceiling',
  'trunc',
  'mod',
  'now',
  'date_trunc',
  'date_part',
  'age',
  'to_jsonb',
  'to_json',
  'jsonb_build_object',
  'json_build_object',
  'jsonb_build_array',
  'json_build_array',
  'jsonb_typeof',
  'jsonb_array_length',
  'jsonb_extract_path',
  'jsonb_extract_path_text',
  'array_length',
  'cardinality',
  'row_number',
  'rank',
  'dense_rank',
  'lag',
  'lead',
  'first_value',
  'last_value',
]);

/** Data types a cast may name. */
const DATA_TYPES = new Set<string>([
  'text',
  'varchar',
  'uuid',
  'integer',
  'int4',
  'bigint',
  'int8',
  'smallint',
  'numeric',
  'real',
  'double precision',
  'boolean',
  'jsonb',
  'json',
  'date',
  'timestamptz',
  'timestamp',
  'interval',
  'text[]',
  'uuid[]',
]);

const OPERATOR_SET = new Set<string>(OPERATORS);

/** RawNodes that Kysely itself makes: order directions and a join without condition. */
const KYSELY_OWN_FRAGMENTS = new Set(['asc', 'desc', 'true']);

/** Node kinds a tenant query may contain; anything else is refused. */
const NODE_KINDS = new Set<string>([
  'SelectQueryNode',
  'InsertQueryNode',
  'UpdateQueryNode',
  'DeleteQueryNode',
  'FromNode',
  'TableNode',
  'SchemableIdentifierNode',
  'IdentifierNode',
  'AliasNode',
  'ColumnNode',
  'ReferenceNode',
  'SelectionNode',
  'SelectAllNode',
  'WhereNode',
  'JoinNode',
  'OnNode',
  'AndNode',
  'OrNode',
  'ParensNode',
  'BinaryOperationNode',
  'UnaryOperationNode',
  'OperatorNode',
  'ValueNode',
  'ValueListNode',
  'PrimitiveValueListNode',
  'TupleNode',
  'ListNode',
  'ValuesNode',
  'ColumnUpdateNode',
  'OrderByNode',
  'OrderByItemNode',
  'GroupByNode',
  'GroupByItemNode',
  'HavingNode',
  'LimitNode',
  'OffsetNode',
  'ReturningNode',
  'OnConflictNode',
  'WithNode',
  'CommonTableExpressionNode',
  'CommonTableExpressionNameNode',
  'FunctionNode',
  'AggregateFunctionNode',
  'CaseNode',
  'WhenNode',
  'CastNode',
  'DataTypeNode',
  'SelectModifierNode',
  'DefaultInsertValueNode',
  'SetOperationNode',
  'OverNode',
  'PartitionByNode',
  'PartitionByItemNode',
  'UsingNode',
  'RawNode',
]);

/** String properties the compiler writes as they are (the rest are escaped or looked up). */
const CHECKED_TEXT: Record<string, (value: string) => boolean> = {
  'FunctionNode.func': (value) => FUNCTIONS.has(value),
  'AggregateFunctionNode.func': (value) => FUNCTIONS.has(value),
  'OperatorNode.operator': (value) => OPERATOR_SET.has(value),
  'DataTypeNode.dataType': (value) => DATA_TYPES.has(value),
  'OrderByItemNode.nulls': (value) => value === 'first' || value === 'last',
  'SetOperationNode.operator': (value) => ['union', 'intersect', 'except'].includes(value),
  'SelectModifierNode.modifier': (value) =>
    ['ForUpdate', 'ForNoKeyUpdate', 'ForShare', 'ForKeyShare', 'NoWait', 'SkipLocked', 'Distinct'].includes(value),
  'JoinNode.joinType': (value) => ['InnerJoin', 'LeftJoin', 'RightJoin', 'FullJoin', 'CrossJoin'].includes(value),
  'IdentifierNode.name': () => true, // quoted and escaped by the compiler
  'ValueNode.value': () => true, // a parameter, or a literal escaped by the compiler
};

function refuse(what: string): never {
  throw new StoreError('FORBIDDEN', `a tenant query may not contain ${what}`, { reason: 'query_not_allowed' });
}

/** Throws FORBIDDEN unless every node of the tree is allowed in a tenant query. */
export function assertTenantQuery(root: OperationNode): void {
  if (!['SelectQueryNode', 'InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode'].includes(root.kind)) {
    refuse(root.kind === 'RawNode' ? 'SQL text' : `a ${root.kind.replace(/Node$/, '')} statement`);
  }
  const { ctes, aliases } = namesDefinedBy(root);
  const defined = new Set([...ctes, ...aliases]);
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) visit(item);
      return;
    }
    if (node === null || typeof node !== 'object') return;
    const record = node as Record<string, unknown>;
    const kind = record.kind;
    if (typeof kind !== 'string' || !NODE_KINDS.has(kind)) refuse(typeof kind === 'string' ? kind : 'an unknown node');
    if (kind === 'RawNode') {
      const fragments = record.sqlFragments as unknown[];
      const parameters = record.parameters as unknown[];
      if (!(
        Array.isArray(fragments) &&
        fragments.length === 1 &&
        KYSELY_OWN_FRAGMENTS.has(String(fragments[0])) &&
        parameters?.length === 0
      )) {
        refuse('SQL text (sql`...`)');
      }
      return;
    }
    if (kind === 'TableNode') {
      const table = record.table as { schema?: { name?: unknown }; identifier?: { name?: unknown } };
      const name = table?.identifier?.name;
      if (table?.schema !== undefined || typeof name !== 'string' || !(TABLES.has(name) || defined.has(name))) {
        refuse(`the table ${typeof name === 'string' ? name : '?'}`);
      }
    }
    for (const [key, value] of Object.entries(record)) {
      if (key === 'kind') continue;
      // Parameters: sent apart from the SQL text (or escaped as literals), whatever they hold.
      if ((kind === 'ValueNode' && key === 'value') || (kind === 'PrimitiveValueListNode' && key === 'values')) continue;
      if (typeof value === 'string') {
        const check = CHECKED_TEXT[`${kind}.${key}`];
        if (!check || !check(value)) refuse(`${kind.replace(/Node$/, '')} ${JSON.stringify(value)}`);
      } else {
        visit(value);
      }
    }
  };
  visit(root);
}

const compiler = new PostgresQueryCompiler();

/** A connection that runs only checked trees, compiled here, on the scope's connection. */
class TenantConnection implements DatabaseConnection {
  constructor(
    private readonly connection: Queryable,
    private readonly orgId: string,
  ) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<KyselyResult<R>> {
    const root = compiledQuery.query as RootOperationNode;
    assertTenantQuery(root);
    const recompiled = compiler.compileQuery(withOrganizationFilter(root, this.orgId), compiledQuery.queryId);
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
