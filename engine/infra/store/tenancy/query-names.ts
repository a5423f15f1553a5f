/**
 * The names a tenant query may use (`tx.kysely`): tables, functions, data types, operators and
 * the few keywords Kysely writes as node fields. Every string of a query tree that the compiler
 * writes into the SQL text as it is (not quoted) is checked against one of these lists by the
 * schema in query-tree.ts; identifiers are quoted by the compiler and need no list.
 */
import { OPERATORS } from 'kysely';

/** The tables a tenant scope may read and write: its organization's rows only (row-level security and query-routing.ts). */
export const TABLES: ReadonlySet<string> = new Set([
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
export const FUNCTIONS: ReadonlySet<string> = new Set([
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
export const DATA_TYPES: ReadonlySet<string> = new Set([
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

/** Kysely's operators (`=`, `in`, `like`, `is not`, `exists`, ...): words and symbols, no SQL beyond them. */
export const OPERATOR_NAMES: ReadonlySet<string> = new Set(OPERATORS);

/**
 * Joins whose organization filter binds every row of the joined tenant table: an inner or left
 * join takes it in ON (a left join keeps its outer rows, which are the query's own), a cross join
 * in WHERE. RIGHT and FULL joins keep the joined table's rows that fail ON, and a lateral join
 * may reach what the filter does not see: refused.
 */
export const JOIN_TYPES: ReadonlySet<string> = new Set(['InnerJoin', 'LeftJoin', 'CrossJoin']);

export const SELECT_MODIFIERS: ReadonlySet<string> = new Set([
  'ForUpdate',
  'ForNoKeyUpdate',
  'ForShare',
  'ForKeyShare',
  'NoWait',
  'SkipLocked',
  'Distinct',
]);

export const SET_OPERATORS: ReadonlySet<string> = new Set(['union', 'intersect', 'except']);

export const NULLS_ORDER: ReadonlySet<string> = new Set(['first', 'last']);

/** RawNodes Kysely itself makes: an order direction, and a join condition that is always true. */
export const ORDER_DIRECTIONS: ReadonlySet<string> = new Set(['asc', 'desc']);
export const TRUE_CONDITION: ReadonlySet<string> = new Set(['true']);
