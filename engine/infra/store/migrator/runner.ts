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
 * - A migration outside a transaction is recorded as started (`applying` or `reverting`) before
 *   its first statement, and its progress is recorded inside each of its BEGIN ... COMMIT blocks,
 *   atomically with the block. Interrupted anywhere (a crash, a lost connection, Ctrl-C), it
 *   shows as partly applied or partly reverted, and the next run first finishes it in the
 *   direction it was going, from its last recorded block: the statements between two blocks
 *   are written to be run again (see migration-files.ts).
 * - Stopped by its signal (RunnerOptions.signal), a run cancels the statement in flight on the
 *   server, stops before the next one and releases its lock.
 * - Every statement runs under a short `lock_timeout`, so a migration never holds up other
 *   queries for long while it waits for a lock; it retries with back-off, and behind a long
 *   transaction it fails with LOCK_TIMEOUT (and can be run again) instead of stalling traffic.
 * - Index builds run without parallel workers, leaving the server's other cores to live traffic
 *   (see SERIAL_MAINTENANCE).
 */
import { NO_DEADLINE, type Database, type Session } from '../connection/database.ts';
import { isCitus } from '../citus/detect.ts';
import { SQLSTATE, databaseErrorFields } from '../connection/database-errors.ts';
import { StoreError, isStoreError } from '../errors.ts';
import { MIGRATIONS_DIR, readMigrationFiles, type MigrationFile } from './migration-files.ts';
import { withoutLeadingComments, type SqlStatement } from './sql-split.ts';
import { downRefusals, refuseDroppingRows, refusedRun } from './down-checks.ts';
import { observed, type StoreTracer } from '../observability.ts';

export const MIGRATIONS_TABLE = 'engine_store_migrations';

/**
 * The runner's bookkeeping: one row per migration that is applied or was interrupted. `state`
 * is `applying` or `reverting` while a migration outside a transaction is under way (or was
 * interrupted), and `resume_at` counts the statements done so far in that direction (always the
 * end of a unit: see unitsOf).
 */
export const MIGRATIONS_TABLE_DDL = `create table if not exists public.${MIGRATIONS_TABLE} (
  name text primary key,
  checksum text not null,
  applied_at timestamptz not null default now(),
  duration_ms integer not null,
  state text not null default 'applied' check (state in ('applied', 'applying', 'reverting')),
  resume_at integer not null default 0
)`;

/** The two columns a table made by an earlier version of the runner lacks. */
const MIGRATIONS_TABLE_UPGRADE = `alter table public.${MIGRATIONS_TABLE}
  add column if not exists state text not null default 'applied' check (state in ('applied', 'applying', 'reverting')),
  add column if not exists resume_at integer not null default 0`;

export const DEFAULT_LOCK_TIMEOUT = '100ms';
export const DEFAULT_LOCK_RETRIES = 10;

/**
 * Migrations run beside live traffic, so their index builds get no parallel workers: a parallel
 * build takes every core of a small server (a leader and, by default, two workers), and the
 * engine's own statements queue for CPU. Measured by bench/migrate-under-load; the figures are
 * in docs/benchmarks.md (parallel index builds).
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
  /**
   * Stops the run: the statement in flight is cancelled on the server (PostgreSQL), no further
   * statement starts, the lock is released, and the run fails with MIGRATION_INTERRUPTED saying
   * where it stopped. The CLI aborts it on SIGINT and SIGTERM.
   */
  signal?: AbortSignal;
  /**
   * Called before each statement of a migration section runs, with its position: for fault
   * injection in tests (stop or kill the runner at statement k), not for production use.
   */
  beforeStatement?: (position: StatementPosition) => void | Promise<void>;
  /** Spans for migration steps (`engine-store.migration`), as openStore's tracer. */
  tracer?: StoreTracer;
}

export interface StatementPosition {
  migration: string;
  direction: 'up' | 'down';
  /**
   * 0-based index of the statement in the migration's section; equal to `of` after the last
   * statement, just before the section is recorded as done.
   */
  index: number;
  /** Statements in the section. */
  of: number;
}

export interface AppliedStep {
  name: string;
  direction: 'up' | 'down';
  durationMs: number;
}

/**
 * `partly_applied` / `partly_reverted`: a migration outside a transaction was interrupted on its
 * way up or down; the next `migrate up` or `migrate down` finishes it first.
 */
export type MigrationState = 'applied' | 'pending' | 'edited' | 'missing' | 'partly_applied' | 'partly_reverted';

export interface MigrationStatusEntry {
  name: string;
  state: MigrationState;
  appliedAt?: string;
  durationMs?: number;
  /** For a partly applied or reverted migration: statements done in that direction, and of how many. */
  progress?: { done: number; of: number };
  /** For a partly applied or reverted migration: what to run next. */
  hint?: string;
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
  state: 'applied' | 'applying' | 'reverting';
  resume_at: number;
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
    let applied = await readApplied(session);
    checkConsistency(files, applied);
    if (await finishInterrupted(session, files, applied, 'reverting', options)) applied = await readApplied(session);
    const rows = new Map(applied.map((row) => [row.name, row]));
    const targetIndex = options.to === undefined ? files.length - 1 : files.findIndex((file) => file.name === options.to);
    const pending = files.slice(0, targetIndex + 1).filter((file) => rows.get(file.name)?.state !== 'applied');
    const log = options.log ?? (() => undefined);
    if (pending.length === 0) log('nothing to apply: the database is up to date');
    const steps: AppliedStep[] = [];
    for (const file of pending) {
      const row = rows.get(file.name);
      const resumeAt = row?.state === 'applying' ? resumePoint(row, file) : undefined;
      steps.push(await withRunProgress(steps.length, pending.length, 'up', () => runStep(session, file, 'up', options, resumeAt)));
    }
    return steps;
  });
}

/**
 * Finishes a migration that was interrupted in `direction` (the row says so), in that
 * direction, from its last recorded progress: before a run in the other direction, so that
 * every run starts from a migration wholly applied or wholly reverted. Returns whether there was
 * one.
 */
async function finishInterrupted(
  session: Session,
  files: MigrationFile[],
  applied: AppliedRow[],
  state: 'applying' | 'reverting',
  options: RunnerOptions,
): Promise<boolean> {
  const row = applied.find((candidate) => candidate.state === state);
  if (!row) return false;
  const file = files.find((candidate) => candidate.name === row.name);
  if (!file) throw missingFile(row.name);
  if (state === 'reverting' && file.checksum !== row.checksum) throw editedFile(row.name);
  const direction = state === 'applying' ? 'up' : 'down';
  options.log?.(`${row.name} was interrupted while being ${state === 'applying' ? 'applied' : 'reverted'}; finishing that first`);
  await runStep(session, file, direction, options, state === 'applying' ? resumePoint(row, file) : row.resume_at);
  return true;
}

/**
 * Where an interrupted `up` continues: after its last recorded unit, unless the file changed
 * since (a failed statement fixed, say): its progress counts statements of the old text, so the
 * new one runs from the start, which a migration outside a transaction must allow anyway.
 */
function resumePoint(row: AppliedRow, file: MigrationFile): number {
  return row.checksum === file.checksum ? row.resume_at : 0;
}

/**
 * A step's failure, told with how far the run got: under load a run can stop at its third
 * migration, and the operator needs to know that two are in.
 */
async function withRunProgress<T>(done: number, total: number, direction: 'up' | 'down', step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (!(error instanceof StoreError) || total < 2) throw error;
    const verb = direction === 'up' ? 'applied' : 'reverted';
    throw new StoreError(
      error.code,
      `${error.message} (${done} of the ${total} migrations of this run were ${verb} before it)`,
      error.details,
      { cause: error.cause },
    );
  }
}

export interface DownOptions extends RunnerOptions {
  /** How many wholly applied migrations to revert (default 1), after finishing an interrupted revert. */
  count?: number;
  /** Revert every migration applied after this one, which stays applied (instead of count). */
  to?: string;
  /** Drop tables that hold rows where a step would (the rows are lost). */
  force?: boolean;
}

/**
 * Reverts the last `count` applied migrations (default 1), or those after `to`, newest first.
 *
 * Before the first statement, every guard of every step is checked (see down-checks.ts): the
 * run is refused with the whole list, or reverts all the steps. A revert that was interrupted
 * is finished first and is not one of the `count`: `to` names the end state, and running the
 * same command again after an interruption reaches the same one.
 *
 * @example
 * await migrateDown(db, { count: 2 });
 */
export async function migrateDown(db: Database, options: DownOptions = {}): Promise<AppliedStep[]> {
  if (options.to !== undefined && options.count !== undefined) {
    throw new StoreError('INVALID_INPUT', 'give either a number of migrations to revert or a migration to revert to, not both', {
      field: 'to',
      reason: 'both_count_and_to',
    });
  }
  const count = options.count ?? 1;
  if (!Number.isInteger(count) || count < 1) {
    throw new StoreError('INVALID_INPUT', 'the number of migrations to revert must be a positive whole number', {
      field: 'count',
      reason: 'not_positive_integer',
    });
  }
  checkRunnerOptions(options);
  const files = readMigrationFiles(options.dir ?? MIGRATIONS_DIR);
  if (options.to !== undefined && !files.some((file) => file.name === options.to)) {
    throw new StoreError('INVALID_INPUT', `there is no migration named ${options.to}`, { field: 'to', reason: 'unknown_migration' });
  }
  return withMigrationLock(db, options, async (session) => {
    let applied = await readApplied(session);
    if (await finishInterrupted(session, files, applied, 'applying', options)) applied = await readApplied(session);
    const byName = new Map(files.map((file) => [file.name, file]));
    const log = options.log ?? (() => undefined);
    const interrupted = applied.find((row) => row.state === 'reverting');
    const whole = applied.filter((row) => row.state === 'applied');
    const toRevert = revertedRows(whole, options.to, options.to === undefined ? count : undefined).reverse();
    if (toRevert.length === 0 && !interrupted) {
      log(options.to === undefined ? 'nothing to revert: no migration is applied' : `nothing to revert: ${options.to} is the last applied`);
      return [];
    }
    const fileOf = (row: AppliedRow) => {
      const file = byName.get(row.name);
      if (!file) throw missingFile(row.name);
      if (file.checksum !== row.checksum) throw editedFile(row.name);
      return file;
    };
    const revertFiles = toRevert.map(fileOf);
    if (revertFiles.length > 0) {
      log(`checking the ${revertFiles.length} step(s) before reverting any`);
      const refusals = await downRefusals(session, revertFiles, {
        force: options.force === true,
        lockTimeout: options.lockTimeout ?? DEFAULT_LOCK_TIMEOUT,
        lockRetries: options.lockRetries ?? DEFAULT_LOCK_RETRIES,
        log,
      });
      if (refusals.length > 0) throw refusedRun(refusals, revertFiles.length);
    }
    const steps: AppliedStep[] = [];
    if (interrupted) {
      log(`${interrupted.name} was interrupted while being reverted; finishing that first (it is not counted)`);
      steps.push(await runStep(session, fileOf(interrupted), 'down', options, interrupted.resume_at));
    }
    for (const file of revertFiles) {
      // Checked again at its step: the database may have changed since the run's checks.
      if (!options.force) await refuseDroppingRows(session, file, steps.length);
      steps.push(await withRunProgress(steps.length, revertFiles.length, 'down', () => runStep(session, file, 'down', options)));
    }
    return steps;
  });
}

/**
 * The applied rows a revert takes, oldest first: the last `count`, or those after `to`. Checked
 * before the first step, not found out halfway.
 */
function revertedRows(whole: AppliedRow[], to: string | undefined, count: number | undefined): AppliedRow[] {
  if (to !== undefined) {
    const index = whole.findIndex((row) => row.name === to);
    if (index === -1) {
      throw new StoreError('INVALID_INPUT', `migration ${to} is not applied, so there is nothing to revert to`, {
        field: 'to',
        reason: 'not_applied',
      });
    }
    return whole.slice(index + 1);
  }
  if (whole.length === 0) return [];
  if (count! > whole.length) {
    throw new StoreError('INVALID_INPUT', `only ${whole.length} migration(s) are applied; cannot revert ${count}`, {
      field: 'count',
      reason: 'too_many',
    });
  }
  return whole.slice(-count!);
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
    if (row.state === 'applying') return interruptedEntry(file, row);
    if (row.checksum !== file.checksum)
      return { name: file.name, state: 'edited', appliedAt: new Date(row.applied_at).toISOString(), durationMs: row.duration_ms };
    if (row.state === 'applied')
      return { name: file.name, state: 'applied', appliedAt: new Date(row.applied_at).toISOString(), durationMs: row.duration_ms };
    return interruptedEntry(file, row);
  });
  for (const row of applied) {
    if (!fileNames.has(row.name)) {
      entries.push({ name: row.name, state: 'missing', appliedAt: new Date(row.applied_at).toISOString(), durationMs: row.duration_ms });
    }
  }
  entries.sort((a, b) => a.name.localeCompare(b.name));
  return { location: db.location, upToDate: entries.every((entry) => entry.state === 'applied'), migrations: entries };
}

/** A migration interrupted on its way up or down, as status tells it. */
function interruptedEntry(file: MigrationFile, row: AppliedRow): MigrationStatusEntry {
  const direction = row.state === 'applying' ? 'up' : 'down';
  const of = (direction === 'up' ? file.up : file.down).length;
  const done = direction === 'up' ? resumePoint(row, file) : row.resume_at;
  return direction === 'up'
    ? {
        name: file.name,
        state: 'partly_applied',
        progress: { done, of },
        hint: 'interrupted while being applied: run engine-store migrate up to finish it, or migrate down to revert it',
      }
    : {
        name: file.name,
        state: 'partly_reverted',
        progress: { done, of },
        hint: 'interrupted while being reverted: run engine-store migrate down to finish reverting it, or migrate up to apply it again',
      };
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
      if (options.signal?.aborted) {
        throw new StoreError('MIGRATION_INTERRUPTED', 'stopped while waiting for another migration run to finish; nothing was changed', {
          reason: 'interrupted',
        });
      }
      if (Date.now() >= deadline) {
        throw new StoreError(
          'MIGRATION_LOCKED',
          `another migration run still holds the migration lock after ${lockWaitMs} ms; try again when it has finished`,
        );
      }
      if (!announced) log('waiting for another migration run to finish...');
      announced = true;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    try {
      await session.query(MIGRATIONS_TABLE_DDL);
      // Only a table made by an earlier runner needs it: an ALTER would lock the table each run.
      const { rows: upgraded } = await session.query<{ present: boolean }>(
        `select exists (select from pg_attribute where attrelid = 'public.${MIGRATIONS_TABLE}'::regclass and attname = 'resume_at' and not attisdropped) as present`,
      );
      if (!upgraded[0]!.present) await session.query(MIGRATIONS_TABLE_UPGRADE);
      if (await isCitus(session)) {
        // A Citus coordinator: DDL propagates to the workers. The store's triggers run on each
        // shard (they read only the row's own organization), which Citus allows when told so.
        log('Citus coordinator: each statement also runs on the shards of the workers');
        await session.query('set citus.enable_unsafe_triggers = on');
      }
    } catch (error) {
      await releaseMigrationLock(session).catch(() => undefined);
      throw error;
    }
    const stopCancels = await cancelOnAbort(db, session, options.signal);
    let result: T;
    try {
      result = await work(session);
    } catch (error) {
      await stopCancels();
      // The first failure is the one to report; on a lost connection the server has released
      // the lock already.
      await releaseMigrationLock(session).catch(() => undefined);
      throw error;
    }
    await stopCancels();
    await releaseMigrationLock(session);
    return result;
  }, NO_DEADLINE);
}

async function releaseMigrationLock(session: Session): Promise<void> {
  await session.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
  await session.query('reset all');
}

/**
 * Until the returned function is called, aborting `signal` cancels the statement `session` is
 * running, from another of the pool's connections (PostgreSQL; the embedded database runs in
 * this process and its statements end on their own). The runner then stops before its next
 * statement. The returned function also waits for a cancel already on its way: one that arrived
 * late would cancel whatever the connection runs next (the lock's release, or, back in the pool,
 * another caller's statement), while a cancel that reaches an idle connection is ignored.
 */
async function cancelOnAbort(db: Database, session: Session, signal: AbortSignal | undefined): Promise<() => Promise<void>> {
  if (!signal || db.kind !== 'postgres') return async () => undefined;
  const { rows } = await session.query<{ pid: number }>('select pg_backend_pid() as pid');
  const pid = rows[0]!.pid;
  let sent: Promise<unknown> | undefined;
  const cancel = () => {
    sent = db.query('select pg_cancel_backend($1)', [pid]).catch(() => undefined);
  };
  signal.addEventListener('abort', cancel, { once: true });
  return async () => {
    signal.removeEventListener('abort', cancel);
    await sent;
  };
}

async function readApplied(session: Session): Promise<AppliedRow[]> {
  const { rows: exists } = await session.query<{ present: boolean }>('select to_regclass($1) is not null as present', [MIGRATIONS_TABLE]);
  if (!exists[0]?.present) return [];
  // select *: status also reads a table made by an earlier runner, without state and resume_at.
  const { rows } = await session.query<Partial<AppliedRow> & Pick<AppliedRow, 'name' | 'checksum' | 'applied_at' | 'duration_ms'>>(
    `select * from ${MIGRATIONS_TABLE} order by name`,
  );
  return rows.map((row) => ({ ...row, state: row.state ?? 'applied', resume_at: row.resume_at ?? 0 }));
}

function checkConsistency(files: MigrationFile[], applied: AppliedRow[]): void {
  const byName = new Map(files.map((file) => [file.name, file]));
  for (const row of applied) {
    const file = byName.get(row.name);
    if (!file) throw missingFile(row.name);
    // A migration interrupted on its way up is not applied yet: its file may be fixed.
    if (row.state !== 'applying' && file.checksum !== row.checksum) throw editedFile(row.name);
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

const TIMEOUT_VALUE = /^(\d+)(ms|s|min)?$/;
const MS_PER_UNIT: Record<string, number> = { ms: 1, s: 1_000, min: 60_000 };
/** The longest lock timeout and the most retries a run accepts (beyond them, a typo, not a plan). */
const MAX_LOCK_TIMEOUT_MS = 86_400_000;
const MAX_LOCK_RETRIES = 1_000;

/** A lock timeout in ms (PostgreSQL reads a bare number as ms), or undefined if it is not one. */
function lockTimeoutMs(text: string): number | undefined {
  const match = TIMEOUT_VALUE.exec(text);
  if (!match) return undefined;
  const ms = Number(match[1]) * MS_PER_UNIT[match[2] ?? 'ms']!;
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/**
 * The runner's options, checked before any work (even when nothing is pending), so that a bad
 * value is reported the same way every time. A lock timeout of 0 would mean "wait forever".
 */
export function checkRunnerOptions(options: RunnerOptions): void {
  const { lockTimeout = DEFAULT_LOCK_TIMEOUT, lockRetries = DEFAULT_LOCK_RETRIES } = options;
  const ms = typeof lockTimeout === 'string' ? lockTimeoutMs(lockTimeout) : undefined;
  if (ms === undefined || ms < 1 || ms > MAX_LOCK_TIMEOUT_MS) {
    throw new StoreError(
      'INVALID_INPUT',
      `lock timeout "${String(lockTimeout)}" is not a duration above zero and at most a day, such as 5s or 500ms`,
      { field: 'lockTimeout' },
    );
  }
  if (!Number.isInteger(lockRetries) || lockRetries < 0 || lockRetries > MAX_LOCK_RETRIES) {
    throw new StoreError('INVALID_INPUT', `lock retries must be a whole number from 0 to ${MAX_LOCK_RETRIES}`, { field: 'lockRetries' });
  }
}

/**
 * The pieces of a migration that succeed or fail together, are retried together when they meet
 * a lock timeout, and after which an interrupted run resumes: the whole file when it is
 * transactional; otherwise each statement, each explicit BEGIN ... COMMIT block, and each
 * rebuild of an index (see rebuiltIndex) on its own.
 */
export function unitsOf(statements: SqlStatement[], transactional: boolean): SqlStatement[][] {
  if (transactional) return [statements];
  const units: SqlStatement[][] = [];
  let block: SqlStatement[] | undefined;
  for (const statement of statements) {
    const keyword = firstKeyword(statement.text);
    const previous = units.at(-1);
    if (block) {
      block.push(statement);
      if (keyword === 'commit' || keyword === 'end') {
        units.push(block);
        block = undefined;
      }
    } else if (keyword === 'begin' || keyword === 'start') {
      block = [statement];
    } else if (previous?.length === 1 && rebuiltIndex(previous[0]!.text, statement.text)) {
      previous.push(statement);
    } else {
      units.push([statement]);
    }
  }
  if (block) units.push(block);
  return units;
}

const DROP_INDEX_IF_EXISTS = /^drop\s+index\s+concurrently\s+if\s+exists\s+([a-z_][a-z0-9_]*)\s*$/i;
const CREATE_INDEX_CONCURRENTLY = /^create\s+(?:unique\s+)?index\s+concurrently\s+([a-z_][a-z0-9_]*)\s/i;

/**
 * Whether `drop` and `create` rebuild one index: `DROP INDEX CONCURRENTLY IF EXISTS x` then
 * `CREATE INDEX CONCURRENTLY x`. A concurrent build that is interrupted leaves an INVALID x
 * behind, which only the drop before it clears, so the two resume together: never between them.
 */
function rebuiltIndex(drop: string, create: string): boolean {
  const dropped = DROP_INDEX_IF_EXISTS.exec(withoutLeadingComments(drop))?.[1];
  return dropped !== undefined && CREATE_INDEX_CONCURRENTLY.exec(withoutLeadingComments(create))?.[1] === dropped;
}

function firstKeyword(text: string): string {
  return withoutLeadingComments(text)
    .split(/[\s;(]/, 1)[0]!
    .toLowerCase();
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

/**
 * Runs one migration section, `up` or `down`, and records it. `resumeAt`, when the section was
 * interrupted before, is the number of its statements done (its bookkeeping row says so).
 */
async function runStep(
  session: Session,
  file: MigrationFile,
  direction: 'up' | 'down',
  options: RunnerOptions,
  resumeAt?: number,
): Promise<AppliedStep> {
  if (!options.tracer) return runStepUntraced(session, file, direction, options, resumeAt);
  const attributes = { 'engine_store.migration': file.name, 'engine_store.direction': direction };
  return observed({ tracer: options.tracer }, 'migration', attributes, () => runStepUntraced(session, file, direction, options, resumeAt));
}

async function runStepUntraced(
  session: Session,
  file: MigrationFile,
  direction: 'up' | 'down',
  options: RunnerOptions,
  resumeAt?: number,
): Promise<AppliedStep> {
  const log = options.log ?? (() => undefined);
  const lockTimeout = options.lockTimeout ?? DEFAULT_LOCK_TIMEOUT;
  const statements = direction === 'up' ? file.up : file.down;
  const arrow = direction === 'up' ? '↑' : '↓';
  const units = unitsOf(statements, file.transactional);
  const resumed = resumeAt !== undefined ? `, resumed after ${resumeAt} of its ${statements.length} statements` : '';
  log(`${arrow} ${file.name}${file.transactional ? '' : ' (outside a transaction)'}${resumed}`);
  const started = performance.now();
  // Session settings, not SET LOCAL: a non-transactional migration runs many transactions.
  await session.exec(`set lock_timeout = '${lockTimeout}'; set statement_timeout = 0; ${SERIAL_MAINTENANCE}`);
  const bookkeeping = new Bookkeeping(session, file, direction);
  const runner = new StatementRunner(session, file, direction, options, statements.length);
  const done = (durationMs: number): AppliedStep => {
    log(`  ${direction === 'up' ? 'applied' : 'reverted'} in ${durationMs} ms`);
    return { name: file.name, direction, durationMs };
  };

  if (file.transactional) {
    // The whole section and its bookkeeping, in one transaction: all of it or nothing.
    await runner.retryingLocks(async () => {
      await session.query('begin');
      await runner.run(units[0] ?? []);
      await bookkeeping.finish(Math.round(performance.now() - started));
      await session.query('commit');
    });
    return done(Math.round(performance.now() - started));
  }

  if (resumeAt === undefined) {
    await runner.once(() => bookkeeping.start());
    // A section that fails before it changed anything (a guard that refuses, say) is recorded as
    // never started, so that it does not hold up runs in the other direction.
    runner.onUntouchedFailure(() => bookkeeping.unstart());
  }
  const skipped = resumeAt ?? 0;
  let statementsDone = 0;
  for (const unit of units) {
    const isSet = unit.length === 1 && firstKeyword(unit[0]!.text) === 'set';
    if (statementsDone < skipped) {
      // What the statements before the resume point set for the session (SET statement_timeout,
      // say) was lost with the interrupted run's connection: set it again.
      if (isSet) await runner.once(() => session.query(unit[0]!.text));
      runner.skip(unit.length);
      statementsDone += unit.length;
      continue;
    }
    statementsDone += unit.length;
    if (!isBlock(unit)) {
      await runner.retryingLocks(() => runner.run(unit));
      // Recorded after the unit, in a transaction of its own: an interruption between the two
      // runs the unit again (each is written to allow that), and one after it does not, so a
      // finished concurrent index build is never built again.
      if (!isSet) await runner.once(() => bookkeeping.progress(statementsDone));
      continue;
    }
    // An explicit BEGIN ... COMMIT block commits together with the record of its progress.
    const body = unit.slice(0, -1);
    await runner.retryingLocks(async () => {
      await runner.run(body);
      // The block's own COMMIT is this one, with the progress before it.
      await runner.boundary();
      await bookkeeping.progress(statementsDone);
      await session.query('commit');
    }, unit.length);
  }
  await runner.boundary();
  const durationMs = Math.round(performance.now() - started);
  await runner.once(async () => {
    await session.query('begin');
    await bookkeeping.finish(durationMs);
    await session.query('commit');
  });
  return done(durationMs);
}

function isBlock(unit: SqlStatement[]): boolean {
  const last = firstKeyword(unit.at(-1)!.text);
  return unit.length > 1 && (last === 'commit' || last === 'end');
}

/** The bookkeeping row of one migration section under way. */
class Bookkeeping {
  constructor(
    private readonly session: Session,
    private readonly file: MigrationFile,
    private readonly direction: 'up' | 'down',
  ) {}

  /** Records the section as started, before its first statement (outside a transaction only). */
  async start(): Promise<void> {
    if (this.direction === 'up') {
      await this.session.query(
        `insert into ${MIGRATIONS_TABLE} (name, checksum, duration_ms, state, resume_at) values ($1, $2, 0, 'applying', 0)`,
        [this.file.name, this.file.checksum],
      );
    } else {
      await this.session.query(`update ${MIGRATIONS_TABLE} set state = 'reverting', resume_at = 0 where name = $1`, [this.file.name]);
    }
  }

  /** Undoes start(): the section stopped before any of its statements changed anything. */
  async unstart(): Promise<void> {
    if (this.direction === 'up') {
      await this.session.query(`delete from ${MIGRATIONS_TABLE} where name = $1 and state = 'applying'`, [this.file.name]);
    } else {
      await this.session.query(`update ${MIGRATIONS_TABLE} set state = 'applied' where name = $1 and state = 'reverting'`, [
        this.file.name,
      ]);
    }
  }

  /** How many statements are done: in the transaction of the block that completes them, or just after the unit. */
  async progress(statementsDone: number): Promise<void> {
    await this.session.query(`update ${MIGRATIONS_TABLE} set resume_at = $2 where name = $1`, [this.file.name, statementsDone]);
  }

  /** The section is done: applied (the row, whether or not it was started) or reverted (no row). */
  async finish(durationMs: number): Promise<void> {
    if (this.direction === 'up') {
      await this.session.query(
        `insert into ${MIGRATIONS_TABLE} (name, checksum, duration_ms) values ($1, $2, $3)
         on conflict (name) do update
           set checksum = excluded.checksum, state = 'applied', resume_at = 0, duration_ms = excluded.duration_ms, applied_at = now()`,
        [this.file.name, this.file.checksum, durationMs],
      );
    } else {
      await this.session.query(`delete from ${MIGRATIONS_TABLE} where name = $1`, [this.file.name]);
    }
  }
}

/**
 * Runs a section's statements one at a time: it knows which statement is next (for messages,
 * the test hook and the stop signal), retries a unit that met its lock timeout, cancels the
 * statement in flight when the run is stopped, and turns every failure into a StoreError that
 * says where the section stands.
 */
class StatementRunner {
  /** Index of the next statement in the section. */
  private next = 0;
  private current: SqlStatement | undefined;
  /** Whether a statement other than SET has completed in this run of the section. */
  private changed = false;
  private untouchedFailure: (() => Promise<void>) | undefined;

  constructor(
    private readonly session: Session,
    private readonly file: MigrationFile,
    private readonly direction: 'up' | 'down',
    private readonly options: RunnerOptions,
    private readonly total: number,
  ) {}

  skip(statements: number): void {
    this.next += statements;
  }

  /** What to do when the section fails before it changed anything. */
  onUntouchedFailure(undo: () => Promise<void>): void {
    this.untouchedFailure = undo;
  }

  /**
   * The point before the next statement (or, past the last, before the section is recorded):
   * where a stopped run stops, and where the tests' hook runs.
   */
  async boundary(): Promise<void> {
    this.stopIfAsked();
    await this.options.beforeStatement?.({ migration: this.file.name, direction: this.direction, index: this.next, of: this.total });
  }

  async run(unit: SqlStatement[]): Promise<void> {
    for (const statement of unit) {
      await this.boundary();
      this.current = statement;
      await runStatement(this.session, statement.text, this.options.lockTimeout ?? DEFAULT_LOCK_TIMEOUT);
      if (firstKeyword(statement.text) !== 'set') this.changed = true;
      this.current = undefined;
      this.next += 1;
    }
  }

  /** `work` once; on failure, rolls back whatever it left open and reports where it stopped. */
  async once(work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (error) {
      await this.session.query('rollback').catch(() => undefined);
      throw await this.failure(error, 1);
    }
  }

  /**
   * `unit` (a statement, a block, a whole transactional section), tried again with back-off
   * while it meets its lock timeout: a short lock_timeout keeps the queue behind a waiting ALTER
   * short, and retrying gets the lock between other transactions instead of stalling them.
   */
  async retryingLocks(unit: () => Promise<void>, statements?: number): Promise<void> {
    const first = this.next;
    const retries = this.options.lockRetries ?? DEFAULT_LOCK_RETRIES;
    for (let attempt = 0; ; attempt += 1) {
      try {
        await unit();
        if (statements !== undefined) this.next = first + statements;
        return;
      } catch (error) {
        await this.session.query('rollback').catch(() => undefined);
        if (databaseErrorFields(error)?.code === SQLSTATE.lockNotAvailable && attempt < retries && !this.options.signal?.aborted) {
          const delay = Math.min(100 * 2 ** attempt, 2_000) + Math.floor(Math.random() * 100);
          this.options.log?.(`  lock not available (attempt ${attempt + 1} of ${retries + 1}); retrying in ${delay} ms`);
          await sleep(delay);
          this.next = first;
          continue;
        }
        throw await this.failure(error, attempt + 1);
      }
    }
  }

  private stopIfAsked(): void {
    if (this.options.signal?.aborted) throw new Interrupted();
  }

  private async failure(error: unknown, attempts: number): Promise<StoreError> {
    const interrupted =
      error instanceof Interrupted ||
      (this.options.signal?.aborted === true && databaseErrorFields(error)?.code === SQLSTATE.queryCanceled);
    let untouched = false;
    if (!this.changed && this.untouchedFailure) {
      // On a lost connection this fails too, and the section stays recorded as started.
      untouched = await this.untouchedFailure().then(
        () => true,
        () => false,
      );
    }
    const at = { statement: this.current, index: this.next, of: this.total };
    return stepError(
      this.file,
      this.direction,
      at,
      interrupted ? new Interrupted() : error,
      this.options.lockTimeout ?? DEFAULT_LOCK_TIMEOUT,
      attempts,
      untouched,
    );
  }
}

/** The run was stopped through RunnerOptions.signal. */
class Interrupted extends Error {}

interface FailedAt {
  /** The statement that failed, when one did. */
  statement?: SqlStatement;
  /** Index of the statement that failed or would have run next. */
  index: number;
  of: number;
}

function stepError(
  file: MigrationFile,
  direction: 'up' | 'down',
  at: FailedAt,
  error: unknown,
  lockTimeout: string,
  attempts: number,
  untouched = false,
): StoreError {
  const fields = databaseErrorFields(error);
  const aftermath = (file: MigrationFile, direction: 'up' | 'down') => consequence(file, direction, untouched);
  const where = at.statement ? ` at line ${at.statement.line}` : '';
  const details = { migration: file.name };
  if (error instanceof Interrupted) {
    const point = at.statement
      ? `during statement ${at.index + 1} of ${at.of} (line ${at.statement.line}), which was cancelled`
      : `before statement ${at.index + 1} of ${at.of}`;
    return new StoreError(
      'MIGRATION_INTERRUPTED',
      `migration ${file.name} (${direction}) was stopped ${point}; ${aftermath(file, direction)}`,
      {
        ...details,
        reason: 'interrupted',
      },
    );
  }
  if (isStoreError(error, 'CONNECTION_LOST')) {
    return new StoreError(
      'CONNECTION_LOST',
      `${error.message}, in migration ${file.name} (${direction})${where}; ${aftermath(file, direction)}`,
      { ...details, reason: error.details.reason },
      { cause: error },
    );
  }
  if (fields?.code === SQLSTATE.lockNotAvailable) {
    return new StoreError(
      'LOCK_TIMEOUT',
      `migration ${file.name} (${direction}) could not take a lock${where} within lock_timeout ${lockTimeout}, ${attempts} time(s): ` +
        `a long transaction holds it. ${capitalize(aftermath(file, direction))}; run it again once that transaction has ended.`,
      { ...details, reason: 'lock_timeout' },
      { cause: error },
    );
  }
  const reason = fields?.message ?? (error instanceof Error ? error.message : String(error));
  return new StoreError(
    'MIGRATION_FAILED',
    // The server's message names the problem in the migration's own terms; its detail is left
    // out, since it can quote rows (the duplicates a new unique index found, say).
    `migration ${file.name} (${direction}) failed${where}: ${reason}; ${aftermath(file, direction)}`,
    { ...details, reason: fields?.code ?? 'error' },
    { cause: error },
  );
}

/** What a failed or stopped section left behind, and what to run next. */
function consequence(file: MigrationFile, direction: 'up' | 'down', untouched: boolean): string {
  if (file.transactional || untouched) return `nothing of it was ${direction === 'up' ? 'applied' : 'reverted'}`;
  return direction === 'up'
    ? 'it runs outside a transaction, so it is now partly applied (migrate status shows how far): run engine-store migrate up to finish it, or migrate down to revert it'
    : 'it runs outside a transaction, so it is now partly reverted (migrate status shows how far): run engine-store migrate down to finish reverting it, or migrate up to apply it again';
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
