/**
 * A lost connection is an ordinary, typed error (PostgreSQL server only: the embedded database
 * has no connection to lose). The server ends a backend with pg_terminate_backend, as a
 * restart or a network cut would, at each point a transaction can be: in the middle of a
 * statement, between two statements, and during COMMIT. Each time the caller gets
 * CONNECTION_LOST, nothing half-done is committed, the process stays up (node-postgres emits
 * 'error' on the client, which must have a listener), and the next call works on the same
 * one-connection pool, because the broken connection was discarded instead of reused.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeOver, type Database, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { openDatabase } from '../../engine/infra/store/connection/database.ts';
import { withOrgSql } from '../support/trusted-sql.ts';

/** A well-formed key that no organization has: it reaches the database, which says NOT_FOUND. */
const UNKNOWN_KEY = `es_${'a'.repeat(12)}_${'b'.repeat(43)}`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Terminates the backend that `find` names as soon as it shows up in pg_stat_activity, and
 * waits until it is gone. `find` is a condition on pg_stat_activity's columns.
 */
async function terminateWhen(owner: Database, find: string, params: unknown[] = []): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt += 1) {
    const { rows } = await owner.query<{ pid: number }>(
      `select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and (${find})`,
      params,
    );
    if (rows.length > 0) {
      const pid = rows[0]!.pid;
      await owner.query('select pg_terminate_backend($1, 5000)', [pid]);
      return pid;
    }
    await sleep(10);
  }
  throw new Error(`no backend matched ${find}`);
}

describe.skipIf(!serverUrl)('a lost connection (PostgreSQL)', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let store: Store;
  /** A second owner connection, for the operator's side of each scenario. */
  let owner: Database;
  let orgId: string;

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    const db = await openDatabase({ url: server.url, poolSize: 1 });
    // One tenant connection: the call after a loss can only work if the broken one was
    // replaced, not handed out again.
    store = await storeOver(db, { tenantPoolSize: 1, scopeTimeouts: { lockMs: 30_000, statementMs: 30_000 } });
    owner = await openDatabase({ url: server.url, poolSize: 2 });
    orgId = (await store.organizations.create({ name: `Lost ${randomUUID().slice(0, 8)}` })).id;
    // A commit that takes its time: a deferred trigger that sleeps, for schedules of one workflow.
    await owner.exec(`
      create function test_slow_commit() returns trigger language plpgsql security definer set search_path = pg_catalog as $$
      begin perform pg_sleep(30); return null; end $$;
      create constraint trigger test_slow_commit after insert on schedules deferrable initially deferred
        for each row when (new.workflow_id = 'slow-commit') execute function test_slow_commit();
    `);
  });
  afterAll(async () => {
    await store?.close();
    await owner?.close();
    await server?.drop();
  });

  /** The next call, on the same one-connection pool, works and sees exactly what was committed. */
  async function expectHealthy(absentWorkflow?: string): Promise<void> {
    if (absentWorkflow)
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.workflows.get(absentWorkflow)),
        'NOT_FOUND',
      );
    else expect((await store.withOrg(orgId, (tx) => tx.workflows.list({ limit: 1 }))).items).toBeInstanceOf(Array);
    expect(await store.verifyApiKey(UNKNOWN_KEY)).toMatchObject({ ok: false, reason: 'NOT_FOUND' });
  }

  it('in the middle of a statement: CONNECTION_LOST, and nothing of the transaction is committed', async () => {
    const workflowExecId = randomUUID();
    const killed = terminateWhen(owner, `query like '%pg_sleep(20)%' and state = 'active'`);
    const error = await expectStoreError(
      withOrgSql(store, orgId, async (tx) => {
        await tx.workflows.upsert({ workflowExecId, workflowId: 'lost', status: 'running' });
        await tx.query('select pg_sleep(20)');
      }),
      'CONNECTION_LOST',
    );
    await killed;
    expect(error.details.reason).toBe('57P01');
    expect(error.message).not.toMatch(/terminating connection|administrator/);
    await expectHealthy(workflowExecId);
  });

  it('between two statements: CONNECTION_LOST at the next one, nothing committed', async () => {
    const workflowExecId = randomUUID();
    await expectStoreError(
      withOrgSql(store, orgId, async (tx) => {
        await tx.workflows.upsert({ workflowExecId, workflowId: 'lost', status: 'running' });
        const { rows } = await tx.query<{ pid: number }>('select pg_backend_pid() as pid');
        // The backend is gone before the scope's next statement is sent.
        await owner.query('select pg_terminate_backend($1, 5000)', [rows[0]!.pid]);
        await sleep(50);
        await tx.workflows.upsert({ workflowExecId: randomUUID(), workflowId: 'lost', status: 'running' });
      }),
      'CONNECTION_LOST',
    );
    await expectHealthy(workflowExecId);
  });

  it('during COMMIT: CONNECTION_LOST saying the outcome is unknown (here: not committed)', async () => {
    // The COMMIT travels with the session reset, as one simple query.
    const killed = terminateWhen(owner, `query like 'commit;%' and state = 'active'`);
    const error = await expectStoreError(
      store.withOrg(orgId, (tx) => tx.schedules.create({ workflowId: 'slow-commit', cronExpression: '0 2 * * *' })),
      'CONNECTION_LOST',
    );
    await killed;
    expect(error.details.reason).toBe('commit_outcome_unknown');
    expect(error.message).toMatch(/may or may not have been committed/);
    const { rows } = await owner.query<{ n: number }>(`select count(*)::int as n from schedules where workflow_id = 'slow-commit'`);
    expect(rows[0]!.n).toBe(0);
    await expectHealthy();
  });

  it('a readOrg read waiting for a lock: CONNECTION_LOST, and the next read works', async () => {
    await owner.withSession(async (blocker) => {
      await blocker.exec('begin; lock table workflow_states in access exclusive mode');
      try {
        const killed = terminateWhen(owner, `usename = 'app_tenant' and wait_event_type = 'Lock'`);
        await expectStoreError(store.readOrg(orgId).workflows.list(), 'CONNECTION_LOST');
        await killed;
      } finally {
        await blocker.exec('rollback');
      }
    });
    expect((await store.readOrg(orgId).workflows.list()).items).toBeInstanceOf(Array);
  });

  it('verifyApiKey waiting for a lock: CONNECTION_LOST, and the next verification works', async () => {
    await owner.withSession(async (blocker) => {
      await blocker.exec('begin; lock table api_key_prefixes in access exclusive mode');
      try {
        const killed = terminateWhen(owner, `usename = 'app_tenant' and wait_event_type = 'Lock'`);
        await expectStoreError(store.verifyApiKey(UNKNOWN_KEY), 'CONNECTION_LOST');
        await killed;
      } finally {
        await blocker.exec('rollback');
      }
    });
    await expectHealthy();
  });

  it('an idle pooled connection that was terminated is replaced without an error', async () => {
    await store.withOrg(orgId, (tx) => tx.workflows.list({ limit: 1 }));
    await store.verifyApiKey(UNKNOWN_KEY);
    const { rows } = await owner.query<{ n: number }>(
      `select count(pg_terminate_backend(pid, 5000))::int as n from pg_stat_activity where datname = current_database() and usename = 'app_tenant'`,
    );
    // One of the tenant pool (tenantPoolSize 1), one of verification's own pool.
    expect(rows[0]!.n).toBe(2);
    await sleep(50);
    await expectHealthy();
  });
});
