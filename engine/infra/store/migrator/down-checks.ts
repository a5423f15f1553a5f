/**
 * What a revert must not do, and the checks that say so before it starts.
 *
 * A down section may refuse: its `-- engine-store: down-guard` blocks raise
 * `object_not_in_prerequisite_state` (SQLSTATE 55000) when reverting would lose data, and the
 * runner itself refuses to drop a table that holds rows unless forced. Found out step by step, a
 * refusal at the eighth step of `migrate down 8` comes after seven steps were reverted, and leaves
 * a store that refuses to open. So `migrate down` first evaluates every guard of every step it is
 * about to take, against the database as the run finds it, and refuses with the whole list, or
 * goes on to revert all the steps. Each step still checks its own guards when it runs, against a
 * change made between the check and the step.
 *
 * A guard is therefore written to hold of the database as it is before the whole run, with every
 * newer migration still applied (see 20261128120000's, which leaves out the default organization
 * that reverting 20261128120100 deletes).
 */
import type { Session } from '../connection/database.ts';
import { databaseErrorFields, SQLSTATE } from '../connection/database-errors.ts';
import { DEFAULT_ORG_ID } from '../repositories/default-organization.ts';
import { StoreError } from '../errors.ts';
import { isDownGuard, type MigrationFile } from './migration-files.ts';
import type { SqlStatement } from './sql-split.ts';
import { quoteIdent } from '../connection/run.ts';

/** What a down guard raises to refuse: object_not_in_prerequisite_state. */
const GUARD_REFUSED = '55000';

export interface DownRefusal {
  migration: string;
  /** `down_guard`: a down guard of the migration; `would_drop_rows`: the runner's own check. */
  reason: 'down_guard' | 'would_drop_rows';
  message: string;
}

/**
 * Tables whose rows a revert may drop: reference data the migrations themselves seed (and
 * role_grants, a copy of role_permissions), the rate-limit counters (this hour's counts, and
 * their saved copies), the counts of refused verifications, the audit trail's retention setting,
 * and the scope key, which the migration makes anew (everything it signed ends with the tables it
 * protected). Not the audit events and heads: history.
 */
const DISPOSABLE_TABLES = new Set([
  'permissions',
  'role_permissions',
  'role_grants',
  'api_key_usage',
  'api_key_usage_saved',
  'api_key_leases',
  'api_key_auth_failures',
  'audit_retention',
  'tenant_scope_key',
]);

/**
 * Rows that a run deletes itself before it drops their table, left out when the check is made
 * before the run: reverting 20261128120100 deletes the default organization (its own guard has
 * refused first if the organization had users or engine state of others).
 */
const ROWS_GONE_BEFORE_THE_DROP: Record<string, string> = {
  organizations: `id <> '${DEFAULT_ORG_ID}'`,
};

/** `drop table <name>` in a down section: the tables a revert would destroy. */
const DROP_TABLE = /^\s*drop\s+table\s+(?:if\s+exists\s+)?([a-z_][a-z0-9_]*)/gim;

/**
 * The tables of `file`'s down section that hold rows (those of ROWS_GONE_BEFORE_THE_DROP left
 * out when `beforeTheRun`), each with the refusal to drop it.
 */
async function tablesThatWouldLoseRows(session: Session, file: MigrationFile, beforeTheRun: boolean): Promise<DownRefusal[]> {
  const refusals: DownRefusal[] = [];
  for (const statement of file.down) {
    for (const match of statement.text.matchAll(DROP_TABLE)) {
      const table = match[1]!;
      if (DISPOSABLE_TABLES.has(table)) continue;
      const { rows } = await session.query<{ present: boolean }>('select to_regclass($1) is not null as present', [`public.${table}`]);
      if (!rows[0]!.present) continue;
      const kept = beforeTheRun ? ROWS_GONE_BEFORE_THE_DROP[table] : undefined;
      const { rows: held } = await session.query<{ any: boolean }>(
        // select 1, not an empty select list, which Citus cannot plan on a distributed table (42601).
        `select exists (select 1 from public.${table}${kept ? ` where ${kept}` : ''}) as any`,
      );
      if (held[0]!.any) {
        refusals.push({
          migration: file.name,
          reason: 'would_drop_rows',
          message: `reverting ${file.name} would drop table ${table}, which holds rows (back the data up, then run again with --force to drop it)`,
        });
      }
    }
  }
  return refusals;
}

/**
 * Refuses, just before its step, a revert that would drop a table holding rows (the 2025
 * baseline's downs drop the engine's tables without a guard of their own, and those files never
 * change). `force` is the operator's explicit consent.
 */
export async function refuseDroppingRows(session: Session, file: MigrationFile, revertedBefore: number): Promise<void> {
  const [refusal] = await tablesThatWouldLoseRows(session, file, false);
  if (!refusal) return;
  const after = revertedBefore > 0 ? ` (the ${revertedBefore} migration(s) after it were)` : '';
  throw new StoreError('CONFLICT', `${refusal.message}; it was not reverted${after}`, {
    migration: file.name,
    reason: 'would_drop_rows',
  });
}

export interface DownCheckOptions {
  force: boolean;
  lockTimeout: string;
  lockRetries: number;
  log: (line: string) => void;
}

/**
 * Every refusal that reverting `files` (newest first) would meet, found in one transaction that
 * is rolled back whatever happens: nothing is changed, and an interrupted check leaves nothing.
 */
export async function downRefusals(session: Session, files: MigrationFile[], options: DownCheckOptions): Promise<DownRefusal[]> {
  for (let attempt = 0; ; attempt += 1) {
    let refusals: DownRefusal[];
    try {
      await session.query('begin');
      await session.exec(`set local lock_timeout = '${options.lockTimeout}'; set local statement_timeout = '60s'`);
      await readEveryRow(session);
      refusals = [];
      for (const file of files) {
        for (const guard of file.down.filter(isDownGuard)) {
          const refusal = await guardRefusal(session, file, guard);
          if (refusal) refusals.push(refusal);
        }
        if (!options.force) refusals.push(...(await tablesThatWouldLoseRows(session, file, true)));
      }
    } catch (error) {
      // Before any wait: the locks the check took go with its transaction.
      await session.query('rollback').catch(() => undefined);
      if (databaseErrorFields(error)?.code !== SQLSTATE.lockNotAvailable) throw error;
      if (attempt >= options.lockRetries) {
        throw new StoreError(
          'LOCK_TIMEOUT',
          `the checks before the revert could not take a lock within lock_timeout ${options.lockTimeout}, ${attempt + 1} time(s): ` +
            'a long transaction holds one. Nothing was reverted; run it again once that transaction has ended.',
          { reason: 'lock_timeout' },
          { cause: error },
        );
      }
      const delay = Math.min(100 * 2 ** attempt, 2_000);
      options.log(`  lock not available for the checks (attempt ${attempt + 1} of ${options.lockRetries + 1}); retrying in ${delay} ms`);
      await new Promise((resolve) => setTimeout(resolve, delay));
      continue;
    }
    await session.query('rollback');
    return refusals;
  }
}

/**
 * Lets the owner read every row for the rest of the check's transaction. The tenant tables force
 * row-level security on their owner too, with policies for the tenant roles only, so an owner
 * that is not a superuser reads none of their rows: the guards, which the revert runs after it
 * lifted that, would find nothing to refuse. Rolled back with the check.
 */
async function readEveryRow(session: Session): Promise<void> {
  const { rows } = await session.query<{ table: string; bypasses: boolean }>(
    `select c.relname as table, r.rolsuper or r.rolbypassrls as bypasses
       from pg_class c
       join pg_namespace n on n.oid = c.relnamespace
       join pg_roles r on r.rolname = current_user
      where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relforcerowsecurity
      order by c.relname`,
  );
  for (const { table, bypasses } of rows) {
    if (!bypasses) await session.query(`alter table public.${quoteIdent(table)} no force row level security`);
  }
}

/** The refusal of one down guard, or undefined when it lets the revert through. */
async function guardRefusal(session: Session, file: MigrationFile, guard: SqlStatement): Promise<DownRefusal | undefined> {
  await session.query('savepoint down_guard');
  try {
    await session.query(guard.text);
    await session.query('release savepoint down_guard');
    return undefined;
  } catch (error) {
    const fields = databaseErrorFields(error);
    if (fields?.code !== GUARD_REFUSED) throw error;
    await session.query('rollback to savepoint down_guard');
    const hint = fields.hint ? ` (${fields.hint})` : '';
    return { migration: file.name, reason: 'down_guard', message: `${file.name}: ${fields.message}${hint}` };
  }
}

/** The refusal of a whole run, before any of it: every step that would refuse, and why. */
export function refusedRun(refusals: DownRefusal[], steps: number): StoreError {
  const first = refusals[0]!;
  return new StoreError(
    'CONFLICT',
    `reverting ${steps} migration(s) was refused before the first of them, so nothing was reverted:\n` +
      refusals.map((refusal) => `  - ${refusal.message}`).join('\n'),
    { migration: first.migration, reason: first.reason, refusals },
  );
}
