/**
 * Applies, reverts and inspects migrations. The runner is small on purpose; it is made of the
 * steps node-pg-migrate has (lock, ensure table, pick migrations, check order) plus what it
 * lacks and this store needs: checksums of applied files, statement-at-a-time execution for
 * migrations that run outside a transaction, and the embedded PGlite backend.
 *
 * Guarantees:
 * - Runs exclude each other through a session advisory lock, so two `migrate up` started
 *   together apply each migration exactly once; the second waits, then finds nothing to do.
 * - A transactional migration runs in one transaction together with its bookkeeping row: if any
 *   statement fails, nothing of it remains and it is not recorded.
 * - Every statement runs under a short `lock_timeout`, so a migration never holds up other
 *   queries for long while it waits for a lock; it retries with back-off, and behind a long
 *   transaction it fails with LOCK_TIMEOUT (and can be run again) instead of stalling traffic.
 * - Index builds run without parallel workers, leaving the server's other cores to live traffic
 *   (see SERIAL_MAINTENANCE).
 */
import type { Database, Session } from './db.ts';
import { isCitus } from './citus/detect.ts';
import { StoreError, SQLSTATE, databaseErrorFields } from './errors.ts';
import { MIGRATIONS_DIR, readMigrationFiles, type MigrationFile } from './migration-files.ts';
import type { SqlStatement } from './sql-split.ts';

export const MIGRATIONS_TABLE = 'engine_store_migrations';

export const DEFAULT_LOCK_TIMEOUT = '100ms';
export const DEFAULT_LOCK_RETRIES = 10;

/**
 * Migrations run beside live traffic, so their index builds get no parallel workers: a parallel
 * build takes every core of a small server (a leader and, by default, two workers), and the
 * engine's own statements queue for CPU. bench/migrate-under-load, N = 1,000,000 on two cores,
 * three runs without workers against two with PostgreSQL's default: the writer completed
 * 46,000-52,000 operations in the run instead of 29,000-30,000, its p99 was 10-12 ms instead
 * of 15-20 ms, and the migration took 51-64 s instead of 48-59 s. The longest stall was about
 * the same (142-169 ms, against 118-157 ms).
 */
const SERIAL_MAINTENANCE = 'set max_parallel_maintenance_workers = 0';

/** Key of the advisory lock that serializes migration runs (an arbitrary constant of this project). */
const MIGRATION_LOCK_KEY = 7_305_113_042;

export interface RunnerOptions {
  /** Directory of the migration files; the store's own by default. */
  dir?: string;
  /** Receives one line per step: what is applied, how long it took. */
  log?: (line: string) => void;
  /** How long to wait for another run's lock before giving up, in ms. Default 60 s. */
  lockWaitMs?: number;
  /**
   * `lock_timeout` for every migration statement, as PostgreSQL spells it. Default `100ms`: a
   * statement waiting for a strong lock makes every later query on the table wait behind it,
   * so it must give up quickly and try again rather than wait long.
   */
  lockTimeout?: string;
  /** How many times a unit that met its lock timeout is tried again, with back-off. Default 10. */
  lockRetries?: number;
}

export interface AppliedStep {
  name: string;
  direction: 'up' | 'down';
  durationMs: number;
}

export type MigrationState = 'applied' | 'pending' | 'edited' | 'missing';

export interface MigrationStatusEntry {
  name: string;
  state: MigrationState;
  appliedAt?: string;
  durationMs?: number;
}

export interface MigrationStatus {
  location: string;
  upToDate: boolean;
  migrations: MigrationStatusEntry[];
}

interface AppliedRow {
  name: string;
  checksum: string;
  applied_at: Date | string;
  duration_ms: number;
}

/**
 * Applies pending migrations in order, up to and including `to` when given.
 *
 * @example
 * await migrateUp(db, { log: console.log });
 */
export async function migrateUp(db: Database, options: RunnerOptions & { to?: string } = {}): Promise<AppliedStep[]> {
  checkRunnerOptions(options);
  const files = readMigrationFiles(options.dir ?? MIGRATIONS_DIR);
  if (options.to !== undefined && !files.some((file) => file.name === options.to)) {
    throw new StoreError('INVALID_INPUT', `there is no migration named ${options.to}`, { field: 'to', reason: 'unknown_migration' });
  }
  return withMigrationLock(db, options, async (session) => {
    const applied = await readApplied(session);
    checkConsistency(files, applied);
    const appliedNames = new Set(applied.map((row) => row.name));
    const targetIndex = options.to === undefined ? files.length - 1 : files.findIndex((file) => file.name === options.to);
    const pending = files.slice(0, targetIndex + 1).filter((file) => !appliedNames.has(file.name));
    const log = options.log ?? (() => undefined);
    if (pending.length === 0) log('nothing to apply: the database is up to date');
    const steps: AppliedStep[] = [];
    for (const file of pending) steps.push(await runStep(session, file, 'up', options));
    return steps;
  });
}

/**
 * Reverts the last `count` applied migrations (default 1), newest first.
 *
 * @example
 * await migrateDown(db, { count: 2 });
 */
export async function migrateDown(db: Database, options: RunnerOptions & { count?: number; force?: boolean } = {}): Promise<AppliedStep[]> {
  const count = options.count ?? 1;
  if (!Number.isInteger(count) || count < 1) {
    throw new StoreError('INVALID_INPUT', 'the number of migrations to revert must be a positive whole number', { field: 'count', reason: 'not_positive_integer' });
  }
  checkRunnerOptions(options);
  const files = readMigrationFiles(options.dir ?? MIGRATIONS_DIR);
  return withMigrationLock(db, options, async (session) => {
    const applied = await readApplied(session);
    const byName = new Map(files.map((file) => [file.name, file]));
    const log = options.log ?? (() => undefined);
    if (applied.length === 0) {
      log('nothing to revert: no migration is applied');
      return [];
    }
    // Checked before the first step, not found out halfway.
    if (count > applied.length) {
      throw new StoreError('INVALID_INPUT', `only ${applied.length} migration(s) are applied; cannot revert ${count}`, { field: 'count', reason: 'too_many' });
    }
    const toRevert = applied.slice(-count).reverse();
    const revertFiles = toRevert.map((row) => {
      const file = byName.get(row.name);
      if (!file) throw missingFile(row.name);
      if (file.checksum !== row.checksum) throw editedFile(row.name);
      return file;
    });
    const steps: AppliedStep[] = [];
    for (const file of revertFiles) {
      // Just before its step, since the steps before it change what the tables hold (reverting
      // the default organization's migration, say).
      if (!options.force) await refuseDroppingRows(session, file, steps.length);
      steps.push(await runStep(session, file, 'down', options));
    }
    return steps;
  });
}

/**
 * Tables whose rows a revert may drop: reference data the migrations themselves seed, and
 * counters that need not survive (unlogged, lost in any crash anyway).
 */
const DISPOSABLE_TABLES = new Set(['permissions', 'role_permissions', 'api_key_usage']);

/** `drop table <name>` in a down section: the tables a revert would destroy. */
const DROP_TABLE = /^\s*drop\s+table\s+(?:if\s+exists\s+)?([a-z_][a-z0-9_]*)/gim;

/**
 * Refuses, before anything is reverted, a revert whose steps drop a table that holds rows (the
 * 2025 baseline's downs drop the engine's tables without a guard of their own, and those files
 * never change). `force` is the operator's explicit consent.
 */
async function refuseDroppingRows(session: Session, file: MigrationFile, revertedBefore: number): Promise<void> {
  for (const statement of file.down) {
    for (const match of statement.text.matchAll(DROP_TABLE)) {
      const table = match[1]!;
      if (DISPOSABLE_TABLES.has(table)) continue;
      const { rows } = await session.query<{ present: boolean }>('select to_regclass($1) is not null as present', [`public.${table}`]);
      if (!rows[0]!.present) continue;
      const { rows: held } = await session.query<{ any: boolean }>(`select exists (select from public.${table}) as any`);
      if (held[0]!.any) {
        throw new StoreError(
          'CONFLICT',
          `reverting ${file.name} would drop table ${table}, which holds rows, so it was not reverted` +
            (revertedBefore > 0 ? ` (the ${revertedBefore} migration(s) after it were)` : '') +
            '. Back the data up, then run again with --force to drop it',
          { migration: file.name, reason: 'would_drop_rows' },
        );
      }
    }
  }
}

/** Which migrations are applied, pending, edited since applied, or applied without a file. */
export async function migrationStatus(db: Database, options: Pick<RunnerOptions, 'dir'> = {}): Promise<MigrationStatus> {
  const files = readMigrationFiles(options.dir ?? MIGRATIONS_DIR);
  const applied = await db.withSession(readApplied);
  const appliedByName = new Map(applied.map((row) => [row.name, row]));
  const fileNames = new Set(files.map((file) => file.name));
  const entries: MigrationStatusEntry[] = files.map((file) => {
    const row = appliedByName.get(file.name);
    if (!row) return { name: file.name, state: 'pending' };
    return {
      name: file.name,
      state: row.checksum === file.checksum ? 'applied' : 'edited',
      appliedAt: new Date(row.applied_at).toISOString(),
      durationMs: row.duration_ms,
    };
  });
  for (const row of applied) {
    if (!fileNames.has(row.name)) {
      entries.push({ name: row.name, state: 'missing', appliedAt: new Date(row.applied_at).toISOString(), durationMs: row.duration_ms });
    }
  }
  entries.sort((a, b) => a.name.localeCompare(b.name));
  return { location: db.location, upToDate: entries.every((entry) => entry.state === 'applied'), migrations: entries };
}

async function withMigrationLock<T>(db: Database, options: RunnerOptions, work: (session: Session) => Promise<T>): Promise<T> {
  const log = options.log ?? (() => undefined);
  const lockWaitMs = options.lockWaitMs ?? 60_000;
  return db.withSession(async (session) => {
    const deadline = Date.now() + lockWaitMs;
    let announced = false;
    for (;;) {
      const { rows } = await session.query<{ locked: boolean }>('select pg_try_advisory_lock($1) as locked', [MIGRATION_LOCK_KEY]);
      if (rows[0]?.locked) break;
      if (Date.now() >= deadline) {
        throw new StoreError('MIGRATION_LOCKED', `another migration run still holds the migration lock after ${lockWaitMs} ms; try again when it has finished`);
      }
      if (!announced) log('waiting for another migration run to finish...');
      announced = true;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    try {
      await session.query(
        `create table if not exists ${MIGRATIONS_TABLE} (
           name text primary key,
           checksum text not null,
           applied_at timestamptz not null default now(),
           duration_ms integer not null
         )`,
      );
      if (await isCitus(session)) {
        // A Citus coordinator: DDL propagates to the workers. The store's triggers run on each
        // shard (they read only the row's own organization), which Citus allows when told so.
        log('Citus coordinator: each statement also runs on the shards of the workers');
        await session.query('set citus.enable_unsafe_triggers = on');
      }
      return await work(session);
    } finally {
      await session.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
      await session.query('reset all');
    }
  });
}

async function readApplied(session: Session): Promise<AppliedRow[]> {
  const { rows: exists } = await session.query<{ present: boolean }>('select to_regclass($1) is not null as present', [MIGRATIONS_TABLE]);
  if (!exists[0]?.present) return [];
  const { rows } = await session.query<AppliedRow>(
    `select name, checksum, applied_at, duration_ms from ${MIGRATIONS_TABLE} order by name`,
  );
  return rows;
}

function checkConsistency(files: MigrationFile[], applied: AppliedRow[]): void {
  const byName = new Map(files.map((file) => [file.name, file]));
  for (const row of applied) {
    const file = byName.get(row.name);
    if (!file) throw missingFile(row.name);
    if (file.checksum !== row.checksum) throw editedFile(row.name);
  }
  const lastApplied = applied.at(-1)?.name;
  const appliedNames = new Set(applied.map((row) => row.name));
  const early = files.find((file) => lastApplied !== undefined && !appliedNames.has(file.name) && file.name < lastApplied);
  if (early) {
    throw new StoreError(
      'MIGRATION_OUT_OF_ORDER',
      `migration ${early.name} is not applied but sorts before ${lastApplied}, which is; give it a later timestamp`,
      { migration: early.name },
    );
  }
}

function missingFile(name: string): StoreError {
  return new StoreError('MIGRATION_MISSING', `migration ${name} is applied but its file is missing`, { migration: name });
}

function editedFile(name: string): StoreError {
  return new StoreError(
    'MIGRATION_EDITED',
    `migration ${name} was edited after it was applied (its checksum differs); restore the file and add a new migration instead`,
    { migration: name, reason: 'checksum_mismatch' },
  );
}

const TIMEOUT_VALUE = /^\d+(ms|s|min)?$/;

/**
 * The runner's options, checked before any work (even when nothing is pending), so that a bad
 * value is reported the same way every time. A lock timeout of 0 would mean "wait forever".
 */
export function checkRunnerOptions(options: RunnerOptions): void {
  const { lockTimeout = DEFAULT_LOCK_TIMEOUT, lockRetries = DEFAULT_LOCK_RETRIES } = options;
  if (!TIMEOUT_VALUE.test(lockTimeout) || /^0+(ms|s|min)?$/.test(lockTimeout)) {
    throw new StoreError('INVALID_INPUT', `lock timeout "${lockTimeout}" is not a duration above zero such as 5s or 500ms`, { field: 'lockTimeout' });
  }
  if (!Number.isInteger(lockRetries) || lockRetries < 0) {
    throw new StoreError('INVALID_INPUT', 'lock retries must be a whole number, 0 or more', { field: 'lockRetries' });
  }
}

/**
 * The pieces of a migration that succeed or fail together, and are retried together when they
 * meet a lock timeout: the whole file when it is transactional; otherwise each statement, or
 * each explicit BEGIN ... COMMIT block, on its own.
 */
function unitsOf(statements: SqlStatement[], transactional: boolean): SqlStatement[][] {
  if (transactional) return [statements];
  const units: SqlStatement[][] = [];
  let block: SqlStatement[] | undefined;
  for (const statement of statements) {
    const keyword = firstKeyword(statement.text);
    if (block) {
      block.push(statement);
      if (keyword === 'commit' || keyword === 'end') {
        units.push(block);
        block = undefined;
      }
    } else if (keyword === 'begin' || keyword === 'start') {
      block = [statement];
    } else {
      units.push([statement]);
    }
  }
  if (block) units.push(block);
  return units;
}

function firstKeyword(text: string): string {
  return text.replace(/^(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*/, '').split(/[\s;(]/, 1)[0]!.toLowerCase();
}

/**
 * Statements that take only a SHARE UPDATE EXCLUSIVE lock (concurrent index builds and drops,
 * constraint validation) let reads and writes go on while they wait, so they wait as long as
 * they need: a concurrent build also waits for every older transaction to end, and giving up
 * there would leave an INVALID index behind for nothing.
 */
const WEAK_LOCK = /\bconcurrently\b|\bvalidate\s+constraint\b/i;

async function runStatement(session: Session, text: string, lockTimeout: string): Promise<void> {
  if (!WEAK_LOCK.test(text)) {
    await session.query(text);
    return;
  }
  await session.query('set lock_timeout = 0');
  try {
    await session.query(text);
  } finally {
    // Fails inside an aborted transaction; its rollback then restores the setting anyway.
    await session.query(`set lock_timeout = '${lockTimeout}'`).catch(() => undefined);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function runStep(session: Session, file: MigrationFile, direction: 'up' | 'down', options: RunnerOptions): Promise<AppliedStep> {
  const log = options.log ?? (() => undefined);
  const lockTimeout = options.lockTimeout ?? DEFAULT_LOCK_TIMEOUT;
  const lockRetries = options.lockRetries ?? DEFAULT_LOCK_RETRIES;
  const statements = direction === 'up' ? file.up : file.down;
  const arrow = direction === 'up' ? '↑' : '↓';
  log(`${arrow} ${file.name}${file.transactional ? '' : ' (outside a transaction)'}`);
  const started = performance.now();
  // Session settings, not SET LOCAL: a non-transactional migration runs many transactions.
  await session.exec(`set lock_timeout = '${lockTimeout}'; set statement_timeout = 0; ${SERIAL_MAINTENANCE}`);
  const record = async () => {
    const durationMs = Math.round(performance.now() - started);
    if (direction === 'up') {
      await session.query(`insert into ${MIGRATIONS_TABLE} (name, checksum, duration_ms) values ($1, $2, $3)`, [file.name, file.checksum, durationMs]);
    } else {
      await session.query(`delete from ${MIGRATIONS_TABLE} where name = $1`, [file.name]);
    }
    return durationMs;
  };
  const units = unitsOf(statements, file.transactional);
  let current: SqlStatement | undefined;
  for (const unit of units) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        if (file.transactional) await session.query('begin');
        for (current of unit) await runStatement(session, current.text, lockTimeout);
        current = undefined;
        // A transactional migration is recorded in its own transaction, atomically with it.
        if (file.transactional) {
          const durationMs = await record();
          await session.query('commit');
          log(`  ${direction === 'up' ? 'applied' : 'reverted'} in ${durationMs} ms`);
          return { name: file.name, direction, durationMs };
        }
        break;
      } catch (error) {
        await session.query('rollback').catch(() => undefined);
        // A short lock_timeout keeps the queue behind a waiting ALTER short; retrying with
        // back-off then gets the lock between other transactions instead of stalling them.
        if (databaseErrorFields(error)?.code === SQLSTATE.lockNotAvailable && attempt < lockRetries) {
          const delay = Math.min(100 * 2 ** attempt, 2_000) + Math.floor(Math.random() * 100);
          log(`  lock not available (attempt ${attempt + 1} of ${lockRetries + 1}); retrying in ${delay} ms`);
          await sleep(delay);
          continue;
        }
        throw stepError(file, direction, current, error, lockTimeout, attempt + 1);
      }
    }
  }
  try {
    await session.query('begin');
    const durationMs = await record();
    await session.query('commit');
    log(`  ${direction === 'up' ? 'applied' : 'reverted'} in ${durationMs} ms`);
    return { name: file.name, direction, durationMs };
  } catch (error) {
    await session.query('rollback').catch(() => undefined);
    throw stepError(file, direction, undefined, error, lockTimeout, 1);
  }
}

function stepError(
  file: MigrationFile,
  direction: 'up' | 'down',
  statement: SqlStatement | undefined,
  error: unknown,
  lockTimeout: string,
  attempts: number,
): StoreError {
  const fields = databaseErrorFields(error);
  const where = statement ? ` at line ${statement.line}` : '';
  const aftermath = file.transactional
    ? `nothing of it was ${direction === 'up' ? 'applied' : 'reverted'}`
    : 'it runs outside a transaction, so the statements before that line took effect; it is written to be run again';
  if (fields?.code === SQLSTATE.lockNotAvailable) {
    return new StoreError(
      'LOCK_TIMEOUT',
      `migration ${file.name} (${direction}) could not take a lock${where} within lock_timeout ${lockTimeout}, ${attempts} time(s): ` +
        `a long transaction holds it. ${capitalize(aftermath)}; run it again once that transaction has ended.`,
      { migration: file.name, reason: 'lock_timeout' },
      { cause: error },
    );
  }
  const reason = fields?.message ?? (error instanceof Error ? error.message : String(error));
  return new StoreError(
    'MIGRATION_FAILED',
    `migration ${file.name} (${direction}) failed${where}: ${reason}${fields?.detail ? ` (${fields.detail})` : ''}; ${aftermath}`,
    { migration: file.name, reason: fields?.code ?? 'error' },
    { cause: error },
  );
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
