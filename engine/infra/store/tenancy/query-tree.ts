/**
 * A tenant query's operation tree, parsed rather than validated: whatever object the caller hands
 * over (a Kysely builder's tree, or any object as `compiledQuery.query`) is rebuilt, before
 * anything else reads it, into fresh frozen nodes without a prototype that hold only the fields
 * its kind allows, each of the expected type. The check, the routing and the compiler then read
 * only the rebuilt tree.
 *
 * Why rebuild: a check that reads a node one way (its own enumerable properties) while the
 * compiler reads it another (`node.func`, with inheritance and getters) lets through what the
 * check never saw: a `func` inherited from a prototype, a getter that answers `count` to the check
 * and `set_config` to the compiler, a polluted `Object.prototype.where`. Here each field is read
 * exactly once, through its property descriptor (data properties only), so a getter, a Proxy or a
 * prototype cannot answer twice; and a rebuilt node has no prototype, so a field it lacks reads as
 * undefined in the compiler too, whatever `Object.prototype` holds then.
 *
 * SHAPES below is the whole language a tenant query may use: node shape -> field -> type. A
 * shape is a node kind in one role (a TableNode that a query reads, writes, names as a CTE, or
 * only names as a qualifier); its fields are every field Kysely's OperationNodeTransformer writes
 * for that kind (a superset of what PostgresQueryCompiler reads), each either allowed with a
 * type or `absent`. Anything else is FORBIDDEN: another kind or shape in that place, an extra
 * key, a symbol key, an accessor, a prototype other than Object.prototype or null
 * (Array.prototype for arrays), a cycle, an absurd depth or size.
 */
import type { RootOperationNode } from 'kysely';
import { StoreError } from '../errors.ts';
import {
  DATA_TYPES,
  FUNCTIONS,
  JOIN_TYPES,
  NULLS_ORDER,
  OPERATOR_NAMES,
  ORDER_DIRECTIONS,
  SELECT_MODIFIERS,
  SET_OPERATORS,
  TABLES,
  TRUE_CONDITION,
} from './query-names.ts';

/** Nesting of nodes and values, and nodes plus values in all: far beyond any query a person writes. */
const MAX_DEPTH = 256;
const MAX_ITEMS = 100_000;
/** PostgreSQL truncates longer identifiers, and two names would then be one. */
const MAX_IDENTIFIER_BYTES = 63;

type Rule = ReadonlySet<string> | ((value: string) => boolean);

interface Field {
  readonly type: 'text' | 'flag' | 'node' | 'nodes' | 'fragment' | 'param' | 'params' | 'absent';
  readonly optional: boolean;
  /** text, fragment: the strings allowed. */
  readonly rule?: Rule;
  /** node, nodes: the shapes allowed (at most one per kind). */
  readonly shapes?: readonly string[];
}

interface Shape {
  readonly kind: string;
  readonly fields: Readonly<Record<string, Field>>;
  /** Names a query defines for the rest of it: its CTEs, visible where PostgreSQL sees them. */
  readonly scope?: 'query' | 'with' | 'cte';
  /** A condition across fields or on the query's names; returns what is refused, if anything. */
  readonly check?: (node: Rebuilt, walk: Walk) => string | undefined;
}

/** A rebuilt node: no prototype, frozen. */
type Rebuilt = Readonly<Record<string, unknown>> & { readonly kind: string };

interface Walk {
  /** CTE names visible at this point of the tree, innermost last. */
  ctes: string[];
  /** Whether the WITH being read is WITH RECURSIVE (its CTEs see themselves). */
  recursive: boolean;
  items: number;
  /** The objects from the root to here: one seen again is a cycle. */
  path: Set<object>;
}

/** An object without prototype, frozen: nothing read from it can come from elsewhere. */
function plain<T extends object>(value: T): Readonly<T> {
  return Object.freeze(Object.assign(Object.create(null) as T, value));
}

const text = (rule: Rule): Field => plain({ type: 'text', optional: false, rule });
const node = (...shapes: string[]): Field => plain({ type: 'node', optional: false, shapes });
const nodes = (...shapes: string[]): Field => plain({ type: 'nodes', optional: false, shapes });
const optional = (field: Field): Field => plain({ ...field, optional: true });
/** A boolean; absent means false. */
const flag: Field = plain({ type: 'flag', optional: true });
/** An array of exactly one of these strings (Kysely's own RawNodes). */
const fragment = (rule: ReadonlySet<string>): Field => plain({ type: 'fragment', optional: false, rule });
/** A parameter (ValueNode.value): plain data, copied. */
const param: Field = plain({ type: 'param', optional: true });
const params: Field = plain({ type: 'params', optional: false });
/** A field Kysely has for this kind (other dialects, EXPLAIN, ...) that a tenant query may not set. */
const absent: Field = plain({ type: 'absent', optional: true });

const identifier = (name: string): boolean => !name.includes('\0') && Buffer.byteLength(name) <= MAX_IDENTIFIER_BYTES;

/** Where an expression may stand. Structural nodes (FROM, WHERE, JOIN, ...) never: they have fixed places. */
const EXPRESSION = [
  'ReferenceNode',
  'ColumnNode',
  'Qualifier',
  'ValueNode',
  'PrimitiveValueListNode',
  'ValueListNode',
  'TupleNode',
  'BinaryOperationNode',
  'UnaryOperationNode',
  'AndNode',
  'OrNode',
  'ParensNode',
  'FunctionNode',
  'AggregateFunctionNode',
  'CaseNode',
  'CastNode',
  'SelectQueryNode',
  'True',
];
const expression = (...more: string[]): Field => node(...EXPRESSION, ...more);
const expressions = (...more: string[]): Field => nodes(...EXPRESSION, ...more);
/** What a query reads from: a tenant table or a CTE in scope, or an aliased one or subquery. */
const RELATION = ['Table', 'RelationAlias'];
const QUERIES = ['SelectQueryNode', 'InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode'];

/** The name of a rebuilt TableNode (its SchemableIdentifierNode never has a schema). */
function tableName(table: Rebuilt): string {
  return ((table.table as Rebuilt).identifier as Rebuilt).name as string;
}

const SHAPES: Readonly<Record<string, Shape>> = plain<Record<string, Shape>>({
  // Statements. `with` comes first: its CTEs are in scope for the rest of the statement.
  SelectQueryNode: {
    kind: 'SelectQueryNode',
    scope: 'query',
    fields: {
      with: optional(node('WithNode')),
      selections: optional(nodes('SelectionNode')),
      distinctOn: optional(expressions()),
      from: optional(node('FromNode')),
      joins: optional(nodes('JoinNode')),
      where: optional(node('WhereNode')),
      groupBy: optional(node('GroupByNode')),
      having: optional(node('HavingNode')),
      setOperations: optional(nodes('SetOperationNode')),
      orderBy: optional(node('OrderByNode')),
      limit: optional(node('LimitNode')),
      offset: optional(node('OffsetNode')),
      frontModifiers: optional(nodes('SelectModifierNode')),
      endModifiers: optional(nodes('SelectModifierNode')),
      explain: absent,
      fetch: absent,
      top: absent,
    },
  },
  InsertQueryNode: {
    kind: 'InsertQueryNode',
    scope: 'query',
    fields: {
      with: optional(node('WithNode')),
      into: node('TargetTable'),
      columns: optional(nodes('ColumnNode')),
      values: optional(node('ValuesNode', 'SelectQueryNode')),
      defaultValues: flag,
      onConflict: optional(node('OnConflictNode')),
      returning: optional(node('ReturningNode')),
      onDuplicateKey: absent,
      endModifiers: absent,
      ignore: absent,
      orAction: absent,
      replace: absent,
      explain: absent,
      top: absent,
      output: absent,
    },
  },
  UpdateQueryNode: {
    kind: 'UpdateQueryNode',
    scope: 'query',
    fields: {
      with: optional(node('WithNode')),
      table: node('TargetTable', 'TargetAlias'),
      updates: nodes('ColumnUpdateNode'),
      from: optional(node('FromNode')),
      joins: optional(nodes('JoinNode')),
      where: optional(node('WhereNode')),
      returning: optional(node('ReturningNode')),
      endModifiers: absent,
      explain: absent,
      limit: absent,
      top: absent,
      output: absent,
      orderBy: absent,
    },
  },
  DeleteQueryNode: {
    kind: 'DeleteQueryNode',
    scope: 'query',
    fields: {
      with: optional(node('WithNode')),
      from: node('TargetFrom'),
      using: optional(node('UsingNode')),
      joins: optional(nodes('JoinNode')),
      where: optional(node('WhereNode')),
      returning: optional(node('ReturningNode')),
      endModifiers: absent,
      orderBy: absent,
      limit: absent,
      explain: absent,
      top: absent,
      output: absent,
    },
  },

  // CTEs: a name that is no tenant table's, visible after its definition (and in it, WITH RECURSIVE).
  WithNode: { kind: 'WithNode', scope: 'with', fields: { recursive: flag, expressions: nodes('CommonTableExpressionNode') } },
  CommonTableExpressionNode: {
    kind: 'CommonTableExpressionNode',
    scope: 'cte',
    fields: { name: node('CommonTableExpressionNameNode'), materialized: flag, expression: node(...QUERIES) },
  },
  CommonTableExpressionNameNode: {
    kind: 'CommonTableExpressionNameNode',
    fields: { table: node('CteTable'), columns: optional(nodes('ColumnNode')) },
  },

  // Tables, by role. A name is an unqualified identifier: no schema, ever.
  /** A table a query reads: a tenant table, or a CTE in scope. An alias never makes a name acceptable. */
  Table: {
    kind: 'TableNode',
    fields: { table: node('SchemableIdentifierNode') },
    check: (table, walk) => {
      const name = tableName(table);
      return TABLES.has(name) || walk.ctes.includes(name) ? undefined : `the table ${JSON.stringify(name)}`;
    },
  },
  /** The table an INSERT, UPDATE or DELETE writes: PostgreSQL never takes a CTE there, so a tenant table only. */
  TargetTable: {
    kind: 'TableNode',
    fields: { table: node('SchemableIdentifierNode') },
    check: (table) => (TABLES.has(tableName(table)) ? undefined : `a write to ${JSON.stringify(tableName(table))}`),
  },
  /** A CTE's own name: never a tenant table's, which it would hide from the organization filter. */
  CteTable: {
    kind: 'TableNode',
    fields: { table: node('SchemableIdentifierNode') },
    check: (table) => (TABLES.has(tableName(table)) ? `a CTE named like the table ${tableName(table)}` : undefined),
  },
  /** A name that qualifies a column (`w.org_id`, `for update of w`): reads no relation by itself. */
  Qualifier: { kind: 'TableNode', fields: { table: node('SchemableIdentifierNode') } },
  SchemableIdentifierNode: { kind: 'SchemableIdentifierNode', fields: { schema: absent, identifier: node('IdentifierNode') } },
  IdentifierNode: { kind: 'IdentifierNode', fields: { name: text(identifier) } },
  RelationAlias: { kind: 'AliasNode', fields: { node: node('Table', 'SelectQueryNode'), alias: node('IdentifierNode') } },
  TargetAlias: { kind: 'AliasNode', fields: { node: node('TargetTable'), alias: node('IdentifierNode') } },
  TargetFrom: { kind: 'FromNode', fields: { froms: nodes('TargetTable', 'TargetAlias') } },

  // Clauses: each in its one place.
  FromNode: { kind: 'FromNode', fields: { froms: nodes(...RELATION) } },
  JoinNode: {
    kind: 'JoinNode',
    fields: { joinType: text(JOIN_TYPES), table: node(...RELATION), on: optional(node('OnNode')) },
    check: (join) => ((join.joinType === 'CrossJoin') === (join.on === undefined) ? undefined : 'a join whose ON does not fit its kind'),
  },
  OnNode: { kind: 'OnNode', fields: { on: expression() } },
  UsingNode: { kind: 'UsingNode', fields: { tables: nodes(...RELATION) } },
  WhereNode: { kind: 'WhereNode', fields: { where: expression() } },
  HavingNode: { kind: 'HavingNode', fields: { having: expression() } },
  SelectionNode: { kind: 'SelectionNode', fields: { selection: expression('SelectAllNode', 'ExpressionAlias') } },
  ExpressionAlias: { kind: 'AliasNode', fields: { node: expression(), alias: node('IdentifierNode') } },
  SelectAllNode: { kind: 'SelectAllNode', fields: {} },
  GroupByNode: { kind: 'GroupByNode', fields: { items: nodes('GroupByItemNode') } },
  GroupByItemNode: { kind: 'GroupByItemNode', fields: { groupBy: expression() } },
  OrderByNode: { kind: 'OrderByNode', fields: { items: nodes('OrderByItemNode') } },
  OrderByItemNode: {
    kind: 'OrderByItemNode',
    fields: { orderBy: expression(), direction: optional(node('Direction')), nulls: optional(text(NULLS_ORDER)), collation: absent },
  },
  Direction: { kind: 'RawNode', fields: { sqlFragments: fragment(ORDER_DIRECTIONS), parameters: nodes() } },
  LimitNode: { kind: 'LimitNode', fields: { limit: expression() } },
  OffsetNode: { kind: 'OffsetNode', fields: { offset: expression() } },
  SelectModifierNode: {
    kind: 'SelectModifierNode',
    fields: { modifier: text(SELECT_MODIFIERS), of: optional(nodes('Qualifier')), rawModifier: absent },
  },
  SetOperationNode: { kind: 'SetOperationNode', fields: { operator: text(SET_OPERATORS), expression: node('SelectQueryNode'), all: flag } },
  ReturningNode: { kind: 'ReturningNode', fields: { selections: nodes('SelectionNode') } },
  ValuesNode: { kind: 'ValuesNode', fields: { values: nodes('ValueListNode', 'PrimitiveValueListNode') } },
  ColumnUpdateNode: { kind: 'ColumnUpdateNode', fields: { column: node('ColumnNode'), value: expression('DefaultInsertValueNode') } },
  DefaultInsertValueNode: { kind: 'DefaultInsertValueNode', fields: {} },
  OnConflictNode: {
    kind: 'OnConflictNode',
    fields: {
      columns: optional(nodes('ColumnNode')),
      constraint: optional(node('IdentifierNode')),
      indexExpression: optional(expression()),
      indexWhere: optional(node('WhereNode')),
      updates: optional(nodes('ColumnUpdateNode')),
      updateWhere: optional(node('WhereNode')),
      doNothing: flag,
    },
  },

  // Expressions.
  ReferenceNode: { kind: 'ReferenceNode', fields: { column: node('ColumnNode', 'SelectAllNode'), table: optional(node('Qualifier')) } },
  ColumnNode: { kind: 'ColumnNode', fields: { column: node('IdentifierNode') } },
  ValueNode: {
    kind: 'ValueNode',
    fields: { value: param, immediate: flag },
    check: (value) =>
      value.immediate !== true || isLiteral(value.value) ? undefined : 'a literal that is no string, number, boolean or date',
  },
  PrimitiveValueListNode: { kind: 'PrimitiveValueListNode', fields: { values: params } },
  ValueListNode: { kind: 'ValueListNode', fields: { values: expressions('DefaultInsertValueNode') } },
  TupleNode: { kind: 'TupleNode', fields: { values: expressions() } },
  BinaryOperationNode: {
    kind: 'BinaryOperationNode',
    fields: { leftOperand: expression(), operator: node('OperatorNode'), rightOperand: expression() },
  },
  UnaryOperationNode: {
    kind: 'UnaryOperationNode',
    fields: { operator: node('OperatorNode'), operand: expression() },
    // The compiler writes a unary minus without a space: `-` before `-1` or `-x` would start a comment (`--`).
    check: (unary) =>
      (unary.operator as Rebuilt).operator === '-' && mayStartWithMinus(unary.operand as Rebuilt)
        ? 'a minus sign before another (-- starts a SQL comment)'
        : undefined,
  },
  OperatorNode: { kind: 'OperatorNode', fields: { operator: text(OPERATOR_NAMES) } },
  AndNode: { kind: 'AndNode', fields: { left: expression(), right: expression() } },
  OrNode: { kind: 'OrNode', fields: { left: expression(), right: expression() } },
  ParensNode: { kind: 'ParensNode', fields: { node: expression() } },
  FunctionNode: { kind: 'FunctionNode', fields: { func: text(FUNCTIONS), arguments: expressions() } },
  AggregateFunctionNode: {
    kind: 'AggregateFunctionNode',
    fields: {
      func: text(FUNCTIONS),
      aggregated: expressions('AllRows'),
      distinct: flag,
      orderBy: optional(node('OrderByNode')),
      withinGroup: optional(node('OrderByNode')),
      filter: optional(node('WhereNode')),
      over: optional(node('OverNode')),
    },
  },
  /** `count(*)` (`eb.fn.countAll()`). */
  AllRows: { kind: 'SelectionNode', fields: { selection: node('SelectAllNode') } },
  OverNode: { kind: 'OverNode', fields: { partitionBy: optional(node('PartitionByNode')), orderBy: optional(node('OrderByNode')) } },
  PartitionByNode: { kind: 'PartitionByNode', fields: { items: nodes('PartitionByItemNode') } },
  PartitionByItemNode: { kind: 'PartitionByItemNode', fields: { partitionBy: expression() } },
  CaseNode: {
    kind: 'CaseNode',
    fields: { value: optional(expression()), when: optional(nodes('WhenNode')), else: optional(expression()), isStatement: flag },
  },
  WhenNode: { kind: 'WhenNode', fields: { condition: expression(), result: optional(expression()) } },
  CastNode: { kind: 'CastNode', fields: { expression: expression(), dataType: node('DataTypeNode') } },
  DataTypeNode: { kind: 'DataTypeNode', fields: { dataType: text(DATA_TYPES) } },
  /** `join(...).onTrue()`: the only SQL text a tenant query carries besides Direction. */
  True: { kind: 'RawNode', fields: { sqlFragments: fragment(TRUE_CONDITION), parameters: nodes() } },
});

// The table is closed: every shape it names exists, and no place allows two shapes of one kind.
for (const [name, shape] of Object.entries(SHAPES)) {
  for (const field of Object.values(shape.fields)) {
    const kinds = (field.shapes ?? []).map((shapeName) => {
      if (!Object.hasOwn(SHAPES, shapeName)) throw new Error(`query-tree: ${name} names an unknown shape ${shapeName}`);
      return SHAPES[shapeName]!.kind;
    });
    if (new Set(kinds).size !== kinds.length) throw new Error(`query-tree: ${name} allows two shapes of one kind in one place`);
  }
}

function refuse(what: string): never {
  throw new StoreError('FORBIDDEN', `a tenant query may not contain ${what}`, { reason: 'query_not_allowed' });
}

/** What Kysely's compiler writes into the SQL text as a literal (`eb.lit`), quoted when a string. */
function isLiteral(value: unknown): boolean {
  if (typeof value === 'string') return !value.includes('\0');
  if (typeof value === 'number') return Number.isFinite(value);
  return (
    typeof value === 'boolean' || typeof value === 'bigint' || value === null || (value instanceof Date && !Number.isNaN(value.getTime()))
  );
}

/** Kinds whose SQL text starts with a quote, a name, `(` or a placeholder: never with `-`. */
const STARTS_WITHOUT_MINUS = new Set([
  'ReferenceNode',
  'ColumnNode',
  'TableNode',
  'ValueNode',
  'ParensNode',
  'FunctionNode',
  'AggregateFunctionNode',
  'CastNode',
  'CaseNode',
  'SelectQueryNode',
]);

function mayStartWithMinus(operand: Rebuilt): boolean {
  if (!STARTS_WITHOUT_MINUS.has(operand.kind)) return true;
  const value = operand.value;
  return (
    operand.kind === 'ValueNode' && operand.immediate === true && (typeof value === 'number' || typeof value === 'bigint') && value < 0
  );
}

/**
 * The own data properties of `value`, each read once through its descriptor. Refused: a
 * primitive, a prototype other than Object.prototype or null (Array.prototype for an array), a
 * symbol key, an accessor, a hidden (non-enumerable) property.
 */
function ownData(value: unknown, what: string): Map<string, unknown> {
  if (typeof value !== 'object' || value === null) refuse(what);
  const isArray = Array.isArray(value);
  const prototype: unknown = Object.getPrototypeOf(value);
  if (isArray ? prototype !== Array.prototype : prototype !== Object.prototype && prototype !== null) refuse(`${what} with a prototype`);
  const fields = new Map<string, unknown>();
  for (const key of Reflect.ownKeys(value)) {
    if (typeof key === 'symbol') refuse(`${what} with a symbol key`);
    const descriptor = Object.getOwnPropertyDescriptor(value, key);
    if (descriptor === undefined || !('value' in descriptor)) refuse(`${what} with an accessor (${key})`);
    if (!descriptor.enumerable && !(isArray && key === 'length')) refuse(`${what} with a hidden property (${key})`);
    fields.set(key, descriptor.value);
  }
  return fields;
}

/** The items of an array, read as `ownData` reads an object: length and indexes, nothing else. */
function items(value: unknown, what: string, walk: Walk): unknown[] {
  if (!Array.isArray(value)) refuse(`${what} that is not a list`);
  const fields = ownData(value, what);
  const length = fields.get('length');
  if (typeof length !== 'number' || length + walk.items > MAX_ITEMS || fields.size !== length + 1) refuse(`${what}: an odd list`);
  return Array.from({ length }, (_, index) => {
    if (!fields.has(String(index))) refuse(`${what}: a list with holes`);
    return fields.get(String(index));
  });
}

function enter(value: object, depth: number, walk: Walk): void {
  if (depth > MAX_DEPTH || ++walk.items > MAX_ITEMS) refuse('a tree this deep or this large');
  if (walk.path.has(value)) refuse('a cycle');
  walk.path.add(value);
}

/**
 * A parameter, copied as plain data: primitives, Date, Buffer and Uint8Array, arrays, and
 * objects of plain JSON (without prototype in the copy). The driver serializes what it gets, so
 * nothing it reads may be a getter or come from a prototype.
 */
function copyParam(value: unknown, depth: number, walk: Walk): unknown {
  if (value === null || ['string', 'number', 'boolean', 'bigint', 'undefined'].includes(typeof value)) return value;
  if (typeof value !== 'object') refuse(`a ${typeof value} as a value`);
  enter(value, depth, walk);
  const prototype: unknown = Object.getPrototypeOf(value);
  let copy: unknown;
  try {
    // Copied through the internal slots: a look-alike (or a Proxy) throws and is refused.
    if (prototype === Date.prototype) copy = new Date(Date.prototype.getTime.call(value));
    else if (prototype === Buffer.prototype) copy = Buffer.from(Uint8Array.prototype.slice.call(value as Uint8Array));
    else if (prototype === Uint8Array.prototype) copy = Uint8Array.prototype.slice.call(value as Uint8Array);
  } catch {
    refuse('a value that is not what it claims to be');
  }
  if (copy === undefined && Array.isArray(value)) {
    copy = Object.freeze(items(value, 'a value', walk).map((item) => copyParam(item, depth + 1, walk)));
  } else if (copy === undefined) {
    const record = Object.create(null) as Record<string, unknown>;
    for (const [key, item] of ownData(value, 'a value')) record[key] = copyParam(item, depth + 1, walk);
    copy = Object.freeze(record);
  }
  walk.path.delete(value);
  return copy;
}

function rebuildField(value: unknown, field: Field, where: string, depth: number, walk: Walk): unknown {
  if (value === undefined && field.type !== 'params') {
    if (field.optional) return undefined;
    refuse(`a ${where} without value`);
  }
  switch (field.type) {
    case 'absent':
      return refuse(`a ${where}`);
    case 'flag':
      return typeof value === 'boolean' ? value : refuse(`a ${where} that is not true or false`);
    case 'text': {
      const rule = field.rule!;
      if (typeof value === 'string' && (typeof rule === 'function' ? rule(value) : rule.has(value))) return value;
      return refuse(`${where} ${JSON.stringify(value)?.slice(0, 100)}`);
    }
    case 'fragment': {
      const [only, ...more] = items(value, where, walk);
      if (typeof only === 'string' && more.length === 0 && (field.rule as ReadonlySet<string>).has(only)) return Object.freeze([only]);
      return refuse('SQL text (sql`...`)');
    }
    case 'node':
      return rebuildNode(value, field.shapes!, depth + 1, walk);
    case 'nodes':
      return Object.freeze(items(value, where, walk).map((item) => rebuildNode(item, field.shapes!, depth + 1, walk)));
    case 'param':
      return copyParam(value, depth + 1, walk);
    case 'params':
      return Object.freeze(items(value, where, walk).map((item) => copyParam(item, depth + 1, walk)));
  }
}

function rebuildNode(value: unknown, shapes: readonly string[], depth: number, walk: Walk): Rebuilt {
  if (typeof value !== 'object' || value === null) refuse('a node that is not an object');
  enter(value, depth, walk);
  const fields = ownData(value, 'a node');
  const kind = fields.get('kind');
  const shape = shapes.map((name) => SHAPES[name]!).find((candidate) => candidate.kind === kind);
  if (shape === undefined) {
    if (kind === 'RawNode') refuse('SQL text (sql`...`)');
    refuse(typeof kind === 'string' ? `a ${kind.slice(0, 60)} here` : 'a node of no kind');
  }
  for (const key of fields.keys()) if (key !== 'kind' && !Object.hasOwn(shape.fields, key)) refuse(`a ${kind}.${key.slice(0, 60)}`);

  const visible = walk.ctes.length;
  const recursive = walk.recursive;
  const rebuilt = Object.create(null) as Record<string, unknown>;
  rebuilt.kind = kind;
  for (const [name, field] of Object.entries(shape.fields)) {
    const child = rebuildField(fields.get(name), field, `${kind}.${name}`, depth, walk);
    if (child !== undefined) rebuilt[name] = child;
    if (shape.scope === 'with' && name === 'recursive') walk.recursive = child === true;
    // WITH RECURSIVE: a CTE sees itself. (A later CTE it names is refused: stricter than PostgreSQL.)
    if (shape.scope === 'cte' && name === 'name' && walk.recursive) walk.ctes.push(cteName(rebuilt));
  }
  if (shape.scope === 'query') walk.ctes.length = visible;
  if (shape.scope === 'with') walk.recursive = recursive;
  if (shape.scope === 'cte' && !walk.recursive) walk.ctes.push(cteName(rebuilt));
  walk.path.delete(value);

  const node = Object.freeze(rebuilt) as Rebuilt;
  const refused = shape.check?.(node, walk);
  if (refused !== undefined) refuse(refused);
  return node;
}

function cteName(cte: Record<string, unknown>): string {
  return tableName((cte.name as Rebuilt).table as Rebuilt);
}

/**
 * `query`, rebuilt as described at the top, or FORBIDDEN. What it returns is the only tree the
 * tenant driver checks, routes and compiles.
 *
 * @example
 * parseTenantQuery(db.selectFrom('users').select('id').toOperationNode()) // a fresh, frozen copy
 * parseTenantQuery(CompiledQuery.raw('reset role').query) // FORBIDDEN: SQL text
 */
export function parseTenantQuery(query: unknown): RootOperationNode {
  const walk: Walk = { ctes: [], recursive: false, items: 0, path: new Set() };
  return rebuildNode(query, QUERIES, 0, walk) as unknown as RootOperationNode;
}

/** The shapes and fields a tenant query may use, for the tests that hold the table to Kysely's transformer. */
export function shapeFields(): ReadonlyMap<string, { kind: string; fields: readonly string[] }> {
  return new Map(Object.entries(SHAPES).map(([name, shape]) => [name, { kind: shape.kind, fields: Object.keys(shape.fields) }]));
}
