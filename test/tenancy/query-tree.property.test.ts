/**
 * Random query trees against the tenant driver: Kysely's node kinds, well formed or not (wrong
 * kinds, extra keys, getters, inherited fields, symbol keys, Proxies), with hostile strings
 * (`set_config(...)`, `"; reset role; --`, `pg_settings`, quotes, NUL bytes) in every string
 * field. Each tree is FORBIDDEN, or runs and stays in its organization.
 *
 * Most trees go through the rebuild, routing and compiler alone (no database): an accepted tree
 * compiles, is plain data, and its SQL text outside quotes and parameters carries nothing of the
 * hostile strings. A smaller sample runs in a real scope on every backend, on one connection:
 * A reads no row of B, B's rows are unchanged, and the session (settings, role, advisory locks)
 * is the same before and after.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { CompiledQuery } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, storeOver, StoreError, type Store } from 'engine-store';
import { FUNCTIONS, TABLES } from '../../engine/infra/store/tenancy/query-names.ts';
import { parseTenantQuery } from '../../engine/infra/store/tenancy/query-tree.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { expectPlain, HOSTILE_STRINGS, offline, tenantSql } from '../support/query-trees.ts';

type Tree = Record<string, unknown>;

/** Names a tenant query may not use where the generator puts names: joins, functions, tables, CTEs, types. */
const REFUSED_NAMES = [
  'RightJoin',
  'FullJoin',
  'LateralInnerJoin',
  'set_config',
  'pg_advisory_lock',
  'pg_sleep',
  'pg_roles',
  'workflow_states',
  'regclass',
];

/** Ways to spoil a node; 'none' and the null prototype keep it well formed. */
const MALFORMATIONS = [
  'extra key',
  'inherited field',
  'getter',
  'symbol key',
  'wrong kind',
  'dropped field',
  'proxy',
  'null prototype',
] as const;
type Malformation = (typeof MALFORMATIONS)[number] | 'none';

function malform(node: Tree, how: Malformation, pick: number): object {
  const keys = Object.keys(node).filter((key) => key !== 'kind');
  const key = keys[pick % Math.max(keys.length, 1)];
  switch (how) {
    case 'none':
      return node;
    case 'extra key':
      return { ...node, schema: 'pg_catalog' };
    case 'symbol key':
      return { ...node, [Symbol('x')]: 1 };
    case 'wrong kind':
      return { ...node, kind: ['RawNode', 'ExplainNode', 'SelectQueryNode', 'TableNode', 'toString', '__proto__'][pick % 6] };
    case 'null prototype':
      return Object.assign(Object.create(null) as object, node);
    case 'proxy':
      return new Proxy(node, {});
  }
  if (key === undefined) return node;
  const { [key]: moved, ...rest } = node;
  if (how === 'dropped field') return rest;
  if (how === 'inherited field') return Object.assign(Object.create({ [key]: moved }) as object, rest);
  let reads = 0;
  return Object.defineProperty(rest, key, { enumerable: true, get: () => (reads++ === 0 ? moved : HOSTILE_STRINGS[0]) });
}

/**
 * Trees of Kysely's node kinds. `hostility` (0..1) is how often a string is hostile and a node
 * malformed: high for the pure property, low for the database sample (more trees that run).
 */
export function trees(hostility: number) {
  const weighted = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<T>) =>
    fc.oneof({ weight: Math.round((1 - hostility) * 100), arbitrary: good }, { weight: Math.round(hostility * 100), arbitrary: bad });
  const hostile = fc.oneof(fc.constantFrom(...HOSTILE_STRINGS, ...REFUSED_NAMES), fc.string({ maxLength: 6 }));
  const name = (...good: string[]) => weighted(fc.constantFrom(...good), hostile);
  const spoil = <T extends Tree>(arbitrary: fc.Arbitrary<T>) =>
    fc
      .tuple(arbitrary, weighted(fc.constant<Malformation>('none'), fc.constantFrom<Malformation>(...MALFORMATIONS)), fc.nat())
      .map(([node, how, pick]) => malform(node, how, pick));

  const identifier = (...good: string[]) => spoil(name(...good).map((value) => ({ kind: 'IdentifierNode', name: value })));
  const table = (...good: string[]) =>
    spoil(identifier(...good).map((id) => ({ kind: 'TableNode', table: { kind: 'SchemableIdentifierNode', identifier: id } })));
  const column = spoil(
    identifier('org_id', 'workflow_exec_id', 'workflow_id', 'status', 'created_at').map((id) => ({ kind: 'ColumnNode', column: id })),
  );
  const operator = (...good: string[]) => spoil(name(...good).map((value) => ({ kind: 'OperatorNode', operator: value })));
  const data = fc.oneof(
    fc.constantFrom<unknown>(null, true, 1, -1, 0.5, 10n),
    hostile,
    fc.date({ noInvalidDate: true }),
    fc.constant(randomUUID()),
  );
  const relation = fc.oneof(
    table(...TABLES),
    spoil(fc.record({ kind: fc.constant('AliasNode'), node: table(...TABLES), alias: identifier('w', 't', 'pg_settings') })),
  );

  const { expression } = fc.letrec<{ expression: object }>((tie) => ({
    expression: fc.oneof(
      { depthSize: 'small' },
      spoil(
        fc.record({ kind: fc.constant('ReferenceNode'), column, table: fc.option(table('w', 't', 'workflow_states'), { nil: undefined }) }),
      ),
      spoil(data.map((value) => ({ kind: 'ValueNode', value }))),
      spoil(data.map((value) => ({ kind: 'ValueNode', value, immediate: true }))),
      spoil(
        fc.record({
          kind: fc.constant('BinaryOperationNode'),
          leftOperand: tie('expression'),
          operator: operator('=', '<>', '<', 'like', 'is', 'is not', '+', '-', '||'),
          rightOperand: tie('expression'),
        }),
      ),
      spoil(fc.record({ kind: fc.constant('UnaryOperationNode'), operator: operator('-', 'not', 'exists'), operand: tie('expression') })),
      spoil(
        fc.record({
          kind: fc.constant('FunctionNode'),
          func: name(...[...FUNCTIONS].slice(0, 12)),
          arguments: fc.array(tie('expression'), { maxLength: 2 }),
        }),
      ),
      spoil(fc.record({ kind: fc.constant('ParensNode'), node: tie('expression') })),
      spoil(fc.record({ kind: fc.constantFrom('AndNode', 'OrNode'), left: tie('expression'), right: tie('expression') })),
      spoil(
        fc.record({
          kind: fc.constant('CastNode'),
          expression: tie('expression'),
          dataType: spoil(name('text', 'integer', 'uuid').map((value) => ({ kind: 'DataTypeNode', dataType: value }))),
        }),
      ),
      spoil(
        fc
          .array(name('true'), { minLength: 1, maxLength: 2 })
          .map((fragments) => ({ kind: 'RawNode', sqlFragments: fragments, parameters: [] })),
      ),
    ),
  }));

  const where = spoil(expression.map((condition) => ({ kind: 'WhereNode', where: condition })));
  const selection = spoil(
    fc
      .oneof(expression, fc.record({ kind: fc.constant('AliasNode'), node: expression, alias: identifier('x', 'org_id') }))
      .map((item) => ({ kind: 'SelectionNode', selection: item })),
  );
  const join = spoil(
    fc.record({
      kind: fc.constant('JoinNode'),
      joinType: name('InnerJoin', 'LeftJoin'),
      table: relation,
      on: spoil(expression.map((condition) => ({ kind: 'OnNode', on: condition }))),
    }),
  );
  const cte = spoil(
    fc.record({
      kind: fc.constant('CommonTableExpressionNode'),
      name: spoil(table('c').map((named) => ({ kind: 'CommonTableExpressionNameNode', table: named }))),
      expression: spoil(
        fc.record({ kind: fc.constant('SelectQueryNode'), selections: fc.array(selection, { minLength: 1, maxLength: 2 }) }),
      ),
    }),
  );
  const optional = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined, freq: 2 });
  const dropUndefined = (node: Tree): Tree => Object.fromEntries(Object.entries(node).filter(([, value]) => value !== undefined));

  const select = fc
    .record({
      kind: fc.constant('SelectQueryNode'),
      with: optional(spoil(fc.array(cte, { minLength: 1, maxLength: 1 }).map((expressions) => ({ kind: 'WithNode', expressions })))),
      from: spoil(fc.array(relation, { minLength: 1, maxLength: 2 }).map((froms) => ({ kind: 'FromNode', froms }))),
      selections: fc.array(selection, { minLength: 1, maxLength: 3 }),
      joins: optional(fc.array(join, { minLength: 1, maxLength: 1 })),
      where: optional(where),
      limit: optional(spoil(fc.constant({ kind: 'LimitNode', limit: { kind: 'ValueNode', value: 5 } }))),
    })
    .map(dropUndefined);
  const update = fc
    .record({
      kind: fc.constant('UpdateQueryNode'),
      table: relation,
      updates: fc.array(
        spoil(
          fc.record({
            kind: fc.constant('ColumnUpdateNode'),
            column: spoil(identifier('status', 'workflow_id').map((id) => ({ kind: 'ColumnNode', column: id }))),
            value: expression,
          }),
        ),
        { minLength: 1, maxLength: 1 },
      ),
      where: optional(where),
    })
    .map(dropUndefined);
  const remove = fc
    .record({ kind: fc.constant('DeleteQueryNode'), from: spoil(relation.map((target) => ({ kind: 'FromNode', froms: [target] }))), where })
    .map(dropUndefined);
  return fc.oneof(
    { weight: 6, arbitrary: spoil(select) },
    { weight: 2, arbitrary: spoil(update) },
    { weight: 1, arbitrary: spoil(remove) },
  );
}

/**
 * Queries the builder makes, with hostile strings where tenant code puts its own strings (aliases
 * and values; the builder itself refuses a string as a literal): well typed, so that most of them run.
 */
const builderQueries = fc
  .record({
    alias: fc.constantFrom(...HOSTILE_STRINGS.filter((text) => !text.includes('\0') && text !== ''), 'w'),
    text: fc.constantFrom(...HOSTILE_STRINGS),
    kind: fc.constantFrom('select', 'join', 'update', 'delete'),
  })
  .map(({ alias, text, kind }) => {
    const w = `workflow_states as ${alias}` as 'workflow_states';
    if (kind === 'update') return offline.updateTable(w).set({ status: text }).where('workflow_id', '=', text).toOperationNode();
    if (kind === 'delete') return offline.deleteFrom('schedules').where('cron_expression', '=', text).toOperationNode();
    const query = offline.selectFrom(w).select((eb) => ['org_id', 'workflow_exec_id', eb.val(text).as(alias)]);
    if (kind === 'select') return query.where('status', '<>', text).toOperationNode();
    return query
      .leftJoin('task_states as t', (join) => join.onRef('t.workflow_exec_id', '=', 'workflow_exec_id' as never))
      .where('t.component', 'is not', null)
      .toOperationNode();
  });

function isForbidden(error: unknown): boolean {
  return error instanceof StoreError && error.code === 'FORBIDDEN' && error.details.reason === 'query_not_allowed';
}

/** SQL text outside quoted identifiers and string literals: where a hostile string would act. */
function bare(sql: string): string {
  return sql.replace(/"(?:[^"]|"")*"|'(?:[^']|'')*'/g, "''");
}

describe('random trees through the rebuild, the routing and the compiler', () => {
  it('each is FORBIDDEN, or compiles from plain data to SQL that carries nothing hostile outside quotes', () => {
    let accepted = 0;
    fc.assert(
      fc.property(trees(0.12), (tree) => {
        let compiled: { sql: string };
        try {
          compiled = tenantSql(tree);
        } catch (error) {
          if (isForbidden(error)) return;
          throw error;
        }
        accepted++;
        const rebuilt = parseTenantQuery(tree);
        expectPlain(rebuilt);
        expect(parseTenantQuery(rebuilt)).toEqual(rebuilt);
        expect(bare(compiled.sql)).not.toMatch(/;|--|\/\*|\0|set_config|pg_|reset|commit/i);
      }),
      { numRuns: 3000 },
    );
    // The generator must reach the compiler often enough for the property to mean something.
    expect(accepted).toBeGreaterThan(150);
  });
});

describe.each(withCitus(backends))('random trees in a real scope on $name', (backend) => {
  let t: TestDatabase;
  let store: Store;
  let single: Store;
  const attacker = { id: '', workflowExecId: randomUUID() };
  const victim = { id: '', workflowExecId: randomUUID() };

  beforeAll(async () => {
    t = await backend.createMigrated();
    store = await storeOver(t.db);
    single = backend.name !== 'pglite' ? await openStore({ url: t.url!, poolSize: 1 }) : store;
    for (const org of [attacker, victim]) {
      org.id = (await store.organizations.create({ name: `org ${randomUUID()}` })).id;
      await store.withOrg(org.id, (tx) =>
        tx.workflows.upsert({ workflowExecId: org.workflowExecId, workflowId: 'own', status: 'running' }),
      );
    }
  });

  afterAll(async () => {
    if (single !== store) await single?.close();
    await store?.close();
    await t?.dispose();
  });

  /** The pooled connection's session, as the next scope would find it. */
  async function session(): Promise<unknown> {
    const { rows } = await single.tenantDb.query(
      `select coalesce(current_setting('app.org_id', true), '') as org, coalesce(current_setting('app.org_token', true), '') as token,
              current_setting('role') as role, current_user::text as "user",
              current_setting('search_path') as search_path,
              (select coalesce(json_agg(name || '=' || setting order by name), '[]') from pg_settings where source = 'session') as settings,
              (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as advisory_locks`,
    );
    return rows[0];
  }

  const victimRows = async () =>
    (await t.db.query('select * from workflow_states where org_id = $1 order by workflow_exec_id', [victim.id])).rows;

  it('each is FORBIDDEN, or stays in its organization and leaves the session as it was', async () => {
    // A first scope defines the store's settings on this connection; from then on nothing may change.
    await single.withOrg(attacker.id, (tx) => tx.kysely.selectFrom('workflow_states').select('org_id').execute());
    const before = { session: await session(), victim: await victimRows() };
    const outcomes = { forbidden: 0, ran: 0, failed: 0 };
    await fc.assert(
      fc.asyncProperty(fc.oneof(trees(0.02), builderQueries), async (tree) => {
        const forged = { sql: 'select 1', parameters: [], queryId: { queryId: 'random' }, query: tree } as unknown as CompiledQuery;
        try {
          const { rows } = await single.withOrg(attacker.id, (tx) => tx.kysely.executeQuery(forged));
          outcomes.ran++;
          const text = JSON.stringify(rows, (_key, value: unknown) => (typeof value === 'bigint' ? String(value) : value));
          expect(text).not.toContain(victim.id);
          expect(text).not.toContain(victim.workflowExecId);
        } catch (error) {
          // Refused before any SQL, or a statement the database refused (a type error, say): rolled back.
          expect(error).toBeInstanceOf(StoreError);
          if (isForbidden(error)) outcomes.forbidden++;
          else outcomes.failed++;
        }
        expect(await session()).toEqual(before.session);
        expect(await victimRows()).toEqual(before.victim);
      }),
      // Unbiased: fast-check's bias toward small values would pick the malformed branches far more often than `hostility`.
      { numRuns: backend.name === 'citus' ? 40 : 60, unbiased: true },
    );
    expect(outcomes.ran).toBeGreaterThan(0);
    expect(outcomes.forbidden).toBeGreaterThan(0);
  });
});
