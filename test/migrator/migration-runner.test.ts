/**
 * The migration runner's guarantees, on scratch migration directories: order, bookkeeping,
 * checksums, atomic failure, mutual exclusion, and lock timeouts against a real blocker.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../engine/infra/store/connection/database.ts';
import { StoreError } from '../../engine/infra/store/errors.ts';
import { migrateDown, migrateUp, migrationStatus, MIGRATIONS_TABLE } from '../../engine/infra/store/migrator/runner.ts';
import { readMigrationFiles } from '../../engine/infra/store/migrator/migration-files.ts';
import { backends, createServerDatabase, serverUrl, type TestDatabase } from '../support/backends.ts';

function migration(upSql: string, downSql: string, { transactional = true } = {}): string {
  return `-- test migration\n${transactional ? '' : '-- engine-store: no-transaction\n'}-- Up Migration\n${upSql}\n-- Down Migration\n${downSql}\n`;
}

function migrationsDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'engine-store-migrations-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, `${name}.sql`), text);
  return dir;
}

async function rejection(promise: Promise<unknown>): Promise<StoreError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(StoreError);
  return error as StoreError;
}

async function tableExists(db: Database, table: string): Promise<boolean> {
  const { rows } = await db.query<{ present: boolean }>('select to_regclass($1) is not null as present', [table]);
  return rows[0]!.present;
}

const basic = {
  '20260101000000_create_a': migration('create table a (id int primary key);', 'drop table a;'),
  '20260101000100_create_b': migration('create table b (id int primary key);\ninsert into b values (1);', 'drop table b;'),
};

describe.each(backends)('migration runner on $name', (backend) => {
  let t: TestDatabase;
  const dirs: string[] = [];
  const dirOf = (files: Record<string, string>) => {
    const dir = migrationsDir(files);
    dirs.push(dir);
    return dir;
  };

  beforeAll(async () => {
    t = await backend.create();
  });
  // One database per backend, emptied between tests: cheaper than a new embedded database each.
  beforeEach(async () => {
    await t.db.exec('drop schema public cascade; create schema public;');
  });
  afterAll(async () => {
    await t.dispose();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('applies pending migrations in order, records each with its checksum, and reports progress', async () => {
    const dir = dirOf(basic);
    const lines: string[] = [];
    const steps = await migrateUp(t.db, { dir, log: (line) => lines.push(line) });
    expect(steps.map((step) => step.name)).toEqual(Object.keys(basic));
    expect(lines.filter((line) => line.startsWith('↑'))).toEqual(['↑ 20260101000000_create_a', '↑ 20260101000100_create_b']);
    expect(lines.filter((line) => /applied in \d+ ms/.test(line))).toHaveLength(2);
    const { rows } = await t.db.query<{ name: string; checksum: string }>(`select name, checksum from ${MIGRATIONS_TABLE} order by name`);
    expect(rows.map((row) => row.name)).toEqual(Object.keys(basic));
    expect(rows.every((row) => /^[0-9a-f]{64}$/.test(row.checksum))).toBe(true);
    expect(await migrateUp(t.db, { dir })).toEqual([]);
  });

  it('stops after the migration named by --to, and refuses a name that does not exist', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir, to: '20260101000000_create_a' });
    expect(await tableExists(t.db, 'a')).toBe(true);
    expect(await tableExists(t.db, 'b')).toBe(false);
    const error = await rejection(migrateUp(t.db, { dir, to: '20260101000200_nope' }));
    expect(error.code).toBe('INVALID_INPUT');
  });

  it('reports applied and pending migrations in status', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir, to: '20260101000000_create_a' });
    const status = await migrationStatus(t.db, { dir });
    expect(status.upToDate).toBe(false);
    expect(status.migrations.map((entry) => [entry.name, entry.state])).toEqual([
      ['20260101000000_create_a', 'applied'],
      ['20260101000100_create_b', 'pending'],
    ]);
  });

  it('leaves no trace of a transactional migration that fails half-way and does not record it', async () => {
    const dir = dirOf({
      ...basic,
      '20260101000200_half_way': migration(
        'create table c (id int primary key);\ninsert into c values (1);\ninsert into c values (1);\ncreate table d (id int);',
        'drop table c;',
      ),
    });
    const error = await rejection(migrateUp(t.db, { dir }));
    expect(error.code).toBe('MIGRATION_FAILED');
    expect(error.details.migration).toBe('20260101000200_half_way');
    expect(error.message).toMatch(/at line 5/);
    expect(error.message).toMatch(/nothing of it was applied/);
    expect(await tableExists(t.db, 'c')).toBe(false);
    expect(await tableExists(t.db, 'd')).toBe(false);
    expect(await tableExists(t.db, 'b')).toBe(true);
    const status = await migrationStatus(t.db, { dir });
    expect(status.migrations.find((entry) => entry.name === '20260101000200_half_way')?.state).toBe('pending');
  });

  it('names the failing statement but does not quote rows: the server detail of a failed unique index is left out', async () => {
    const dir = dirOf({
      '20260101000000_duplicates': migration(
        "create table dup (v text);\ninsert into dup values ('probe-secret-7'), ('probe-secret-7');\ncreate unique index dup_v_key on dup (v);",
        'drop table dup;',
      ),
    });
    const error = await rejection(migrateUp(t.db, { dir }));
    expect(error.code).toBe('MIGRATION_FAILED');
    expect(error.message).toMatch(/at line \d+: could not create unique index "dup_v_key"; nothing of it was applied/);
    expect(JSON.stringify(error.toJSON())).not.toMatch(/probe-secret-7/);
  });

  it('reads and upgrades the bookkeeping table of an earlier runner (no state, no progress): its rows stay applied', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir, to: '20260101000000_create_a' });
    const [row] = (await t.db.query<{ name: string; checksum: string }>(`select name, checksum from ${MIGRATIONS_TABLE}`)).rows;
    await t.db.exec(
      `drop table ${MIGRATIONS_TABLE}; create table ${MIGRATIONS_TABLE} (name text primary key, checksum text not null, applied_at timestamptz not null default now(), duration_ms integer not null)`,
    );
    await t.db.query(`insert into ${MIGRATIONS_TABLE} (name, checksum, duration_ms) values ($1, $2, 5)`, [row!.name, row!.checksum]);

    expect((await migrationStatus(t.db, { dir })).migrations.map((entry) => entry.state)).toEqual(['applied', 'pending']);
    expect((await migrateUp(t.db, { dir })).map((step) => step.name)).toEqual(['20260101000100_create_b']);
    const { rows } = await t.db.query<{ name: string; state: string; resume_at: number }>(
      `select name, state, resume_at from ${MIGRATIONS_TABLE} order by name`,
    );
    expect(rows).toEqual(Object.keys(basic).map((name) => ({ name, state: 'applied', resume_at: 0 })));
  });

  it('tells a migration outside a transaction that failed half-way as partly applied, and finishes it first when asked to revert it', async () => {
    const dir = dirOf({
      '20260101000000_create_a': basic['20260101000000_create_a'],
      '20260101000100_two_steps': migration(
        [
          'create table c (id int);',
          'begin;',
          'insert into c values (1);',
          'commit;',
          'insert into a values (1 / (select count(*) from b));',
          'create table d (id int);',
        ].join('\n'),
        'drop table if exists d;\ndrop table if exists c;\ndelete from a;',
        { transactional: false },
      ),
    });
    await t.db.exec('create table b (id int)');
    const error = await rejection(migrateUp(t.db, { dir }));
    expect(error.code).toBe('MIGRATION_FAILED');
    expect(error.message).toMatch(
      /partly applied \(migrate status shows how far\): run engine-store migrate up to finish it, or migrate down to revert it/,
    );
    const entry = (await migrationStatus(t.db, { dir })).migrations.find((candidate) => candidate.name === '20260101000100_two_steps');
    // Progress is recorded with the block: it resumes after it (statement 5 of 6).
    expect(entry).toMatchObject({ state: 'partly_applied', progress: { done: 4, of: 6 } });
    expect(entry?.hint).toMatch(/migrate up to finish it/);

    // Reverting it first finishes it (now that it can), then reverts the whole of it.
    await t.db.exec('insert into b values (1)');
    const lines: string[] = [];
    const reverted = await migrateDown(t.db, { dir, force: true, log: (line) => lines.push(line) });
    expect(reverted.map((step) => step.name)).toEqual(['20260101000100_two_steps']);
    expect(lines[0]).toMatch(/20260101000100_two_steps was interrupted while being applied; finishing that first/);
    expect(lines).toContainEqual(expect.stringMatching(/resumed after 4 of its 6 statements/));
    expect(await tableExists(t.db, 'c')).toBe(false);
    expect(await tableExists(t.db, 'd')).toBe(false);
    expect((await t.db.query('select id from a')).rows).toEqual([]);
    expect((await migrationStatus(t.db, { dir })).migrations.map((candidate) => candidate.state)).toEqual(['applied', 'pending']);
  });

  it('runs a no-transaction migration statement by statement, so that CONCURRENTLY works and a re-run completes it', async () => {
    const flaky = (fail: boolean) =>
      migration(
        [
          'drop index concurrently if exists a_id_idx;',
          'create index concurrently a_id_idx on a (id);',
          fail ? 'select 1 / 0;' : 'select 1;',
          'drop index concurrently if exists a_id2_idx;',
          'create index concurrently a_id2_idx on a (id);',
        ].join('\n'),
        'drop index concurrently if exists a_id2_idx;\ndrop index concurrently if exists a_id_idx;',
        { transactional: false },
      );
    const failing = dirOf({ '20260101000000_create_a': basic['20260101000000_create_a'], '20260101000100_indexes': flaky(true) });
    const error = await rejection(migrateUp(t.db, { dir: failing }));
    expect(error.code).toBe('MIGRATION_FAILED');
    expect(error.message).toMatch(/outside a transaction/);
    expect(await tableExists(t.db, 'a_id_idx')).toBe(true);
    expect(await tableExists(t.db, 'a_id2_idx')).toBe(false);
    expect((await migrationStatus(t.db, { dir: failing })).upToDate).toBe(false);

    const fixed = dirOf({ '20260101000000_create_a': basic['20260101000000_create_a'], '20260101000100_indexes': flaky(false) });
    await migrateUp(t.db, { dir: fixed });
    expect(await tableExists(t.db, 'a_id2_idx')).toBe(true);
    await migrateDown(t.db, { dir: fixed });
    expect(await tableExists(t.db, 'a_id_idx')).toBe(false);
  });

  it('runs migrations without parallel maintenance workers, leaving cores to live traffic', async () => {
    const dir = dirOf({
      '20260101000000_probe': migration(
        "create table probe as select current_setting('max_parallel_maintenance_workers') as workers;",
        'drop table probe;',
      ),
    });
    await migrateUp(t.db, { dir });
    const { rows } = await t.db.query<{ workers: string }>('select workers from probe');
    expect(rows).toEqual([{ workers: '0' }]);
  });

  it('refuses to run when an applied migration was edited, and status shows it', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir });
    writeFileSync(
      join(dir, '20260101000000_create_a.sql'),
      basic['20260101000000_create_a'].replace('int primary key', 'bigint primary key'),
    );
    const error = await rejection(migrateUp(t.db, { dir }));
    expect(error.code).toBe('MIGRATION_EDITED');
    expect(error.details.migration).toBe('20260101000000_create_a');
    expect((await migrationStatus(t.db, { dir })).migrations[0]?.state).toBe('edited');
    expect((await rejection(migrateDown(t.db, { dir, count: 2 }))).code).toBe('MIGRATION_EDITED');
  });

  it('refuses when an applied migration has no file, or a pending one sorts before an applied one', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir, to: '20260101000000_create_a' });
    rmSync(join(dir, '20260101000000_create_a.sql'));
    expect((await rejection(migrateUp(t.db, { dir }))).code).toBe('MIGRATION_MISSING');
    expect((await migrationStatus(t.db, { dir })).migrations.find((entry) => entry.state === 'missing')?.name).toBe(
      '20260101000000_create_a',
    );

    const reordered = dirOf({ ...basic, '20250101000000_early': migration('select 1;', 'select 1;') });
    expect((await rejection(migrateUp(t.db, { dir: reordered }))).code).toBe('MIGRATION_OUT_OF_ORDER');
  });

  it('reverts the last N migrations, newest first, and removes their records', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir });
    // b holds a row: dropping it takes the operator's --force.
    const steps = await migrateDown(t.db, { dir, count: 2, force: true });
    expect(steps.map((step) => step.name)).toEqual(['20260101000100_create_b', '20260101000000_create_a']);
    expect(await tableExists(t.db, 'a')).toBe(false);
    expect((await t.db.query(`select * from ${MIGRATIONS_TABLE}`)).rows).toEqual([]);
    expect(await migrateDown(t.db, { dir })).toEqual([]);
    expect((await rejection(migrateDown(t.db, { dir, count: 0 }))).code).toBe('INVALID_INPUT');
  });

  it('refuses a revert that would drop a table holding rows, unless forced, naming the table; an empty table goes', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir });
    const refused = await rejection(migrateDown(t.db, { dir, count: 2 }));
    expect(refused).toMatchObject({ code: 'CONFLICT', details: { migration: '20260101000100_create_b', reason: 'would_drop_rows' } });
    expect(refused.message).toMatch(
      /refused before the first of them, so nothing was reverted:\n {2}- .*would drop table b, which holds rows .*--force/,
    );
    expect(await tableExists(t.db, 'b')).toBe(true);
    expect((await t.db.query<{ id: number }>('select id from b')).rows).toEqual([{ id: 1 }]);
    await t.db.exec('delete from b');
    expect((await migrateDown(t.db, { dir, count: 2 })).map((step) => step.direction)).toEqual(['down', 'down']);
  });

  it("refuses to revert the 2025 baseline while the engine's tables hold rows (their downs are plain DROP TABLEs)", async () => {
    await migrateUp(t.db, { to: '20250601090200_create_schedules' });
    await t.db.exec(`insert into schedules (workflow_id, cron_expression) values ('kept', '@hourly')`);
    const refused = await rejection(migrateDown(t.db, { count: 3 }));
    expect(refused).toMatchObject({
      code: 'CONFLICT',
      details: { migration: '20250601090200_create_schedules', reason: 'would_drop_rows' },
    });
    expect((await t.db.query('select workflow_id from schedules')).rows).toEqual([{ workflow_id: 'kept' }]);
    expect((await migrateDown(t.db, { count: 3, force: true })).map((step) => step.name)).toEqual([
      '20250601090200_create_schedules',
      '20250601090100_create_task_states',
      '20250601090000_create_workflow_states',
    ]);
  });

  it('refuses to revert more migrations than are applied, before reverting any', async () => {
    const dir = dirOf(basic);
    await migrateUp(t.db, { dir });
    const refused = await rejection(migrateDown(t.db, { dir, count: 3, force: true }));
    expect(refused).toMatchObject({ code: 'INVALID_INPUT', message: 'only 2 migration(s) are applied; cannot revert 3' });
    expect(await tableExists(t.db, 'b')).toBe(true);
    await migrateDown(t.db, { dir, count: 2, force: true });
  });

  it('rejects a malformed migration file with its name', async () => {
    const dir = dirOf({ '20260101000000_no_markers': 'create table x (id int);' });
    const error = await rejection(migrateUp(t.db, { dir }));
    expect(error.code).toBe('MIGRATION_INVALID');
    expect(error.message).toMatch(/20260101000000_no_markers.*Up Migration/);
  });
});

describe.skipIf(!serverUrl)('migration runner against concurrent sessions on PostgreSQL', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let first: Database;
  let second: Database;
  let dir: string;

  beforeAll(async () => {
    dir = migrationsDir({
      '20260101000000_runs': migration('create table runs (name text);', 'drop table runs;'),
      // Slow enough that the second runner certainly arrives while the first holds the lock.
      '20260101000100_slow': migration("select pg_sleep(0.5);\ninsert into runs values ('slow');", "delete from runs where name = 'slow';"),
      '20260101000200_after': migration("insert into runs values ('after');", "delete from runs where name = 'after';"),
    });
  });
  beforeEach(async () => {
    server = await createServerDatabase();
    first = await openDatabase({ url: server.url, poolSize: 2 });
    second = await openDatabase({ url: server.url, poolSize: 2 });
  });
  afterEach(async () => {
    await first.close();
    await second.close();
    await server.drop();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('applies each migration exactly once when two runs start together; the second waits, then finds nothing to do', async () => {
    const secondLog: string[] = [];
    const [a, b] = await Promise.all([
      migrateUp(first, { dir }),
      new Promise((resolve) => setTimeout(resolve, 100)).then(() => migrateUp(second, { dir, log: (line) => secondLog.push(line) })),
    ]);
    expect(a.length + b.length).toBe(3);
    expect(secondLog).toContain('waiting for another migration run to finish...');
    const { rows } = await first.query<{ name: string; n: number }>(
      'select name, count(*)::int as n from runs group by name order by name',
    );
    expect(rows).toEqual([
      { name: 'after', n: 1 },
      { name: 'slow', n: 1 },
    ]);
  });

  it('gives up with MIGRATION_LOCKED when another run holds the lock too long', async () => {
    const running = migrateUp(first, { dir });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const error = await rejection(migrateUp(second, { dir, lockWaitMs: 50 }));
    expect(error.code).toBe('MIGRATION_LOCKED');
    await running;
  });

  it('fails fast on its lock timeout behind a long transaction, applies nothing, and succeeds when re-run', async () => {
    const tenancy = '20261128120000_add_multitenant_schema';
    const pendingAfterTenancy = readMigrationFiles().filter((file) => file.name > tenancy).length;
    await migrateUp(first, { to: tenancy });
    const blocker = new pg.Client({ connectionString: server.url });
    await blocker.connect();
    try {
      // A long-running reader: holds ACCESS SHARE on workflow_states until it commits.
      await blocker.query('begin');
      await blocker.query('select count(*) from workflow_states');
      const started = Date.now();
      const error = await rejection(migrateUp(second, { lockTimeout: '300ms', lockRetries: 2 }));
      expect(error.code).toBe('LOCK_TIMEOUT');
      expect(error.details.migration).toBe('20261128120100_update_existing_tables_for_multitenancy');
      expect(error.message).toMatch(/run it again/);
      // Three attempts of 300 ms with back-off between them, instead of queueing behind the reader.
      expect(error.message).toMatch(/3 time\(s\)/);
      expect(Date.now() - started).toBeLessThan(4_000);
      const columns = await first.query(
        `select 1 from information_schema.columns where table_name = 'workflow_states' and column_name = 'org_id'`,
      );
      expect(columns.rowCount).toBe(0);
      expect((await first.query(`select 1 from organizations`)).rowCount).toBe(0);
      expect((await migrationStatus(first)).migrations.filter((entry) => entry.state === 'pending')).toHaveLength(pendingAfterTenancy);
    } finally {
      await blocker.query('commit');
      await blocker.end();
    }
    const steps = await migrateUp(second, { lockTimeout: '300ms' });
    expect(steps).toHaveLength(pendingAfterTenancy);
    expect((await migrationStatus(first)).upToDate).toBe(true);
  });

  it('retries after a lock timeout with back-off, and gets the lock once a short transaction ends', async () => {
    await migrateUp(first, { to: '20261128120000_add_multitenant_schema' });
    const blocker = new pg.Client({ connectionString: server.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select count(*) from workflow_states');
      const log: string[] = [];
      const migrating = migrateUp(second, {
        to: '20261128120100_update_existing_tables_for_multitenancy',
        lockTimeout: '100ms',
        log: (line) => log.push(line),
      });
      await new Promise((resolve) => setTimeout(resolve, 700));
      await blocker.query('commit');
      expect(await migrating).toHaveLength(1);
      expect(log.filter((line) => /lock not available \(attempt \d+ of 11\); retrying in \d+ ms/.test(line)).length).toBeGreaterThanOrEqual(
        2,
      );
    } finally {
      await blocker.end();
    }
  });
});
