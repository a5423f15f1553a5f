/**
 * The tenant boundary, attacked. Organization A (the attacker) tries every route we know out of
 * its scope or into the next user's connection; after each, organization B's next scope on the
 * same pooled connection (one connection: pool size 1 on the server, and PGlite has one) must
 * read and write exactly B's rows, with nothing of A's left in the session. The operator's
 * paths (organizations.list, create) must be unaffected too.
 *
 * Routes:
 * 1. Through the public API: SQL text smuggled into the query builder (sql`...`, raw compiled
 *    queries, forged compiled queries and operation trees, functions, tables and schemas off the
 *    lists, transactions), and SQL-shaped values in every kind of argument.
 * 2. With a leaked tenant login (server): role switches, temp objects, schema changes, the
 *    clock of key verification, COPY TO PROGRAM, and a lock that would stall other tenants.
 * 3. Least privilege at start-up: a privileged tenant login is refused by openStore and
 *    reported by doctor; migrations run as a non-superuser owner with CREATEROLE.
 * 4. Verification row locks (a tenant holding its own key row, or the tenant pool, to stall key
 *    verification): test/api-keys/verification-locks.test.ts.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { CompiledQuery, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diagnose, openStore, storeOver, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, createServerDatabase, serverUrl, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { connectAsTenant } from '../support/leaked-login.ts';
import { withDatabaseName } from '../support/servers.ts';
import { scopeEntryOf } from '../../engine/infra/store/store.ts';
import { scopeEntry, withOrgTrustedSql } from '../../engine/infra/store/tenancy/scopes.ts';

const tag = () => randomBytes(4).toString('hex');

/** A compiled query built by hand: `select ... from workflow_states` with the given parts, and SQL text that is not its tree's. */
function forgedQuery(parts: Record<string, unknown>): CompiledQuery {
  return {
    sql: 'select 1',
    parameters: [],
    queryId: { queryId: 'forged' },
    query: {
      kind: 'SelectQueryNode',
      from: {
        kind: 'FromNode',
        froms: [
          {
            kind: 'TableNode',
            table: { kind: 'SchemableIdentifierNode', identifier: { kind: 'IdentifierNode', name: 'workflow_states' } },
          },
        ],
      },
      ...parts,
    },
  } as unknown as CompiledQuery;
}

interface Org {
  id: string;
  workflowExecId: string;
}

describe.each(withCitus(backends))('tenant boundary on $name', (backend) => {
  let t: TestDatabase;
  let store: Store;
  /** One connection for every scope of the test (the store itself on PGlite). */
  let single: Store;
  let attacker: Org;
  let victim: Org;

  async function newOrg(on: Store): Promise<Org> {
    const org = await on.organizations.create({ name: `org ${tag()}` });
    const workflowExecId = randomUUID();
    await on.withOrg(org.id, (tx) => tx.workflows.upsert({ workflowExecId, workflowId: 'own', status: 'running' }));
    return { id: org.id, workflowExecId };
  }

  beforeAll(async () => {
    t = await backend.createMigrated();
    store = await storeOver(t.db);
    single = backend.name !== 'pglite' ? await openStore({ url: t.url!, poolSize: 1 }) : store;
    attacker = await newOrg(store);
    victim = await newOrg(store);
  });

  afterAll(async () => {
    if (single !== store) await single?.close();
    await store?.close();
    await t?.dispose();
  });

  /**
   * B's next scope on the same connection: it sees exactly its own workflow, writes one and
   * reads it back, and the session carries nothing of A (no organization set, no role entered);
   * the operator still lists and creates organizations.
   */
  async function expectVictimUntouched(): Promise<void> {
    const fresh = randomUUID();
    const seen = await single.withOrg(victim.id, async (tx) => {
      await tx.workflows.upsert({ workflowExecId: fresh, workflowId: 'after-attack', status: 'pending' });
      const rows = await tx.kysely.selectFrom('workflow_states').select(['workflow_exec_id', 'org_id']).execute();
      return rows;
    });
    expect(new Set(seen.map((row) => row.org_id))).toEqual(new Set([victim.id]));
    expect(seen.map((row) => row.workflow_exec_id)).toContain(victim.workflowExecId);
    expect(seen.map((row) => row.workflow_exec_id)).toContain(fresh);
    expect(seen.map((row) => row.workflow_exec_id)).not.toContain(attacker.workflowExecId);
    await single.withOrg(victim.id, (tx) => tx.workflows.delete(fresh));
    const { rows } = await single.tenantDb.query<{ org: string | null; role: string; token: string | null }>(
      `select current_setting('app.org_id', true) as org, current_setting('role') as role, current_setting('app.org_token', true) as token`,
    );
    expect(rows[0]!.org ?? '').toBe('');
    expect(rows[0]!.token ?? '').toBe('');
    expect(rows[0]!.role).toBe('none');
    const listed = await single.organizations.list({ limit: 500 });
    expect(listed.items.map((org) => org.id)).toEqual(expect.arrayContaining([attacker.id, victim.id]));
    const created = await single.organizations.create({ name: `operator ${tag()}` });
    expect((await single.organizations.get(created.id)).id).toBe(created.id);
  }

  describe('SQL text through the query builder is refused before it reaches the database', () => {
    const attempts: [string, (tx: Parameters<Parameters<Store['withOrg']>[1]>[0]) => Promise<unknown>][] = [
      [
        'sql`reset role` in a where clause',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .selectAll()
            .where(sql<boolean>`true; reset role`)
            .execute(),
      ],
      [
        'sql`set_config(...)` as a selection',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select(sql<string>`set_config('app.org_id', ${victim.id}, true)`.as('x'))
            .execute(),
      ],
      [
        'sql.raw as an order direction',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .selectAll()
            .orderBy('created_at', sql`desc; commit`)
            .execute(),
      ],
      ['a raw compiled query (reset role)', (tx) => tx.kysely.executeQuery(CompiledQuery.raw('reset role'))],
      ['a raw compiled query (commit)', (tx) => tx.kysely.executeQuery(CompiledQuery.raw('commit'))],
      [
        'a raw compiled query (create temp table)',
        (tx) => tx.kysely.executeQuery(CompiledQuery.raw('create temp table workflow_states (x int)')),
      ],
      ['a raw compiled query (prepare under a store name)', (tx) => tx.kysely.executeQuery(CompiledQuery.raw('deallocate all'))],
      [
        'set_config through eb.fn',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('set_config', [eb.val('app.org_id'), eb.val(victim.id), eb.lit(true)]).as('x'))
            .execute(),
      ],
      [
        'a schema-qualified function name',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('pg_catalog.set_config', [eb.val('role'), eb.val('postgres'), eb.lit(true)]).as('x'))
            .execute(),
      ],
      [
        'pg_advisory_lock through eb.fn',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('pg_advisory_lock', [eb.lit(7305113042)]).as('x'))
            .execute(),
      ],
      [
        'pg_sleep through eb.fn',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('pg_sleep', [eb.lit(10)]).as('x'))
            .execute(),
      ],
      [
        'the scope function itself',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('enter_org_scope', [eb.val(victim.id)]).as('x'))
            .execute(),
      ],
      [
        'verify_api_key with a chosen clock',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('verify_api_key', [eb.val('p'), eb.val('h'), eb.val('2000-01-01')]).as('x'))
            .execute(),
      ],
      [
        'the verification clock',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.fn('verification_now', []).as('x'))
            .execute(),
      ],
      [
        'a catalog table',
        (tx) =>
          tx.kysely
            .selectFrom('pg_roles' as 'users')
            .selectAll()
            .execute(),
      ],
      [
        "the key verifier's table by another schema",
        (tx) => tx.kysely.withSchema('pg_temp').selectFrom('workflow_states').selectAll().execute(),
      ],
      [
        'a store table through another schema',
        (tx) =>
          tx.kysely
            .selectFrom('public.api_keys' as 'api_keys')
            .selectAll()
            .execute(),
      ],
      ['a transaction inside the scope', (tx) => tx.kysely.transaction().execute(async () => 'in')],
      ['DDL through the schema builder', (tx) => tx.kysely.schema.createTable('x').addColumn('a', 'integer').execute()],
      ['DROP through the schema builder', (tx) => tx.kysely.schema.dropTable('workflow_states').execute()],
      [
        'a cast to a forged data type',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select((eb) => eb.cast(eb.val('1'), sql.raw('int); reset role; select (1') as never).as('x'))
            .execute(),
      ],
      [
        'EXPLAIN ANALYZE',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .selectAll()
            .explain('json', sql`analyze`),
      ],
      [
        'a streamed query',
        async (tx) => {
          for await (const row of tx.kysely.selectFrom('workflow_states').selectAll().stream()) return row;
        },
      ],
      [
        'a forged operation tree with a function name carrying SQL',
        (tx) =>
          tx.kysely.executeQuery(
            forgedQuery({
              selections: [
                {
                  kind: 'SelectionNode',
                  selection: { kind: 'FunctionNode', func: 'count(*) from workflow_states; reset role; select count', arguments: [] },
                },
              ],
            }),
          ),
      ],
      [
        'a forged operator',
        (tx) =>
          tx.kysely.executeQuery(
            forgedQuery({
              where: {
                kind: 'WhereNode',
                where: {
                  kind: 'BinaryOperationNode',
                  leftOperand: { kind: 'ValueNode', value: 1 },
                  operator: { kind: 'OperatorNode', operator: "= 1 or set_config('app.org_id', '0', true) is not null or 1 =" },
                  rightOperand: { kind: 'ValueNode', value: 1 },
                },
              },
            }),
          ),
      ],
      [
        'a forged table with a schema',
        (tx) =>
          tx.kysely.executeQuery(
            forgedQuery({
              from: {
                kind: 'FromNode',
                froms: [
                  {
                    kind: 'TableNode',
                    table: {
                      kind: 'SchemableIdentifierNode',
                      schema: { kind: 'IdentifierNode', name: 'pg_temp' },
                      identifier: { kind: 'IdentifierNode', name: 'workflow_states' },
                    },
                  },
                ],
              },
            }),
          ),
      ],
      [
        'a node of a kind the checker does not know',
        (tx) =>
          tx.kysely.executeQuery(
            forgedQuery({ where: { kind: 'WhereNode', where: { kind: 'RawNode', sqlFragments: ['true; reset role'], parameters: [] } } }),
          ),
      ],
    ];

    it.each(attempts)('%s: FORBIDDEN, and B is untouched', async (_name, attempt) => {
      const error = await expectStoreError(() => single.withOrg(attacker.id, (tx) => attempt(tx)), 'FORBIDDEN');
      expect(error.details.reason).toBe('query_not_allowed');
      await expectVictimUntouched();
    });

    it('a compiled query whose SQL text was swapped runs its own tree, not the text', async () => {
      const rows = await single.withOrg(attacker.id, async (tx) => {
        const benign = tx.kysely.selectFrom('workflow_states').select('org_id').compile();
        const forged = { ...benign, sql: `select set_config('app.org_id', '${victim.id}', true) as org_id` };
        return (await tx.kysely.executeQuery(forged)).rows as { org_id: string }[];
      });
      expect(rows).toEqual([{ org_id: attacker.id }]);
      await expectVictimUntouched();
    });

    it('what the builder allows stays in A: reads, joins, aggregates, row locks, and a failed statement', async () => {
      const seen = await single.withOrg(attacker.id, async (tx) => {
        const locked = await tx.kysely.selectFrom('workflow_states').select('org_id').forUpdate().execute();
        const counted = await tx.kysely
          .selectFrom('workflow_states as w')
          .leftJoin('task_states as t', (join) =>
            join.onRef('t.org_id', '=', 'w.org_id').onRef('t.workflow_exec_id', '=', 'w.workflow_exec_id'),
          )
          .select((eb) => ['w.org_id', eb.fn.countAll<number>().as('n')])
          .groupBy('w.org_id')
          .execute();
        return { locked, counted };
      });
      expect(seen.locked).toEqual([{ org_id: attacker.id }]);
      expect(seen.counted.map((group) => group.org_id)).toEqual([attacker.id]);
      await expectStoreError(
        () =>
          single.withOrg(attacker.id, (tx) =>
            tx.kysely
              .insertInto('workflow_states')
              .values({ workflow_exec_id: 'not-a-uuid', workflow_id: 'x', status: 'running' })
              .execute(),
          ),
        'INVALID_INPUT',
      );
      await expectVictimUntouched();
    });

    it('A cannot write into B through the builder: the row lands in A or is refused', async () => {
      const target = victim.workflowExecId;
      const updated = await single.withOrg(attacker.id, (tx) =>
        tx.kysely.updateTable('workflow_states').set({ status: 'failed' }).where('workflow_exec_id', '=', target).executeTakeFirst(),
      );
      expect(updated.numUpdatedRows).toBe(0n);
      const deleted = await single.withOrg(attacker.id, (tx) =>
        tx.kysely.deleteFrom('workflow_states').where('org_id', '=', victim.id).executeTakeFirst(),
      );
      expect(deleted.numDeletedRows).toBe(0n);
      const stored = await single.withOrg(victim.id, (tx) => tx.workflows.get(target));
      expect(stored.status).toBe('running');
      await expectVictimUntouched();
    });
  });

  describe('a query tree is read once, as plain data: forged prototypes, accessors, catalog aliases, CTEs and outer joins', () => {
    type Scope = Parameters<Parameters<Store['withOrg']>[1]>[0];
    const value = (v: unknown) => ({ kind: 'ValueNode', value: v });
    const literal = (v: unknown) => ({ kind: 'ValueNode', value: v, immediate: true });
    /** `set_config('app.org_id', <B>, true)`: what every attempt below tries to run. */
    const setOrgArguments = () => [value('app.org_id'), value(victim.id), literal(true)];
    const setOrg = () => ({ kind: 'FunctionNode', func: 'set_config', arguments: setOrgArguments() });
    const selecting = (selection: unknown) => forgedQuery({ selections: [{ kind: 'SelectionNode', selection }] });
    /** A node whose `inherited` fields come from its prototype, not from itself. */
    const inheriting = (inherited: object, own: object) => Object.assign(Object.create(inherited) as object, own);
    /** A FunctionNode whose `func` is a getter: `count` the first two times it is read (the checks), `answer` afterwards. */
    const twoFaced = (answer: string, args: unknown[]) => {
      let reads = 0;
      return {
        kind: 'FunctionNode',
        get func() {
          return reads++ < 2 ? 'count' : answer;
        },
        arguments: args,
      };
    };

    const attempts: [string, (tx: Scope) => Promise<unknown>][] = [
      [
        'a FunctionNode whose func (set_config) is inherited from its prototype',
        (tx) =>
          tx.kysely.executeQuery(selecting(inheriting({ func: 'set_config' }, { kind: 'FunctionNode', arguments: setOrgArguments() }))),
      ],
      [
        'an OperatorNode whose operator text is inherited from its prototype',
        (tx) =>
          tx.kysely.executeQuery(
            forgedQuery({
              where: {
                kind: 'WhereNode',
                where: {
                  kind: 'BinaryOperationNode',
                  leftOperand: value(1),
                  operator: inheriting(
                    { operator: `= 1 or set_config('app.org_id', '${victim.id}', true) is not null or 1 =` },
                    { kind: 'OperatorNode' },
                  ),
                  rightOperand: value(1),
                },
              },
            }),
          ),
      ],
      [
        'a func getter that answers count to the checks, then set_config',
        (tx) => tx.kysely.executeQuery(selecting(twoFaced('set_config', setOrgArguments()))),
      ],
      [
        'a Proxy whose func answers count to the checks, then set_config',
        (tx) => {
          let reads = 0;
          const answer = (target: object, key: string | symbol) => (key === 'func' && reads++ < 2 ? 'count' : Reflect.get(target, key));
          return tx.kysely.executeQuery(selecting(new Proxy(setOrg(), { get: answer })));
        },
      ],
      [
        'a catalog table under its own name as alias (pg_settings as pg_settings)',
        (tx) =>
          tx.kysely
            .selectFrom('pg_settings as pg_settings' as 'users')
            .selectAll()
            .execute(),
      ],
      [
        'pg_roles as pg_roles',
        (tx) =>
          tx.kysely
            .selectFrom('pg_roles as pg_roles' as 'users')
            .selectAll()
            .execute(),
      ],
      [
        'pg_stat_user_tables as pg_stat_user_tables',
        (tx) =>
          tx.kysely
            .selectFrom('pg_stat_user_tables as pg_stat_user_tables' as 'users')
            .selectAll()
            .execute(),
      ],
      [
        'pg_stat_activity as pg_stat_activity',
        (tx) =>
          tx.kysely
            .selectFrom('pg_stat_activity as pg_stat_activity' as 'users')
            .selectAll()
            .execute(),
      ],
      [
        'update pg_settings as pg_settings (a session setting that would outlive the scope)',
        (tx) =>
          tx.kysely
            .updateTable('pg_settings as pg_settings' as 'users')
            .set({ setting: 'attacker' } as never)
            .where('name' as 'email', '=', 'application_name')
            .execute(),
      ],
      [
        'a CTE named workflow_states, defined in a subquery, that would turn the filter off for the real table outside it',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states')
            .select('org_id')
            .where((eb) =>
              eb.exists(
                tx.kysely
                  .with('workflow_states' as 'x', (db) => db.selectNoFrom((e) => e.lit(1).as('x')))
                  .selectFrom('workflow_states' as 'x')
                  .selectAll(),
              ),
            )
            .execute(),
      ],
      [
        'a CTE named like a catalog table (pg_settings), and the catalog table read outside its scope',
        (tx) =>
          tx.kysely
            .selectFrom('pg_settings' as 'users')
            .selectAll()
            .where((eb) =>
              eb.exists(
                tx.kysely
                  .with('pg_settings' as 'x', (db) => db.selectNoFrom((e) => e.lit(1).as('x')))
                  .selectFrom('pg_settings' as 'x')
                  .selectAll(),
              ),
            )
            .execute(),
      ],
      [
        'update of a CTE name, which PostgreSQL takes as the catalog table (with pg_settings ... update pg_settings)',
        (tx) =>
          tx.kysely
            .with('pg_settings' as 'x', (db) => db.selectNoFrom((e) => e.lit(1).as('x')))
            .updateTable('pg_settings' as 'users')
            .set({ setting: 'attacker' } as never)
            .where('name' as 'email', '=', 'application_name')
            .execute(),
      ],
      [
        'a RIGHT JOIN (the joined tenant table would keep rows its ON filter refuses)',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states as w')
            .rightJoin('task_states as t', (join) => join.onRef('t.workflow_exec_id', '=', 'w.workflow_exec_id'))
            .select(['t.org_id'])
            .execute(),
      ],
      [
        'a FULL JOIN',
        (tx) =>
          tx.kysely
            .selectFrom('workflow_states as w')
            .fullJoin('task_states as t', (join) => join.onRef('t.workflow_exec_id', '=', 'w.workflow_exec_id'))
            .select(['t.org_id'])
            .execute(),
      ],
    ];

    it.each(attempts)('%s: FORBIDDEN, and B is untouched', async (_name, attempt) => {
      const error = await expectStoreError(() => single.withOrg(attacker.id, (tx) => attempt(tx)), 'FORBIDDEN');
      expect(error.details.reason).toBe('query_not_allowed');
      await expectVictimUntouched();
    });

    it('a func getter aiming at pg_advisory_lock: FORBIDDEN, and no session of the database holds an advisory lock', async () => {
      const error = await expectStoreError(
        () => single.withOrg(attacker.id, (tx) => tx.kysely.executeQuery(selecting(twoFaced('pg_advisory_lock', [literal(7305113042)])))),
        'FORBIDDEN',
      );
      expect(error.details.reason).toBe('query_not_allowed');
      const advisory = `select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`;
      expect((await t.db.query<{ n: number }>(advisory)).rows[0]!.n).toBe(0);
      if (backend.name === 'citus') {
        const { rows } = await t.db.query<{ result: string }>('select result from run_command_on_workers($1)', [advisory]);
        expect(rows.map((row) => row.result)).toEqual(rows.map(() => '0'));
      }
      await expectVictimUntouched();
    });

    /**
     * Object.prototype polluted with a field the compiler reads, on a tree that lacks it (the
     * builder's own, or a forged one). Either refused, or run without the polluted field: the
     * statement reads A's rows only, and the scope's next statement still sees exactly A.
     */
    const pollutions: [string, () => unknown, (tx: Scope) => Promise<unknown>][] = [
      [
        'where',
        () => ({
          kind: 'WhereNode',
          where: {
            kind: 'BinaryOperationNode',
            leftOperand: setOrg(),
            operator: { kind: 'OperatorNode', operator: 'is not' },
            rightOperand: literal(null),
          },
        }),
        (tx) => tx.kysely.selectFrom('workflow_states').select(['workflow_exec_id', 'org_id']).execute(),
      ],
      [
        'joins',
        () => [
          {
            kind: 'JoinNode',
            joinType: 'InnerJoin',
            table: {
              kind: 'AliasNode',
              // Without prototype: it would inherit these very joins.
              node: Object.assign(Object.create(null) as object, {
                kind: 'SelectQueryNode',
                selections: [{ kind: 'SelectionNode', selection: setOrg() }],
              }),
              alias: { kind: 'IdentifierNode', name: 's' },
            },
            on: { kind: 'OnNode', on: { kind: 'RawNode', sqlFragments: ['true'], parameters: [] } },
          },
        ],
        (tx) => tx.kysely.selectFrom('workflow_states').select(['workflow_exec_id', 'org_id']).execute(),
      ],
      ['func', () => 'set_config', (tx) => tx.kysely.executeQuery(selecting({ kind: 'FunctionNode', arguments: setOrgArguments() }))],
      [
        'operator',
        () => `is not null and set_config('app.org_id', '${victim.id}', true) is not null and 1 =`,
        (tx) =>
          tx.kysely.executeQuery(
            forgedQuery({
              where: {
                kind: 'WhereNode',
                where: {
                  kind: 'BinaryOperationNode',
                  leftOperand: literal(1),
                  operator: { kind: 'OperatorNode' },
                  rightOperand: literal(1),
                },
              },
            }),
          ),
      ],
      [
        'table',
        () => ({
          kind: 'RawNode',
          sqlFragments: [`set_config('app.org_id', '${victim.id}', true) as x, "workflow_states"`],
          parameters: [],
        }),
        (tx) =>
          tx.kysely.executeQuery(
            selecting({ kind: 'ReferenceNode', column: { kind: 'ColumnNode', column: { kind: 'IdentifierNode', name: 'org_id' } } }),
          ),
      ],
      ['selection', setOrg, (tx) => tx.kysely.executeQuery(forgedQuery({ selections: [{ kind: 'SelectionNode' }] }))],
    ];

    it.each(pollutions)(
      'Object.prototype.%s polluted: refused or without effect, and B is untouched',
      async (field, pollution, attempt) => {
        const outcome = await single.withOrg(attacker.id, async (tx) => {
          let first: unknown;
          const prototype = Object.prototype as Record<string, unknown>;
          try {
            prototype[field] = pollution();
            first = await attempt(tx).catch((error: unknown) => error);
          } finally {
            delete prototype[field];
          }
          const after = await tx.kysely.selectFrom('workflow_states').select(['workflow_exec_id', 'org_id']).execute();
          return { first, after };
        });
        if (outcome.first instanceof Error) {
          expect(outcome.first).toMatchObject({ code: 'FORBIDDEN', details: { reason: 'query_not_allowed' } });
        } else {
          const rows = (Array.isArray(outcome.first) ? outcome.first : (outcome.first as { rows: unknown[] }).rows) as Record<
            string,
            unknown
          >[];
          for (const row of rows) expect(Object.keys(row)).not.toContain('set_config');
          for (const row of rows) if ('org_id' in row) expect(row.org_id).toBe(attacker.id);
        }
        expect(outcome.after).toEqual([{ workflow_exec_id: attacker.workflowExecId, org_id: attacker.id }]);
        await expectVictimUntouched();
      },
    );
  });

  describe('SQL-shaped values in other arguments are data', () => {
    it('an organization id carrying SQL is refused before any SQL', async () => {
      for (const orgId of [`${victim.id}'; reset role; --`, `' or true --`, `${victim.id} `]) {
        await expectStoreError(() => single.withOrg(orgId, async () => 'ran'), 'INVALID_INPUT');
        await expectStoreError(() => single.readOrg(orgId).workflows.list(), 'INVALID_INPUT');
      }
      await expectVictimUntouched();
    });

    it('an API key carrying SQL is MALFORMED, without a statement', async () => {
      for (const key of [
        `es_aaaaaaaaaaaa_'; reset role; --`,
        `' or 1=1 --`,
        `es_${'a'.repeat(12)}_${"');select pg_sleep(5)--".padEnd(43, 'x')}`,
      ]) {
        expect(await single.verifyApiKey(key)).toEqual({ ok: false, reason: 'MALFORMED' });
      }
    });

    it('SQL in JSON payloads and names is stored as data', async () => {
      const payload = { note: "'); select set_config('app.org_id', '', false); --", nested: ['$1', '\\x00'] };
      const execId = randomUUID();
      const stored = await single.withOrg(attacker.id, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: execId, workflowId: 'wf', status: 'running', input: payload });
        return tx.workflows.get(execId);
      });
      expect(stored.input).toEqual(payload);
      expect(stored.orgId).toBe(attacker.id);
      const renamed = await single.organizations.create({ name: `x'); reset role; -- ${tag()}` });
      expect(renamed.name).toMatch(/^x'\); reset role; -- /);
      await expectVictimUntouched();
    });
  });

  describe('scope limits', () => {
    it('a scope blocked by a lock fails fast with LOCK_TIMEOUT instead of holding its connection', async () => {
      const limited = backend.name !== 'pglite' ? await openStore({ url: t.url!, poolSize: 1, scopeTimeouts: { lockMs: 200 } }) : undefined;
      const on = limited ?? store;
      try {
        if (backend.name === 'pglite') {
          // One connection: nobody else can hold a lock; the setting itself is what the scope carries.
          const entry = scopeEntry({ signer: scopeEntryOf(on).signer, lockMs: 200 });
          const { rows } = await withOrgTrustedSql(
            on.tenantDb,
            victim.id,
            (tx) => tx.query<{ lock_timeout: string }>(`select current_setting('lock_timeout') as lock_timeout`),
            entry,
          );
          expect(rows[0]!.lock_timeout).toBe('200ms');
          return;
        }
        const holder = new pg.Client({ connectionString: t.url });
        await holder.connect();
        try {
          await holder.query('begin');
          await holder.query('lock table workflow_states in access exclusive mode');
          const started = Date.now();
          await expectStoreError(() => on.withOrg(victim.id, (tx) => tx.workflows.list()), 'LOCK_TIMEOUT');
          expect(Date.now() - started).toBeLessThan(4_000);
          await holder.query('rollback');
        } finally {
          await holder.end();
        }
        expect((await on.withOrg(victim.id, (tx) => tx.workflows.list())).items.length).toBeGreaterThan(0);
      } finally {
        await limited?.close();
      }
    });

    it('the scope limits are refused when they would mean "no limit" or are not whole milliseconds', async () => {
      for (const scopeTimeouts of [{ statementMs: 0 }, { lockMs: -1 }, { idleInTransactionMs: 1.5 }, { statementMs: Number.NaN }]) {
        await expectStoreError(() => storeOver(store.db, { scopeTimeouts }), 'INVALID_INPUT');
      }
    });
  });

  describe.runIf(backend.name !== 'pglite')('a leaked tenant login', () => {
    let leaked: pg.Client;

    beforeAll(async () => {
      leaked = await connectAsTenant(t.url!);
    });
    afterAll(async () => {
      await leaked?.end();
    });

    const refusedStatements: [string, string][] = [
      ['becomes the owner', 'set role postgres'],
      ['becomes the key verifier', 'set role app_key_verifier'],
      ['becomes someone by session authorization', 'set session authorization postgres'],
      ['creates a temp table to shadow a store table', 'create temp table workflow_states (workflow_exec_id uuid)'],
      ['creates a table in public', 'create table public.planted (x int)'],
      [
        'replaces verify_api_key',
        `create or replace function public.verify_api_key(p_prefix text, p_key_hash bytea) returns setof record language sql as 'select null::record'`,
      ],
      ['turns row-level security off', 'alter table workflow_states no force row level security'],
      ['drops a policy', 'drop policy workflow_states_tenant_isolation on workflow_states'],
      ['runs an OS command', `copy (select 1) to program 'id'`],
      [
        'replaces the verification clock',
        `create or replace function public.verification_now() returns timestamptz language sql as $$ select '2000-01-01'::timestamptz $$`,
      ],
      ['reads the verification clock', 'select public.verification_now()'],
      ['passes a clock to verify_api_key', `select * from public.verify_api_key('aaaaaaaaaaaa', '\\x00', now())`],
      ['reads the migration bookkeeping', 'select * from engine_store_migrations'],
    ];

    it.each(refusedStatements)('%s: refused', async (_name, statement) => {
      await expect(leaked.query(statement)).rejects.toMatchObject({ code: expect.stringMatching(/^(42501|42883|0LP01|42P01|22023)$/) });
      const { rows } = await leaked.query(`select current_user::text as "user", session_user::text as session`);
      expect(rows[0]).toEqual({ user: 'app_tenant', session: 'app_tenant' });
      await expectVictimUntouched();
    });

    it('without a scope it reads no tenant row and can write none', async () => {
      for (const table of ['users', 'api_keys', 'api_key_usage', 'workflow_states', 'task_states', 'schedules', 'organizations']) {
        const { rows } = await leaked.query(`select count(*)::int as n from ${table}`);
        expect(rows[0].n, table).toBe(0);
      }
      // The saved rate-limit counts are verify_api_key's alone: not even readable.
      await expect(leaked.query('select count(*) from api_key_usage_saved')).rejects.toMatchObject({ code: '42501' });
      await expect(
        leaked.query(`insert into workflow_states (workflow_exec_id, workflow_id, status) values ($1, 'x', 'running')`, [randomUUID()]),
      ).rejects.toMatchObject({
        // Citus refuses sooner: it cannot route a row without an organization (22004).
        code: expect.stringMatching(/^(42501|23502|22004)$/),
      });
    });

    it('RESET ROLE leaves it app_tenant, with nothing more than app_tenant may do', async () => {
      await leaked.query('reset role');
      const { rows } = await leaked.query(
        `select current_user::text as "user", has_database_privilege(current_database(), 'TEMP') as temp`,
      );
      expect(rows[0]).toEqual({ user: 'app_tenant', temp: false });
    });

    it('a lock it holds makes tenant scopes fail fast with LOCK_TIMEOUT, not wait', async () => {
      const limited = await openStore({ url: t.url!, poolSize: 1, scopeTimeouts: { lockMs: 200 } });
      try {
        await leaked.query('begin');
        await leaked.query('lock table workflow_states in access exclusive mode');
        await expectStoreError(() => limited.withOrg(victim.id, (tx) => tx.workflows.get(victim.workflowExecId)), 'LOCK_TIMEOUT');
      } finally {
        await leaked.query('rollback');
        await limited.close();
      }
    });
  });

  describe.runIf(backend.name !== 'pglite')('a scope that outlives its idle limit', () => {
    it('is ended by the server; its connection is discarded and the next scope gets a working one', async () => {
      const limited = await openStore({ url: t.url!, poolSize: 1, scopeTimeouts: { idleInTransactionMs: 200 } });
      try {
        const pids: number[] = [];
        const failed = await limited
          .withOrg(victim.id, async (tx) => {
            await tx.workflows.get(victim.workflowExecId);
            await new Promise((resolve) => setTimeout(resolve, 600));
            return tx.workflows.get(victim.workflowExecId);
          })
          .then(
            () => undefined,
            (error: unknown) => error,
          );
        expect(failed).toBeDefined();
        for (let i = 0; i < 2; i++) {
          const { rows } = await limited.tenantDb.query<{ pid: number }>('select pg_backend_pid() as pid');
          pids.push(rows[0]!.pid);
        }
        expect(pids[0]).toBe(pids[1]);
        const stored = await limited.withOrg(victim.id, (tx) => tx.workflows.get(victim.workflowExecId));
        expect(stored.orgId).toBe(victim.id);
      } finally {
        await limited.close();
      }
    });
  });
});

describe.runIf(serverUrl)('least privilege at start-up (server)', () => {
  it('openStore refuses a superuser or owner as the tenant login, and doctor reports it', async () => {
    const server = await createServerDatabase({ migrated: true });
    try {
      const error = await expectStoreError(() => openStore({ url: server.url, tenantUrl: server.url }), 'STORE_UNSAFE');
      expect(error.details.reason).toBe('privileged_tenant_login');
      expect(error.message).toMatch(/superuser/);
      const check = await openStore({ url: server.url });
      try {
        const { findings } = await diagnose(check.db, { tenantLogin: 'postgres' });
        expect(findings.map((finding) => finding.code)).toEqual(
          expect.arrayContaining(['TENANT_LOGIN_SUPERUSER', 'TENANT_LOGIN_IS_OWNER']),
        );
        const clean = await diagnose(check.db);
        expect(clean.findings.filter((finding) => finding.code.startsWith('TENANT_LOGIN'))).toEqual([]);
      } finally {
        await check.close();
      }
    } finally {
      await server.drop();
    }
  });

  it('migrations run as a non-superuser owner with CREATEROLE (as on RDS, Cloud SQL, Supabase), and that owner is refused as the tenant login', async () => {
    const role = `es_owner_${tag()}`;
    const database = `es_test_owner_${tag()}`;
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    try {
      await admin.query(`create role ${role} login createrole nosuperuser`);
      await admin.query(`create database ${database} owner ${role}`);
      const url = new URL(withDatabaseName(serverUrl!, database));
      url.username = role;
      const store = await openStore({ url: url.toString(), migrate: true });
      try {
        const org = await store.organizations.create({ name: `acme ${tag()}` });
        const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'ada@acme.example', role: 'admin' }));
        const { key } = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'ci' }));
        const verified = await store.verifyApiKey(key);
        expect(verified.ok && verified.principal.orgId).toBe(org.id);
        const { rows } = await store.tenantDb.query<{ user: string }>('select current_user::text as "user"');
        expect(rows[0]!.user).toBe('app_tenant');
        const { findings } = await diagnose(store.db, {});
        // Whether app_tenant has a password only a superuser can see (pg_authid): not checked here.
        expect(findings.filter((finding) => finding.code.startsWith('TENANT_')).map((finding) => finding.code)).toEqual([
          'TENANT_LOGIN_PASSWORD_NOT_CHECKED',
        ]);
      } finally {
        await store.close();
      }
      const error = await expectStoreError(() => openStore({ url: url.toString(), tenantUrl: url.toString() }), 'STORE_UNSAFE');
      expect(error.message).toMatch(/owns the database/);
      expect(error.message).toMatch(/CREATEROLE/);
    } finally {
      await admin.query(`drop database if exists ${database} with (force)`);
      await admin.query(`drop owned by ${role}`).catch(() => undefined);
      await admin.query(`drop role if exists ${role}`);
      await admin.end();
    }
  });
});
