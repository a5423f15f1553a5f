/**
 * Session.pipeline() and the laziness of withOrg(), on every backend.
 *
 * 1. pipeline(): one result per statement, in order; the statements form one transaction that
 *    commits at the end or, when one fails, rolls back entirely and rejects with that failure
 *    (the database's own error, with its SQLSTATE); after a leading BEGIN the transaction stays
 *    open (or aborted) on the session; parameters keep their types; statements prepared on the
 *    connection keep working after a pipeline in which they failed at execution, failed to
 *    parse, or were skipped.
 * 2. withOrg() sends nothing until the callback's first statement, which travels with entering
 *    the scope: a callback without statements still resolves, statements issued concurrently
 *    commit together, and a first statement that fails leaves the pooled connection clean.
 *
 * The pipeline tests work on a scratch table of their own (pipe_t) in the file's database.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Session } from '../../engine/infra/store/connection/database.ts';
import { databaseErrorFields } from '../../engine/infra/store/connection/database-errors.ts';
import { StoreError, storeOver, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { pooledConnections } from '../support/connections.ts';
import { withOrgSql } from '../support/trusted-sql.ts';

const tag = () => randomBytes(4).toString('hex');

/** What `promise` rejected with; fails the test when it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  const outcome = await promise.then(
    (value: unknown) => ({ resolved: true as const, value }),
    (error: unknown) => ({ resolved: false as const, error }),
  );
  expect(outcome.resolved ? `resolved with ${JSON.stringify(outcome.value)}` : 'rejected').toBe('rejected');
  return outcome.resolved ? undefined : outcome.error;
}

/** The promise rejects with the database's own error (not a StoreError) of SQLSTATE `sqlstate`. */
async function expectDatabaseError(promise: Promise<unknown>, sqlstate: string): Promise<void> {
  const error = await rejection(promise);
  expect(error).not.toBeInstanceOf(StoreError);
  expect(databaseErrorFields(error)?.code, `expected SQLSTATE ${sqlstate}, got ${String(error)}`).toBe(sqlstate);
}

describe.each(backends)('pipelines and withOrg ($name)', (backend) => {
  let database: TestDatabase;
  let store: Store;
  let owner: string;

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
    await database.db.exec('create table pipe_t (n int primary key, label text)');
    owner = (await database.db.query<{ user: string }>('select current_user::text as "user"')).rows[0]!.user;
    expect(owner).not.toBe('app_tenant');
  });

  afterAll(async () => {
    await database?.dispose();
  });

  const session = <T>(work: (session: Session) => Promise<T>): Promise<T> => database.db.withSession(work);

  async function numbers(): Promise<number[]> {
    const { rows } = await database.db.query<{ n: number }>('select n from pipe_t order by n');
    return rows.map((row) => row.n);
  }

  // -------------------------------------------------------------------------------------------

  describe('Session.pipeline', () => {
    beforeEach(async () => {
      await database.db.exec('truncate pipe_t');
    });

    it('resolves one result per statement, in order, each with its own rows and row count', async () => {
      const results = await session((s) =>
        s.pipeline([
          { sql: `insert into pipe_t (n, label) values (1, 'one'), (2, 'two') returning n, label` },
          { sql: 'select $1::text as word', params: ['second'] },
          { sql: 'select n from generate_series(10, 12) as n order by n' },
          { sql: `update pipe_t set label = 'ONE' where n = 1` },
          { sql: 'select n, label from pipe_t order by n' },
          { sql: 'select count(*)::int as c from pipe_t where n > 100' },
        ]),
      );
      expect(results).toHaveLength(6);
      expect(results[0]).toEqual({
        rows: [
          { n: 1, label: 'one' },
          { n: 2, label: 'two' },
        ],
        rowCount: 2,
      });
      expect(results[1]).toEqual({ rows: [{ word: 'second' }], rowCount: 1 });
      expect(results[2]).toEqual({ rows: [{ n: 10 }, { n: 11 }, { n: 12 }], rowCount: 3 });
      expect(results[3]).toEqual({ rows: [], rowCount: 1 });
      // A later statement sees what the earlier ones of the same pipeline did.
      expect(results[4]!.rows).toEqual([
        { n: 1, label: 'ONE' },
        { n: 2, label: 'two' },
      ]);
      expect(results[5]!.rows).toEqual([{ c: 0 }]);
    });

    it('a statement run only for its effect (rows: false) has its effect, and no rows come back', async () => {
      const results = await session((s) =>
        s.pipeline([
          { sql: `select set_config('x.effect', $1, true) as value`, params: ['done'], prepare: true, rows: false },
          { sql: `select current_setting('x.effect', true) as value` },
          { sql: 'select n from generate_series(1, 3) as n', rows: false },
        ]),
      );
      expect(results.map((result) => result.rows)).toEqual([[], [{ value: 'done' }], []]);
      expect(results[2]!.rowCount).toBe(3);
    });

    it('commits at the end: the rows are there for every later connection', async () => {
      await session((s) =>
        s.pipeline([{ sql: 'insert into pipe_t (n) values (1)' }, { sql: 'insert into pipe_t (n) values ($1), ($2)', params: [2, 3] }]),
      );
      expect(await numbers()).toEqual([1, 2, 3]);
    });

    it('an empty pipeline resolves with no results', async () => {
      expect(await session((s) => s.pipeline([]))).toEqual([]);
    });

    it('a failing statement rejects with its SQLSTATE, skips the rest and rolls back the earlier ones', async () => {
      await database.db.query('insert into pipe_t (n) values (100)');
      await session(async (s) => {
        await expectDatabaseError(
          s.pipeline([
            { sql: 'insert into pipe_t (n) values (1), (2)' },
            { sql: `update pipe_t set label = 'changed' where n = 100` },
            { sql: 'insert into pipe_t (n) values (1)' }, // unique_violation
            { sql: 'insert into pipe_t (n) values (3)' },
          ]),
          '23505',
        );
        // The session is usable again, and the earlier statements are undone.
        expect((await s.query('select n, label from pipe_t order by n')).rows).toEqual([{ n: 100, label: null }]);
      });
      expect(await numbers()).toEqual([100]);
    });

    it('a statement that fails to parse rolls back the statements before it as well', async () => {
      await session(async (s) => {
        await expectDatabaseError(
          s.pipeline([{ sql: 'insert into pipe_t (n) values (1)' }, { sql: 'select * from pipe_no_such_table' }]),
          '42P01',
        );
        await expectDatabaseError(s.pipeline([{ sql: 'insert into pipe_t (n) values (2)' }, { sql: 'selec 1' }]), '42601');
        await expectDatabaseError(
          s.pipeline([{ sql: 'insert into pipe_t (n) values (3)' }, { sql: 'select $1::int', params: ['not a number'] }]),
          '22P02',
        );
      });
      expect(await numbers()).toEqual([]);
    });

    it('after a leading BEGIN the transaction stays open: the session sees the rows, ROLLBACK discards them', async () => {
      await session(async (s) => {
        const results = await s.pipeline([
          { sql: 'begin' },
          { sql: 'insert into pipe_t (n) values (1), (2)' },
          { sql: 'select count(*)::int as c from pipe_t' },
        ]);
        expect(results).toHaveLength(3);
        expect(results[2]!.rows).toEqual([{ c: 2 }]);
        expect((await s.query<{ n: number }>('select n from pipe_t order by n')).rows).toEqual([{ n: 1 }, { n: 2 }]);
        if (backend.name === 'postgres') {
          // Not committed: another connection does not see the rows yet. (PGlite has a single
          // connection, held by this session.)
          expect(await numbers()).toEqual([]);
        }
        await s.query('rollback');
        expect((await s.query('select n from pipe_t')).rows).toEqual([]);
      });
      expect(await numbers()).toEqual([]);
    });

    it('after a leading BEGIN the session commits when it says so', async () => {
      await session(async (s) => {
        await s.pipeline([{ sql: 'begin' }, { sql: 'insert into pipe_t (n) values ($1)', params: [7] }]);
        await s.query('insert into pipe_t (n) values (8)');
        await s.query('commit');
      });
      expect(await numbers()).toEqual([7, 8]);
    });

    it('after a leading BEGIN a failure leaves the transaction aborted until ROLLBACK', async () => {
      await session(async (s) => {
        await expectDatabaseError(
          s.pipeline([{ sql: 'begin' }, { sql: 'insert into pipe_t (n) values (1)' }, { sql: 'select 1 / 0' }]),
          '22012',
        );
        // in_failed_sql_transaction: the explicit transaction is still there, aborted.
        await expectDatabaseError(s.query('select 1'), '25P02');
        await s.query('rollback');
        expect((await s.query('select count(*)::int as c from pipe_t')).rows).toEqual([{ c: 0 }]);
      });
      expect(await numbers()).toEqual([]);
    });

    it('parameters keep their types: text, int, null and jsonb from a JSON string', async () => {
      const text = `it's a "quote", a backslash \\ and $1`;
      const json = { list: [1, 'two', null, { three: true }], nested: { n: 1.5 }, unicode: 'é✓' };
      const [selected, inserted, read] = await session((s) =>
        s.pipeline([
          {
            sql: `select $1::text as t, $2::int as i, $3::text as n, $3::text is null as "isNull", $4::jsonb as j, jsonb_typeof($4::jsonb -> 'list') as kind`,
            params: [text, 41, null, JSON.stringify(json)],
          },
          { sql: 'insert into pipe_t (n, label) values ($1, $2), ($3, $4) returning n', params: [1, text, 2, null] },
          { sql: 'select n, label from pipe_t order by n' },
        ]),
      );
      expect(selected!.rows).toEqual([{ t: text, i: 41, n: null, isNull: true, j: json, kind: 'array' }]);
      expect(typeof selected!.rows[0]!.i).toBe('number');
      expect(inserted!.rows).toEqual([{ n: 1 }, { n: 2 }]);
      expect(read!.rows).toEqual([
        { n: 1, label: text },
        { n: 2, label: null },
      ]);
    });

    it('set_config(..., true) is seen by the next statement of the pipeline and gone after it', async () => {
      await session(async (s) => {
        const value = `v-${tag()}`;
        const [set, seen] = await s.pipeline([
          { sql: `select set_config('x.y', $1, true) as set`, params: [value] },
          { sql: `select current_setting('x.y', true) as seen` },
        ]);
        expect(set!.rows).toEqual([{ set: value }]);
        expect(seen!.rows).toEqual([{ seen: value }]);
        // The pipeline's transaction ended with it: the local setting is gone on this connection.
        const after = (await s.query<{ seen: string | null }>(`select current_setting('x.y', true) as seen`)).rows[0]!.seen;
        expect([null, '']).toContain(after);
      });
    });

    describe('prepared statements', () => {
      it('stay prepared and give each call its own parameters', async () => {
        const sql = `select $1::int * 2 as doubled, $2::text as word`;
        await session(async (s) => {
          for (const n of [1, 2, 3]) {
            const [first, plain, again] = await s.pipeline([
              { sql, params: [n, `w${n}`], prepare: true },
              { sql: 'select $1::int as plain', params: [n] },
              { sql, params: [n + 10, null], prepare: true },
            ]);
            expect(first!.rows).toEqual([{ doubled: n * 2, word: `w${n}` }]);
            expect(plain!.rows).toEqual([{ plain: n }]);
            expect(again!.rows).toEqual([{ doubled: (n + 10) * 2, word: null }]);
          }
          // The same SQL prepared through query() on the same connection does not collide.
          expect((await s.query(sql, [5, 'q'], { prepare: true })).rows).toEqual([{ doubled: 10, word: 'q' }]);
          expect((await s.pipeline([{ sql, params: [6, 'p'], prepare: true }]))[0]!.rows).toEqual([{ doubled: 12, word: 'p' }]);
          expect((await s.query(sql, [7, 'q'], { prepare: true })).rows).toEqual([{ doubled: 14, word: 'q' }]);
        });
      });

      it('a prepared statement that failed at execution works on the next call', async () => {
        const sql = `select 100 / $1::int as q`;
        await session(async (s) => {
          // Parsed in this pipeline, then failed: division by zero.
          await expectDatabaseError(
            s.pipeline([
              { sql: 'select 1', prepare: true },
              { sql, params: [0], prepare: true },
            ]),
            '22012',
          );
          expect((await s.pipeline([{ sql, params: [4], prepare: true }]))[0]!.rows).toEqual([{ q: 25 }]);
          // Prepared already, then failed again after succeeding once in the same pipeline.
          await expectDatabaseError(
            s.pipeline([
              { sql, params: [5], prepare: true },
              { sql, params: [0], prepare: true },
            ]),
            '22012',
          );
          expect(
            (
              await s.pipeline([
                { sql, params: [10], prepare: true },
                { sql: 'select 1', prepare: true },
              ])
            )[0]!.rows,
          ).toEqual([{ q: 10 }]);
          // A failure inside a transaction the pipeline left open does not unprepare it either.
          await expectDatabaseError(s.pipeline([{ sql: 'begin' }, { sql, params: [0], prepare: true }]), '22012');
          await s.query('rollback');
          expect((await s.pipeline([{ sql, params: [50], prepare: true }]))[0]!.rows).toEqual([{ q: 2 }]);
        });
      });

      it('a prepared statement whose Parse failed works once the table it names exists', async () => {
        const table = `pipe_late_${tag()}`;
        const sql = `select count(*)::int as c from ${table}`;
        await session(async (s) => {
          await expectDatabaseError(s.pipeline([{ sql, prepare: true }]), '42P01');
          await expectDatabaseError(
            s.pipeline([
              { sql: 'select 1', prepare: true },
              { sql, prepare: true },
            ]),
            '42P01',
          );
          await s.exec(`create table ${table} (n int)`);
          expect((await s.pipeline([{ sql, prepare: true }]))[0]!.rows).toEqual([{ c: 0 }]);
          await s.query(`insert into ${table} values (1), (2)`);
          const [first, second] = await s.pipeline([
            { sql, prepare: true },
            { sql, prepare: true },
          ]);
          expect(first!.rows).toEqual([{ c: 2 }]);
          expect(second!.rows).toEqual([{ c: 2 }]);
        });
      });

      it('a prepared statement skipped after an earlier failure works on the next call', async () => {
        const sql = `select $1::text || '!' as shout`;
        await session(async (s) => {
          await expectDatabaseError(s.pipeline([{ sql: 'select 1 / 0' }, { sql, params: ['never'], prepare: true }]), '22012');
          expect((await s.pipeline([{ sql, params: ['hey'], prepare: true }]))[0]!.rows).toEqual([{ shout: 'hey!' }]);
          expect((await s.pipeline([{ sql, params: ['again'], prepare: true }]))[0]!.rows).toEqual([{ shout: 'again!' }]);
        });
      });

      it('keep working on every pooled connection, across sessions', async () => {
        const sql = `select $1::int + 1 as next`;
        const hold = { sql: 'select pg_sleep($1)', params: [backend.name === 'postgres' ? 0.02 : 0] };
        const rounds = await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            session(async (s) => {
              if (i % 3 === 0) await expectDatabaseError(s.pipeline([hold, { sql, params: ['x'], prepare: true }]), '22P02');
              const [result] = await s.pipeline([{ sql, params: [i], prepare: true }, hold]);
              return result!.rows[0];
            }),
          ),
        );
        expect(rounds).toEqual(Array.from({ length: 12 }, (_, i) => ({ next: i + 1 })));
      });
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('withOrg is lazy', () => {
    async function newOrg(): Promise<string> {
      return (await store.organizations.create({ name: `Org ${tag()}` })).id;
    }

    async function expectCleanPool(): Promise<void> {
      const states = await pooledConnections(store.db);
      for (const state of states) {
        expect(state.user).toBe(owner);
        expect([null, '']).toContain(state.org);
        expect(state.readOnly).toBe('off');
      }
      if (backend.name === 'postgres') expect(new Set(states.map((state) => state.pid)).size).toBe(6);
    }

    it('a callback without statements resolves with its value', async () => {
      const org = await newOrg();
      await expect(store.withOrg(org, async () => 42)).resolves.toBe(42);
      // The callback's own error passes through as it is.
      const own = new Error('own');
      await expect(
        store.withOrg(org, async () => {
          throw own;
        }),
      ).rejects.toBe(own);
      await expectCleanPool();
    });

    // On PGlite this once let a statement slip between the parts of the scope's first pipeline,
    // before the role and app.org_id were set: a session's statements now run in issue order.
    it('statements issued concurrently run in the scope and commit together', async () => {
      const org = await newOrg();
      const other = await newOrg();
      const foreign = randomUUID();
      await store.withOrg(other, (tx) => tx.workflows.upsert({ workflowExecId: foreign, workflowId: 'wf', status: 'running' }));
      const [a, b] = [randomUUID(), randomUUID()];
      const [upsertedA, upsertedB, scope] = await withOrgSql(store, org, (tx) =>
        Promise.all([
          tx.workflows.upsert({ workflowExecId: a, workflowId: 'wf', status: 'running' }),
          tx.workflows.upsert({ workflowExecId: b, workflowId: 'wf', status: 'pending' }),
          tx.query<{ user: string; org: string }>(`select current_user::text as "user", current_setting('app.org_id', true) as org`),
        ]),
      );
      expect(upsertedA).toMatchObject({ workflowExecId: a, orgId: org, status: 'running' });
      expect(upsertedB).toMatchObject({ workflowExecId: b, orgId: org, status: 'pending' });
      expect(scope.rows).toEqual([{ user: 'app_tenant', org }]);
      const listed = await store.withOrg(org, (tx) => tx.workflows.list());
      expect(listed.items.map((item) => item.workflowExecId).sort()).toEqual([a, b].sort());
      // Concurrent reads are confined to the organization as well.
      const [first, second] = await store.withOrg(org, (tx) => Promise.all([tx.workflows.list(), tx.workflows.list()]));
      expect(first.items.map((item) => item.workflowExecId).sort()).toEqual([a, b].sort());
      expect(second.items.map((item) => item.workflowExecId).sort()).toEqual([a, b].sort());
      await expectCleanPool();
    });

    it('a first statement that fails leaves the connection clean for the next withOrg', async () => {
      const org = await newOrg();
      for (let round = 0; round < 3; round += 1) {
        const error = await expectStoreError(
          store.withOrg(org, (tx) =>
            tx.tasks.upsert({
              taskExecId: randomUUID(),
              taskId: 't',
              workflowExecId: randomUUID(),
              workflowId: 'wf',
              component: 'task',
              status: 'running',
            }),
          ),
          'NOT_FOUND',
        );
        expect(error.details.field).toBe('workflowExecId');
        const workflowExecId = randomUUID();
        const written = await store.withOrg(org, (tx) =>
          tx.workflows.upsert({ workflowExecId, workflowId: 'after-failure', status: 'running' }),
        );
        expect(written).toMatchObject({ workflowExecId, orgId: org });
        expect(await store.withOrg(org, (tx) => tx.workflows.get(workflowExecId))).toEqual(written);
      }
      const { rows } = await store.db.query<{ user: string; org: string | null }>(
        `select current_user::text as "user", current_setting('app.org_id', true) as org`,
      );
      expect(rows[0]!.user).toBe(owner);
      expect([null, '']).toContain(rows[0]!.org);
      await expectCleanPool();
    });

    it('a failed first statement that the callback swallows commits nothing', async () => {
      const org = await newOrg();
      const workflowExecId = randomUUID();
      await expectStoreError(
        store.withOrg(org, async (tx) => {
          await tx.tasks
            .upsert({
              taskExecId: randomUUID(),
              taskId: 't',
              workflowExecId: randomUUID(),
              workflowId: 'wf',
              component: 'task',
              status: 'running',
            })
            .catch(() => undefined);
          return 'swallowed';
        }),
        'TRANSACTION_ABORTED',
      );
      // A statement after the failed first one is refused: the transaction is aborted.
      await expectStoreError(
        withOrgSql(store, org, async (tx) => {
          await tx.workflows.get(randomUUID()).catch(() => undefined);
          await tx.query('select 1 / 0').catch(() => undefined);
          return tx.workflows.upsert({ workflowExecId, workflowId: 'wf', status: 'running' });
        }),
        'TRANSACTION_ABORTED',
      );
      expect((await store.withOrg(org, (tx) => tx.workflows.list())).items).toEqual([]);
      await expectCleanPool();
    });
  });
});
