/**
 * Every migration that runs outside a transaction survives a crash at every statement boundary,
 * in both directions (PostgreSQL server). The runner's connection is terminated by the server
 * just before statement k (and once more after the last statement, before the step is
 * recorded), as a kill -9 of the runner or a lost network would end it: its open block rolls
 * back, its advisory lock goes, and nothing after that point is written. Then:
 *
 * - `up` again reaches exactly the catalog of a clean run, with every row's digest unchanged;
 * - after the same crash, `down` and then `up` reach exactly the catalogs of clean runs.
 *
 * `migrate status` tells the interrupted migration as partly applied or partly reverted.
 */
import { describe, expect, it } from 'vitest';
import { diffCatalogs, readCatalog, type CatalogSnapshot } from '../../engine/infra/store/diagnostics/catalog.ts';
import { openDatabase, type Database } from '../../engine/infra/store/connection/database.ts';
import { diagnose } from '../../engine/infra/store/diagnostics/doctor.ts';
import {
  migrateDown,
  migrateUp,
  migrationStatus,
  type RunnerOptions,
  type StatementPosition,
} from '../../engine/infra/store/migrator/runner.ts';
import { readMigrationFiles, type MigrationFile } from '../../engine/infra/store/migrator/migration-files.ts';
import { StoreError } from '../../engine/infra/store/errors.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';

const files = readMigrationFiles();
const noTransaction = files.filter((file) => !file.transactional);
const BASELINE = '20250601090200_create_schedules';

/** The engine's rows, as text, per table: equal digests mean equal rows. */
async function rowDigests(db: Database): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const table of ['organizations', 'workflow_states', 'task_states', 'schedules']) {
    const { rows } = await db.query<{ digest: string }>(
      `select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as digest from ${table} t`,
    );
    digests[table] = rows[0]!.digest;
  }
  return digests;
}

interface Snapshot {
  catalog: CatalogSnapshot;
  rows: Record<string, string>;
}

async function snapshot(db: Database): Promise<Snapshot> {
  return { catalog: await readCatalog(db), rows: await rowDigests(db) };
}

async function expectSnapshot(db: Database, expected: Snapshot, what: string): Promise<void> {
  expect(diffCatalogs(expected.catalog, await readCatalog(db)), what).toEqual([]);
  expect(await rowDigests(db), what).toEqual(expected.rows);
}

/** The engine's single-tenant rows, written before the multi-tenancy migrations. */
async function seedBaseline(db: Database): Promise<void> {
  await db.exec(`
    insert into workflow_states (workflow_exec_id, workflow_id, status)
      select ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'wf-' || (i % 5), 'running' from generate_series(1, 40) i;
    insert into task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, parent_state_id)
      select ('00000000-0000-4000-9000-' || lpad(i::text, 12, '0'))::uuid, 'task', ('00000000-0000-4000-8000-' || lpad((i % 40 + 1)::text, 12, '0'))::uuid,
             'wf-' || ((i % 40 + 1) % 5), 'agent', 'pending',
             case when i > 40 then ('00000000-0000-4000-9000-' || lpad((i - 40)::text, 12, '0'))::uuid end
      from generate_series(1, 80) i;
    insert into schedules (id, workflow_id, cron_expression)
      select ('00000000-0000-4000-a000-' || lpad(i::text, 12, '0'))::uuid, 'wf-' || i, '0 2 * * *' from generate_series(1, 10) i;
  `);
}

/** A database with the engine's rows, at the migration before `file`, and its snapshots around `file`. */
async function prepare(file: MigrationFile) {
  const previous = files[files.indexOf(file) - 1]!.name;
  const server = await createServerDatabase();
  const db = await openDatabase({ url: server.url, poolSize: 2 });
  // The operator's connection, which ends the runner's.
  const killer = await openDatabase({ url: server.url, poolSize: 1 });
  await migrateUp(db, { to: BASELINE });
  await seedBaseline(db);
  await migrateUp(db, { to: previous });
  const before = await snapshot(db);
  await migrateUp(db, { to: file.name });
  const after = await snapshot(db);
  await migrateDown(db);
  await expectSnapshot(db, before, 'a clean down');

  /** Runs `run`, whose runner connection the server ends just before statement `at` of `direction`. */
  async function crash(
    direction: 'up' | 'down',
    at: number,
    run: (hooks: Pick<RunnerOptions, 'beforeStatement'>) => Promise<unknown>,
  ): Promise<void> {
    let fired = false;
    const beforeStatement = async (position: StatementPosition) => {
      if (fired || position.migration !== file.name || position.direction !== direction || position.index !== at) return;
      fired = true;
      // The runner is the session holding the migration lock.
      await killer.query(
        `select pg_terminate_backend(pid, 5000) from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`,
      );
    };
    const outcome = await run({ beforeStatement }).then(
      () => 'completed',
      (error: unknown) => (error instanceof StoreError ? error.code : String(error)),
    );
    expect(outcome, `${direction} killed before statement ${at + 1}`).toBe('CONNECTION_LOST');
    expect(fired, `${direction} reached statement ${at + 1}`).toBe(true);
  }

  async function stateOf(): Promise<string | undefined> {
    return (await migrationStatus(db)).migrations.find((entry) => entry.name === file.name)?.state;
  }

  return {
    db,
    url: server.url,
    previous,
    before,
    after,
    crash,
    stateOf,
    async dispose() {
      await db.close();
      await killer.close();
      await server.drop();
    },
  };
}

// Each migration and direction on a database of its own, side by side: the work is the server's.
describe.skipIf(!serverUrl).concurrent('a crash at every statement boundary of a migration outside a transaction', () => {
  for (const file of noTransaction) {
    it(`${file.name} up, killed before each of its ${file.up.length} statements and before it is recorded: up completes it; down then up reverts and re-applies it`, async () => {
      const { db, before, after, crash, stateOf, dispose } = await prepare(file);
      try {
        for (let at = 0; at <= file.up.length; at += 1) {
          const when = `up killed before statement ${at + 1} of ${file.up.length}`;
          await crash('up', at, (hooks) => migrateUp(db, { to: file.name, ...hooks }));
          expect(await stateOf(), when).toBe('partly_applied');
          await migrateUp(db, { to: file.name });
          await expectSnapshot(db, after, `${when}, then up`);
          await migrateDown(db);

          await crash('up', at, (hooks) => migrateUp(db, { to: file.name, ...hooks }));
          await migrateDown(db);
          await expectSnapshot(db, before, `${when}, then down`);
          await migrateUp(db, { to: file.name });
          await expectSnapshot(db, after, `${when}, then down and up`);
          await migrateDown(db);
        }
      } finally {
        await dispose();
      }
    }, 600_000);

    it(`${file.name} down, killed before each of its ${file.down.length} statements and before it is recorded: up re-applies it; down then up reverts and re-applies it`, async () => {
      const { db, previous, before, after, crash, stateOf, dispose } = await prepare(file);
      try {
        await migrateUp(db, { to: file.name });
        for (let at = 0; at <= file.down.length; at += 1) {
          const when = `down killed before statement ${at + 1} of ${file.down.length}`;
          await crash('down', at, (hooks) => migrateDown(db, hooks));
          expect(await stateOf(), when).toBe('partly_reverted');
          await migrateUp(db, { to: file.name });
          await expectSnapshot(db, after, `${when}, then up`);

          await crash('down', at, (hooks) => migrateDown(db, hooks));
          // The same end state named again: the interrupted revert is finished, nothing more.
          await migrateDown(db, { to: previous });
          await expectSnapshot(db, before, `${when}, then down`);
          await migrateUp(db, { to: file.name });
          await expectSnapshot(db, after, `${when}, then down and up`);
        }
      } finally {
        await dispose();
      }
    }, 600_000);
  }
});

describe.skipIf(!serverUrl)('a run stopped by its signal (Ctrl-C in the CLI)', () => {
  const indexes = files.find((file) => file.name === '20261128120300_index_existing_tables_by_org')!;

  it('cancels the statement in flight on the server, releases the lock, says where it stopped, and the next up finishes the migration', async () => {
    const { db, url, after, stateOf, dispose } = await prepare(indexes);
    const operator = await openDatabase({ url, poolSize: 2 });
    try {
      await operator.withSession(async (writer) => {
        // A writer's open transaction: a concurrent build records its index, then waits for it.
        await writer.exec('begin; lock table workflow_states in row exclusive mode');
        const stop = new AbortController();
        const run = migrateUp(db, { to: indexes.name, signal: stop.signal });
        const waiting = async () =>
          (
            await operator.query<{ n: number }>(
              `select count(*)::int as n from pg_stat_activity where datname = current_database() and query ilike 'create index concurrently%' and wait_event_type = 'Lock'`,
            )
          ).rows[0]!.n;
        for (let tries = 0; (await waiting()) === 0; tries += 1) {
          if (tries > 500) throw new Error('the build never waited');
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        stop.abort();
        const error = await run.then(
          () => undefined,
          (failure: unknown) => failure as StoreError,
        );
        expect(error).toBeInstanceOf(StoreError);
        expect(error!.code).toBe('MIGRATION_INTERRUPTED');
        expect(error!.message).toMatch(
          /was stopped during statement 3 of 21 \(line \d+\), which was cancelled; .*partly applied.*migrate up to finish it/,
        );
        await writer.exec('rollback');
      });
      // Nothing of the run is left on the server: no statement, no lock.
      const { rows: left } = await operator.query<{ statements: number; locks: number }>(
        `select (select count(*)::int from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query ilike '%concurrently%' and state = 'active') as statements,
                (select count(*)::int from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())) as locks`,
      );
      expect(left[0]).toEqual({ statements: 0, locks: 0 });
      expect(await stateOf()).toBe('partly_applied');
      const status = (await migrationStatus(db)).migrations.find((entry) => entry.name === indexes.name)!;
      expect(status.progress).toEqual({ done: 0, of: 21 });

      const { findings } = await diagnose(db);
      expect(findings).toContainEqual(expect.objectContaining({ code: 'MIGRATION_INTERRUPTED', object: indexes.name }));
      expect(findings).toContainEqual(
        expect.objectContaining({ code: 'INVALID_INDEX', object: 'workflow_states.workflow_states_org_id_created_at_idx' }),
      );

      await migrateUp(db, { to: indexes.name });
      await expectSnapshot(db, after, 'up after the stop');
      expect((await diagnose(db)).findings.map((finding) => finding.code)).not.toContain('INVALID_INDEX');
    } finally {
      await operator.close();
      await dispose();
    }
  }, 120_000);
});
