/**
 * The rebuild of tenant query trees (engine/infra/store/tenancy/query-tree.ts), without a
 * database: what the builder makes passes and compiles to the same SQL; the schema covers every
 * field Kysely's transformer writes; and everything that is not plain data of the allowed shapes
 * is FORBIDDEN. The attacks through a real scope are in tenant-boundary.test.ts.
 */
import { OperationNodeTransformer, sql, type OperationNode, type RootOperationNode } from 'kysely';
import { describe, expect, it } from 'vitest';
import { StoreError } from 'engine-store';
import { parseTenantQuery, shapeFields } from '../../engine/infra/store/tenancy/query-tree.ts';
import { compiler, expectPlain, offline as db, tenantSql } from '../support/query-trees.ts';

const ORG = '0190a0d4-0000-7000-8000-000000000001';

function expectRefused(tree: unknown): void {
  let error: unknown;
  try {
    parseTenantQuery(tree);
  } catch (caught) {
    error = caught;
  }
  expect(error).toBeInstanceOf(StoreError);
  expect(error).toMatchObject({ code: 'FORBIDDEN', details: { reason: 'query_not_allowed' } });
}

const table = (name: string) => ({
  kind: 'TableNode',
  table: { kind: 'SchemableIdentifierNode', identifier: { kind: 'IdentifierNode', name } },
});
const selectFrom = (parts: Record<string, unknown> = {}) => ({
  kind: 'SelectQueryNode',
  from: { kind: 'FromNode', froms: [table('workflow_states')] },
  ...parts,
});
const selecting = (selection: unknown) => selectFrom({ selections: [{ kind: 'SelectionNode', selection }] });
const value = (v: unknown) => ({ kind: 'ValueNode', value: v });

/** Queries as tenant code writes them: every construct the schema allows. */
const builderQueries: [string, { toOperationNode(): OperationNode }][] = [
  [
    'select with where, order, limit, offset',
    db.selectFrom('workflow_states').selectAll().where('status', '=', 'running').orderBy('created_at', 'desc').limit(10).offset(5),
  ],
  [
    'joins, aggregates, group by, having',
    db
      .selectFrom('workflow_states as w')
      .leftJoin('task_states as t', (join) => join.onRef('t.workflow_exec_id', '=', 'w.workflow_exec_id'))
      .innerJoin('schedules as s', (join) => join.onTrue())
      .select((eb) => ['w.workflow_id', eb.fn.countAll<number>().as('n'), eb.fn.max('t.updated_at').as('last')])
      .groupBy('w.workflow_id')
      .having((eb) => eb.fn.countAll(), '>', 1),
  ],
  ['a cross join', db.selectFrom('workflow_states').crossJoin('schedules').select('schedules.id')],
  ['row locks of one table', db.selectFrom('workflow_states as w').select('w.workflow_id').forUpdate('w').skipLocked()],
  ['distinct', db.selectFrom('users').select('role').distinct()],
  [
    'in a list, between, not, exists',
    db
      .selectFrom('users')
      .select('id')
      .where((eb) =>
        eb.and([
          eb('role', 'in', ['admin', 'manager']),
          eb.between('created_at', new Date(0), new Date()),
          eb.not(eb.exists(eb.selectFrom('api_keys').select('id').whereRef('api_keys.user_id', '=', 'users.id'))),
        ]),
      ),
  ],
  [
    'case and cast',
    db
      .selectFrom('users')
      .select((eb) => [
        eb.case().when('role', '=', 'admin').then(eb.lit(1)).else(eb.lit(0)).end().as('admin'),
        eb.cast<string>('id', 'text').as('text_id'),
      ]),
  ],
  [
    'a window function',
    db.selectFrom('users').select((eb) =>
      eb.fn
        .agg<number>('row_number')
        .over((over) => over.partitionBy('role').orderBy('created_at'))
        .as('rank'),
    ),
  ],
  ['an aggregate with a filter', db.selectFrom('users').select((eb) => eb.fn.countAll().filterWhere('role', '=', 'admin').as('admins'))],
  ['a union', db.selectFrom('workflow_states').select('workflow_id').union(db.selectFrom('task_states').select('workflow_id'))],
  [
    'a CTE',
    db
      .with('running', (q) => q.selectFrom('workflow_states').select('workflow_exec_id').where('status', '=', 'running'))
      .selectFrom('running')
      .selectAll(),
  ],
  ['a subquery in from', db.selectFrom((eb) => eb.selectFrom('users').select('id').as('u')).select('u.id')],
  ['a minus sign', db.selectFrom('api_keys').select((eb) => eb.neg(eb.ref('rate_limit_per_hour')).as('negative'))],
  ['select without from', db.selectNoFrom((eb) => eb.val(1).as('one'))],
  [
    'insert values, returning',
    db
      .insertInto('workflow_states')
      .values({ workflow_exec_id: ORG, workflow_id: 'w', status: 'running', input: JSON.stringify({ a: 1 }) })
      .returning(['workflow_exec_id']),
  ],
  [
    'insert on conflict do update',
    db
      .insertInto('schedules')
      .values({ workflow_id: 'w', cron_expression: '@daily' })
      .onConflict((oc) => oc.columns(['org_id', 'id']).doUpdateSet((eb) => ({ cron_expression: eb.ref('excluded.cron_expression') }))),
  ],
  [
    'insert on conflict do nothing',
    db
      .insertInto('schedules')
      .values({ workflow_id: 'w', cron_expression: '@daily' })
      .onConflict((oc) => oc.doNothing()),
  ],
  [
    'insert from a select',
    db
      .insertInto('schedules')
      .columns(['workflow_id', 'cron_expression'])
      .expression(db.selectFrom('workflow_states').select(['workflow_id', (eb) => eb.val('@daily').as('cron_expression')])),
  ],
  [
    'update with from',
    db
      .updateTable('task_states as t')
      .from('workflow_states as w')
      .set({ status: 'failed' })
      .whereRef('t.workflow_exec_id', '=', 'w.workflow_exec_id')
      .where('w.status', '=', 'failed'),
  ],
  [
    'update with a default',
    db
      .updateTable('users')
      .set((eb) => ({ email: eb.ref('email') }))
      .where('id', '=', ORG)
      .returningAll(),
  ],
  [
    'delete using',
    db
      .deleteFrom('task_states')
      .using('workflow_states')
      .whereRef('task_states.workflow_exec_id', '=', 'workflow_states.workflow_exec_id')
      .returning('task_states.task_exec_id'),
  ],
  [
    'a data-modifying CTE',
    db
      .with('gone', (q) => q.deleteFrom('schedules').where('enabled', '=', false).returning('id'))
      .selectFrom('gone')
      .selectAll(),
  ],
  [
    'a recursive CTE',
    db
      .withRecursive('tree(id)', (q) =>
        q
          .selectFrom('task_states')
          .select('task_exec_id as id')
          .unionAll((q2) => q2.selectFrom('tree').select('tree.id')),
      )
      .selectFrom('tree')
      .selectAll(),
  ],
];

describe('what the builder makes is rebuilt as it is', () => {
  it.each(builderQueries)('%s: passes, compiles to the same SQL, and is plain data', (_name, query) => {
    const tree = query.toOperationNode();
    const rebuilt = parseTenantQuery(tree);
    expect(compiler.compileQuery(rebuilt, { queryId: 'a' }).sql).toBe(
      compiler.compileQuery(tree as RootOperationNode, { queryId: 'a' }).sql,
    );
    expectPlain(rebuilt);
    expect(parseTenantQuery(rebuilt)).toEqual(rebuilt);
    expect(() => tenantSql(tree)).not.toThrow();
  });

  it('copies parameters: a Date, a Buffer and a JSON object are new plain copies', () => {
    const date = new Date(0);
    const bytes = Buffer.from('abc');
    const json = { a: [1, { b: 'c' }] };
    const rebuilt = parseTenantQuery(
      selecting({ kind: 'FunctionNode', func: 'coalesce', arguments: [value(date), value(bytes), value(json)] }),
    );
    const [{ selection }] = (rebuilt as unknown as { selections: { selection: { arguments: { value: unknown }[] } }[] }).selections as [
      never,
    ];
    const [copiedDate, copiedBytes, copiedJson] = (selection as { arguments: { value: unknown }[] }).arguments.map(
      (argument) => argument.value,
    );
    expect(copiedDate).toEqual(date);
    expect(copiedDate).not.toBe(date);
    expect(copiedBytes).toEqual(bytes);
    expect(copiedBytes).not.toBe(bytes);
    expect(JSON.stringify(copiedJson)).toBe(JSON.stringify(json));
    expectPlain(rebuilt);
  });
});

describe('the schema covers what Kysely reads', () => {
  const transformer = new OperationNodeTransformer();

  it('every field the transformer writes for a kind is in the schema, allowed or absent', () => {
    for (const [name, { kind, fields }] of shapeFields()) {
      const sample = kind === 'RawNode' ? { kind, sqlFragments: [], parameters: [] } : { kind };
      const written = Object.keys(transformer.transformNode(sample as OperationNode)).filter((key) => key !== 'kind');
      expect({ name, missing: written.filter((key) => !fields.includes(key)) }).toEqual({ name, missing: [] });
    }
  });

  it('leaf nodes keep every field of their factories (ValueNode.immediate, OrderByItemNode.nulls, ...)', () => {
    const fieldsOf = (kind: string) => [...shapeFields().values()].filter((shape) => shape.kind === kind).flatMap((shape) => shape.fields);
    expect(fieldsOf('ValueNode')).toEqual(expect.arrayContaining(['value', 'immediate']));
    expect(fieldsOf('PrimitiveValueListNode')).toEqual(['values']);
    expect(fieldsOf('OperatorNode')).toEqual(['operator']);
    expect(fieldsOf('IdentifierNode')).toEqual(['name']);
    expect(fieldsOf('DataTypeNode')).toEqual(['dataType']);
  });
});

describe('anything but plain data of the allowed shapes is FORBIDDEN', () => {
  const fn = (func: string) => ({ kind: 'FunctionNode', func, arguments: [] });
  const cte = (
    name: string,
    body: unknown = { kind: 'SelectQueryNode', selections: [{ kind: 'SelectionNode', selection: value(1) }] },
  ) => ({
    kind: 'WithNode',
    expressions: [
      { kind: 'CommonTableExpressionNode', name: { kind: 'CommonTableExpressionNameNode', table: table(name) }, expression: body },
    ],
  });
  class Node {
    kind = 'FunctionNode';
    func = 'count';
    arguments = [];
  }
  const cycle: Record<string, unknown> = { kind: 'ParensNode' };
  cycle.node = cycle;
  let deep: unknown = value(1);
  for (let i = 0; i < 300; i++) deep = { kind: 'ParensNode', node: deep };

  const refused: [string, unknown][] = [
    [
      'a FunctionNode whose func is inherited',
      selecting(Object.assign(Object.create({ func: 'count' }) as object, { kind: 'FunctionNode', arguments: [] })),
    ],
    ['a node that is a class instance', selecting(new Node())],
    [
      'a getter, even a constant one',
      selecting({
        kind: 'FunctionNode',
        get func() {
          return 'count';
        },
        arguments: [],
      }),
    ],
    [
      'a Proxy whose get lies',
      selecting(new Proxy(fn('set_config'), { get: (target, key) => (key === 'func' ? 'count' : Reflect.get(target, key)) })),
    ],
    [
      'a hidden (non-enumerable) field',
      selecting(Object.defineProperty({ kind: 'FunctionNode', arguments: [] }, 'func', { value: 'count' })),
    ],
    ['a symbol key', selecting({ ...fn('count'), [Symbol('x')]: 1 })],
    ['an extra key', selecting({ ...fn('count'), schema: 'pg_catalog' })],
    ['a field of another dialect', selectFrom({ top: { kind: 'TopNode', expression: 1 } })],
    ['EXPLAIN', selectFrom({ explain: { kind: 'ExplainNode' } })],
    ['a missing required field', selecting({ kind: 'FunctionNode', arguments: [] })],
    ['a string where a node goes', selectFrom({ where: 'true; reset role' })],
    [
      'a node kind out of its place (FROM as a selection)',
      selectFrom({ from: undefined, selections: [{ kind: 'FromNode', froms: [table('workflow_states')] }] }),
    ],
    [
      'an array subclass',
      selectFrom({ selections: Object.setPrototypeOf([{ kind: 'SelectionNode', selection: value(1) }], class extends Array {}.prototype) }),
    ],
    [
      'an array with an extra property',
      selectFrom({ selections: Object.assign([{ kind: 'SelectionNode', selection: value(1) }], { x: 1 }) }),
    ],
    [
      'an array with a hole',
      selectFrom({ selections: Object.assign(new Array<unknown>(2), { 1: { kind: 'SelectionNode', selection: value(1) } }) }),
    ],
    [
      'an array index getter',
      selectFrom({
        selections: Object.defineProperty([], '0', { get: () => ({ kind: 'SelectionNode', selection: value(1) }), enumerable: true }),
      }),
    ],
    ['a cycle', selecting(cycle)],
    ['a tree 300 deep', selecting(deep)],
    [
      'a value with a getter',
      selecting(
        value({
          get a() {
            return 1;
          },
        }),
      ),
    ],
    ['a value of a class', selecting(value(new Map()))],
    ['a value that is a function', selecting(value(() => 1))],
    ['a Date look-alike', selecting(value(Object.create(Date.prototype)))],
    ['a literal that is an object', selecting({ kind: 'ValueNode', value: { a: 1 }, immediate: true })],
    ['a literal with NUL', selecting({ kind: 'ValueNode', value: 'a\0b', immediate: true })],
    [
      'an identifier with NUL',
      selecting({ kind: 'ReferenceNode', column: { kind: 'ColumnNode', column: { kind: 'IdentifierNode', name: 'a\0b' } } }),
    ],
    [
      'an identifier PostgreSQL would truncate',
      selecting({ kind: 'ReferenceNode', column: { kind: 'ColumnNode', column: { kind: 'IdentifierNode', name: 'x'.repeat(64) } } }),
    ],
    [
      'SQL text (RawNode)',
      selectFrom({ where: { kind: 'WhereNode', where: { kind: 'RawNode', sqlFragments: ['true; reset role'], parameters: [] } } }),
    ],
    [
      'two true fragments',
      selectFrom({ where: { kind: 'WhereNode', where: { kind: 'RawNode', sqlFragments: ['true', 'true'], parameters: [] } } }),
    ],
    [
      'a minus sign before a negative literal (--)',
      selecting({
        kind: 'UnaryOperationNode',
        operator: { kind: 'OperatorNode', operator: '-' },
        operand: { kind: 'ValueNode', value: -1, immediate: true },
      }),
    ],
    [
      'a minus sign before a minus sign',
      db
        .selectFrom('api_keys')
        .select((eb) => eb.neg(eb.neg(eb.ref('rate_limit_per_hour'))).as('x'))
        .toOperationNode(),
    ],
    ['a function off the list', selecting(fn('set_config'))],
    [
      'a schema-qualified table',
      selectFrom({
        from: {
          kind: 'FromNode',
          froms: [
            {
              kind: 'TableNode',
              table: {
                kind: 'SchemableIdentifierNode',
                schema: { kind: 'IdentifierNode', name: 'public' },
                identifier: { kind: 'IdentifierNode', name: 'users' },
              },
            },
          ],
        },
      }),
    ],
    [
      'a catalog table aliased to its own name',
      db
        .selectFrom('pg_settings as pg_settings' as 'users')
        .selectAll()
        .toOperationNode(),
    ],
    ['a CTE named like a tenant table', { ...selectFrom(), with: cte('workflow_states') }],
    [
      'a CTE read outside its scope',
      selectFrom({
        from: { kind: 'FromNode', froms: [table('pg_settings')] },
        where: {
          kind: 'WhereNode',
          where: {
            kind: 'UnaryOperationNode',
            operator: { kind: 'OperatorNode', operator: 'exists' },
            operand: { kind: 'SelectQueryNode', with: cte('pg_settings'), from: { kind: 'FromNode', froms: [table('pg_settings')] } },
          },
        },
      }),
    ],
    [
      'a CTE that reads its own name without RECURSIVE (the catalog table)',
      {
        kind: 'SelectQueryNode',
        with: cte('pg_settings', { kind: 'SelectQueryNode', from: { kind: 'FromNode', froms: [table('pg_settings')] } }),
        from: { kind: 'FromNode', froms: [table('pg_settings')] },
      },
    ],
    [
      'an update of a CTE name',
      {
        kind: 'UpdateQueryNode',
        with: cte('pg_settings'),
        table: table('pg_settings'),
        updates: [
          {
            kind: 'ColumnUpdateNode',
            column: { kind: 'ColumnNode', column: { kind: 'IdentifierNode', name: 'setting' } },
            value: value('x'),
          },
        ],
      },
    ],
    ['an insert into a catalog table', { kind: 'InsertQueryNode', into: table('pg_settings') }],
    ['a delete from a CTE name', { kind: 'DeleteQueryNode', with: cte('x'), from: { kind: 'FromNode', froms: [table('x')] } }],
    [
      'a RIGHT JOIN',
      db
        .selectFrom('workflow_states as w')
        .rightJoin('task_states as t', 't.workflow_exec_id', 'w.workflow_exec_id')
        .selectAll()
        .toOperationNode(),
    ],
    [
      'a FULL JOIN',
      db
        .selectFrom('workflow_states as w')
        .fullJoin('task_states as t', 't.workflow_exec_id', 'w.workflow_exec_id')
        .selectAll()
        .toOperationNode(),
    ],
    [
      'a lateral join',
      db
        .selectFrom('workflow_states as w')
        .innerJoinLateral(
          (eb) => eb.selectFrom('task_states').selectAll().as('t'),
          (join) => join.onTrue(),
        )
        .selectAll()
        .toOperationNode(),
    ],
    [
      'a cross join with ON',
      selectFrom({ joins: [{ kind: 'JoinNode', joinType: 'CrossJoin', table: table('users'), on: { kind: 'OnNode', on: value(true) } }] }),
    ],
    ['an inner join without ON', selectFrom({ joins: [{ kind: 'JoinNode', joinType: 'InnerJoin', table: table('users') }] })],
    [
      'sql`...` in the builder',
      db
        .selectFrom('users')
        .select(sql<string>`current_user`.as('u'))
        .toOperationNode(),
    ],
    ['a statement that is not a query', { kind: 'CreateTableNode' }],
    ['no object at all', 'select 1'],
  ];

  it.each(refused)('%s', (_name, tree) => expectRefused(tree));

  it('a polluted Object.prototype reaches neither the rebuilt tree nor the routed one (SchemableIdentifierNode.schema)', () => {
    const query = db.selectFrom('workflow_states').select('org_id').toOperationNode();
    const clean = tenantSql(query);
    const prototype = Object.prototype as Record<string, unknown>;
    try {
      prototype.schema = { kind: 'RawNode', sqlFragments: ["(select set_config('role', 'postgres', true))"], parameters: [] };
      prototype.immediate = true;
      expect(tenantSql(query)).toEqual(clean);
    } finally {
      delete prototype.schema;
      delete prototype.immediate;
    }
    expect(clean.sql).toBe('select "org_id" from "workflow_states" where "workflow_states"."org_id" = $1');
  });
});
