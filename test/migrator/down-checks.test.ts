/**
 * `migrate down` checked before it starts (#23 item 4), on the PostgreSQL server as the
 * documented owner sees it: a login that is not a superuser, for which the tenant tables force
 * row-level security and show no row.
 *
 * - A run that a step would refuse is refused before its first step, with every step's reasons;
 *   the database is as it was, and the store still opens.
 * - A revert that was interrupted is finished first and is not counted; `to` names the end state.
 * - Progress is recorded per statement, so a concurrent index build that finished is not built
 *   again when an interrupted run resumes.
 */
import pg from 'pg';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ORG_ID, openStore } from 'engine-store';
import { openDatabase, type Database } from '../../engine/infra/store/connection/database.ts';
import { migrateDown, migrateUp, migrationStatus, type StatementPosition } from '../../engine/infra/store/migrator/runner.ts';
import { parseMigrationFile, readMigrationFiles } from '../../engine/infra/store/migrator/migration-files.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { withDatabaseName } from '../support/servers.ts';
import { expectStoreError } from '../support/assertions.ts';

const names = readMigrationFiles().map((file) => file.name);
const TENANCY_SCHEMA = '20261128120000_add_multitenant_schema';
const MULTITENANCY = '20261128120100_update_existing_tables_for_multitenancy';
const SCOPED_KEYS = '20261128120200_key_existing_tables_by_org';
const INDEXES = '20261128120300_index_existing_tables_by_org';
const AUDIT_TRAIL = '20261205120000_add_audit_trail';
/** The steps after the single-tenant baseline: every multi-tenancy migration. */
const AFTER_BASELINE = names.filter((name) => name >= TENANCY_SCHEMA).length;

/** A database owned by a login that is neither a superuser nor exempt from row-level security. */
async function ownedByPlainLogin(): Promise<{ url: string; drop(): Promise<void> }> {
  const tag = randomBytes(4).toString('hex');
  const role = `es_down_owner_${tag}`;
  const database = `es_test_down_${tag}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create role ${role} login createrole nosuperuser nobypassrls`);
  await admin.query(`create database ${database} owner ${role}`);
  await admin.end();
  const url = new URL(withDatabaseName(serverUrl!, database));
  url.username = role;
  return {
    url: url.toString(),
    async drop() {
      const cleanup = new pg.Client({ connectionString: serverUrl });
      await cleanup.connect();
      await cleanup.query(`drop database if exists ${database} with (force)`);
      await cleanup.query(`drop role if exists ${role}`);
      await cleanup.end();
    },
  };
}

async function applied(db: Database): Promise<string[]> {
  return (await migrationStatus(db)).migrations.filter((entry) => entry.state === 'applied').map((entry) => entry.name);
}

describe.skipIf(!serverUrl)('migrate down, checked before its first step (non-superuser owner)', () => {
  let database: { url: string; drop(): Promise<void> };
  let db: Database;

  beforeAll(async () => {
    database = await ownedByPlainLogin();
    const store = await openStore({ url: database.url, migrate: true });
    try {
      const org = await store.organizations.create({ name: 'Acme' });
      await store.withOrg(org.id, async (tx) => {
        await tx.users.create({ email: 'ada@acme.example', role: 'admin' });
        // In a table with no policy for the owner: outside the check, the owner reads no row of it.
        await tx.workflows.upsert({ workflowExecId: randomUUID(), workflowId: 'acme-flow', status: 'running' });
      });
      await store.withOrg(DEFAULT_ORG_ID, (tx) => tx.users.create({ email: 'grace@default.example', role: 'admin' }));
    } finally {
      await store.close();
    }
    db = await openDatabase({ url: database.url, poolSize: 2 });
  }, 120_000);

  afterAll(async () => {
    await db?.close();
    await database?.drop();
  });

  const forcedTables = async () =>
    (
      await db.query<{ name: string }>(
        `select relname as name from pg_class where relnamespace = 'public'::regnamespace and relforcerowsecurity order by relname`,
      )
    ).rows.map((row) => row.name);

  it('refuses every step that would refuse, with the whole list, before reverting any; forced or not, the database is as it was', async () => {
    const forcedBefore = await forcedTables();
    expect(forcedBefore).toContain('users');
    for (const force of [false, true]) {
      const lines: string[] = [];
      const error = await expectStoreError(migrateDown(db, { count: AFTER_BASELINE, force, log: (line) => lines.push(line) }), 'CONFLICT');
      expect(error.message).toMatch(
        new RegExp(`^reverting ${AFTER_BASELINE} migration\\(s\\) was refused before the first of them, so nothing was reverted:\n`),
      );
      const refusals = error.details.refusals!.map((refusal) => `${refusal.migration} ${refusal.reason}`);
      expect(refusals).toEqual([
        // The audit trail holds the history of Acme and its user: dropping it takes --force.
        ...(force ? [] : ['audit_events', 'audit_heads'].map(() => `${AUDIT_TRAIL} would_drop_rows`)),
        `${SCOPED_KEYS} down_guard`,
        `${MULTITENANCY} down_guard`,
        `${MULTITENANCY} down_guard`,
        `${TENANCY_SCHEMA} down_guard`,
        ...(force ? [] : ['users', 'organizations'].map(() => `${TENANCY_SCHEMA} would_drop_rows`)),
      ]);
      expect(error.message).toMatch(
        /refusing to drop the organization-scoped keys: engine state belongs to organizations other than default/,
      );
      expect(error.message).toMatch(/refusing to remove org_id: engine state belongs to organizations other than default/);
      expect(error.message).toMatch(/refusing to remove the default organization: it has users \(remove its users first\)/);
      expect(error.message).toMatch(/refusing to drop the tenancy tables: organizations other than default still exist/);
      if (!force) expect(error.message).toMatch(/would drop table users, which holds rows .*--force/);
      expect(error.details).toMatchObject(
        force ? { migration: SCOPED_KEYS, reason: 'down_guard' } : { migration: AUDIT_TRAIL, reason: 'would_drop_rows' },
      );
      expect(lines).toEqual([`checking the ${AFTER_BASELINE} step(s) before reverting any`]);
      expect(await applied(db)).toEqual(names);
    }
    // Row-level security is forced as before: the check's lifting of it was rolled back.
    expect(await forcedTables()).toEqual(forcedBefore);
    const store = await openStore({ url: database.url });
    await store.close();
  });

  it('reverts every step once nothing refuses (the run is checked again at each step)', async () => {
    // --force: the audit trail's events of Acme would go with it.
    const steps = await migrateDown(db, { to: SCOPED_KEYS, force: true });
    expect(steps.map((step) => step.name)).toEqual(names.filter((name) => name > SCOPED_KEYS).reverse());
    expect(await applied(db)).toEqual(names.filter((name) => name <= SCOPED_KEYS));
    expect(await migrateDown(db, { to: SCOPED_KEYS })).toEqual([]);
    await migrateUp(db);
  }, 120_000);

  it('refuses a count together with a target, a target that does not exist or is not applied', async () => {
    await expectStoreError(migrateDown(db, { count: 1, to: MULTITENANCY }), 'INVALID_INPUT', 'to');
    await expectStoreError(migrateDown(db, { to: '20990101000000_nothing' }), 'INVALID_INPUT', 'to');
    await migrateDown(db, { to: INDEXES, force: true });
    const error = await expectStoreError(migrateDown(db, { to: names.at(-1)! }), 'INVALID_INPUT', 'to');
    expect(error.details.reason).toBe('not_applied');
    await migrateUp(db);
  }, 120_000);
});

describe.skipIf(!serverUrl)('an interrupted revert, and resume points per statement', () => {
  let server: { url: string; drop(): Promise<void> };
  let db: Database;

  beforeAll(async () => {
    server = await createServerDatabase();
    db = await openDatabase({ url: server.url, poolSize: 2 });
    await migrateUp(db);
  }, 120_000);

  afterAll(async () => {
    await db?.close();
    await server?.drop();
  });

  /**
   * Stops the run (its signal) just before statement `at` (0-based) of `migration`'s `direction`:
   * the signal is given at the statement before, and the runner stops at its next boundary.
   */
  function stopBefore(migration: string, direction: 'up' | 'down', at: number) {
    const stop = new AbortController();
    return {
      signal: stop.signal,
      beforeStatement: (position: StatementPosition) => {
        if (position.migration === migration && position.direction === direction && position.index === at - 1) stop.abort();
      },
    };
  }

  const indexOids = async () =>
    (
      await db.query<{ name: string; oid: number }>(
        `select relname as name, oid::int as oid from pg_class where relkind = 'i' and relname ~ '^(workflow_states|task_states|schedules)_org_id_.*_idx$' order by relname`,
      )
    ).rows;

  it('after an interrupted revert, down N finishes it and then reverts N more; down --to stops where it says', async () => {
    // The latest migration that runs outside a transaction: one inside a transaction is never half reverted.
    const resumable = '20261128150000_drop_single_tenant_indexes';
    const before = names[names.indexOf(resumable) - 1]!;
    await migrateDown(db, { to: resumable });
    await expectStoreError(migrateDown(db, stopBefore(resumable, 'down', 3)), 'MIGRATION_INTERRUPTED');
    expect((await migrationStatus(db)).migrations.find((entry) => entry.name === resumable)?.state).toBe('partly_reverted');
    const lines: string[] = [];
    const steps = await migrateDown(db, { count: 1, log: (line) => lines.push(line) });
    expect(steps.map((step) => step.name)).toEqual([resumable, before]);
    expect(lines).toContainEqual(`${resumable} was interrupted while being reverted; finishing that first (it is not counted)`);
    await migrateUp(db, { to: resumable });

    await expectStoreError(migrateDown(db, stopBefore(resumable, 'down', 3)), 'MIGRATION_INTERRUPTED');
    expect((await migrateDown(db, { to: before })).map((step) => step.name)).toEqual([resumable]);
    expect(await applied(db)).toEqual(names.slice(0, names.indexOf(resumable)));
    await migrateUp(db);
  }, 120_000);

  it('a run stopped at the third index build resumes there: the two built before it are not built again', async () => {
    await migrateDown(db, { to: names[names.indexOf(INDEXES) - 1]! });
    // Statements: SET, then a drop and a build for each index; the third build is statement 7.
    await expectStoreError(migrateUp(db, { to: INDEXES, ...stopBefore(INDEXES, 'up', 6) }), 'MIGRATION_INTERRUPTED');
    const status = (await migrationStatus(db)).migrations.find((entry) => entry.name === INDEXES)!;
    // The drop before the third build is redone with it: an interrupted build leaves an INVALID index only that drop clears.
    expect(status).toMatchObject({ state: 'partly_applied', progress: { done: 5, of: 21 } });
    const builtBefore = await indexOids();
    expect(builtBefore.map((index) => index.name)).toEqual(['workflow_states_org_id_created_at_idx', 'workflow_states_org_id_status_idx']);

    const lines: string[] = [];
    await migrateUp(db, { log: (line) => lines.push(line) });
    expect(lines).toContainEqual(`↑ ${INDEXES} (outside a transaction), resumed after 5 of its 21 statements`);
    const after = await indexOids();
    for (const index of builtBefore) expect(after).toContainEqual(index);
    expect(after).toHaveLength(10);
  }, 120_000);
});

describe('the down-guard marker', () => {
  const file = (up: string, down: string) =>
    parseMigrationFile('/m/20260101000000_x.sql', Buffer.from(`-- Up Migration\n${up}\n-- Down Migration\n${down}\n`));

  it('stands above a do block of the down section, or the file is refused', () => {
    const guarded = file(
      'create table x (id int);',
      "-- engine-store: down-guard\ndo $$ begin raise exception 'no'; end $$;\ndrop table x;",
    );
    expect(guarded.down).toHaveLength(2);
    for (const [up, down] of [
      ['-- engine-store: down-guard\ndo $$ begin null; end $$;', 'select 1;'],
      ['create table x (id int);', '-- engine-store: down-guard\ndrop table x;'],
    ] as const) {
      expect(() => file(up, down)).toThrow(/the down-guard marker at line \d+ must stand above a do block of the down section/);
    }
  });
});
