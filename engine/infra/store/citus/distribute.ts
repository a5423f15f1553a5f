/**
 * Moves a migrated database onto Citus: the global tables become reference tables (a copy on
 * every node) and the tenant tables are sharded by org_id in one co-location group (layout.ts).
 *
 * Run on the coordinator, as the schema owner, on a database whose workers are added
 * (citus_add_node) and whose schema is at the latest migration. It is idempotent: what is
 * already in place is left alone, and a second run reports that nothing was left to do.
 *
 * All of it is one transaction: Citus cannot shard a table that an unsharded table still refers
 * to (or the reverse), so the foreign keys between the store's tables are dropped first and
 * added back once every table is in place. A crash, a lost connection or a refusal midway rolls
 * everything back (Citus commits across nodes with two-phase commit), so the database is either
 * as it was or fully distributed. Writers are blocked while the rows are copied into the shards:
 * run it in a maintenance window.
 */
import { NO_DEADLINE, type Database, type Session } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { quoteIdent } from '../connection/run.ts';
import { migrationStatus } from '../migrator/runner.ts';
import { isCitus } from './detect.ts';
import {
  AUDIT_CAPTURE_TRIGGERS,
  DISTRIBUTED_TABLES,
  DISTRIBUTION_COLUMN,
  NODE_LOCAL_TABLES,
  REFERENCE_TABLES,
  TRIGGERS_NOT_ON_CITUS,
} from './layout.ts';

export interface DistributeOptions {
  /** Shards per distributed table (default 32: many per node, so that adding nodes can spread them). */
  shardCount?: number;
  log?: (line: string) => void;
}

export interface DistributionReport {
  /** The coordinator's view of its workers when the command ran. */
  workers: number;
  /** Tables this run turned into reference tables, or distributed; empty when all was in place. */
  referenceTables: string[];
  distributedTables: string[];
  /** Rows of every table, counted before and after in the same transaction (they must match). */
  rows: Record<string, number>;
}

type Placement = 'local' | 'reference' | 'distributed' | 'other';

interface TableState {
  table: string;
  placement: Placement;
  /** For a distributed table, its distribution column. */
  column: string | null;
}

const DEFAULT_SHARD_COUNT = 32;

function refused(reason: string, message: string): StoreError {
  return new StoreError('DISTRIBUTION_REFUSED', message, { reason });
}

/**
 * Distributes the store's tables on the Citus cluster `db` is the coordinator of.
 *
 * @example
 * const report = await distributeOnCitus(db, { log: console.log });
 */
export async function distributeOnCitus(db: Database, options: DistributeOptions = {}): Promise<DistributionReport> {
  const log = options.log ?? (() => undefined);
  const shardCount = options.shardCount ?? DEFAULT_SHARD_COUNT;
  if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > 64_000) {
    throw new StoreError('INVALID_INPUT', 'the shard count must be a whole number from 1 to 64,000', { field: 'shardCount' });
  }
  if (db.kind === 'pglite')
    throw refused('embedded', 'the embedded database cannot be distributed: point the command at a Citus coordinator');
  if (!(await isCitus(db))) {
    throw refused(
      'citus_missing',
      'this database has no Citus extension: create it on the coordinator and every worker (CREATE EXTENSION citus), then add the workers (citus_add_node)',
    );
  }
  const workers = await activeWorkers(db);
  if (workers === 0)
    throw refused('no_workers', 'the coordinator has no active worker: add them first (SELECT citus_add_node(host, port))');
  const status = await migrationStatus(db);
  if (!status.upToDate) {
    throw new StoreError(
      'SCHEMA_OUT_OF_DATE',
      'the schema is not at the latest migration: run `engine-store migrate up` first, then distribute',
      {
        reason: 'migrations_pending',
      },
    );
  }

  return db.withSession(async (session) => {
    await session.query('begin');
    try {
      // Citus runs the store's triggers on each shard; they read only the row's own organization.
      await session.exec(
        `set local citus.enable_unsafe_triggers = on; set local citus.shard_count = ${shardCount};
         set local citus.multi_shard_modify_mode = 'sequential'`,
      );
      const before = await tableStates(session);
      refuseForeignLayouts(before);
      const toReference = REFERENCE_TABLES.filter((table) => before.get(table)!.placement !== 'reference');
      const toDistribute = DISTRIBUTED_TABLES.filter((table) => before.get(table)!.placement !== 'distributed');
      const rowsBefore = await countRows(session);
      await copyScopeKeyToWorkers(session);
      if (toReference.length === 0 && toDistribute.length === 0) {
        await session.query('commit');
        log(`already distributed over ${workers} worker(s): nothing to do`);
        return { workers, referenceTables: [], distributedTables: [], rows: rowsBefore };
      }

      const policies = await callPolicyFunctionsPerRow(session);
      if (policies > 0)
        log(`${policies} row-level security policies call the scope functions per row (Citus refuses sub-selects in policies)`);
      const foreignKeys = await dropForeignKeys(session);
      log(`${foreignKeys.length} foreign keys set aside until every table is in place`);
      for (const { table, trigger } of TRIGGERS_NOT_ON_CITUS) {
        await session.query(`drop trigger if exists ${quoteIdent(trigger)} on public.${quoteIdent(table)}`);
      }
      const auditTriggers = await setAsideTriggers(session, AUDIT_CAPTURE_TRIGGERS);
      for (const table of toReference) {
        log(`reference table ${table} (${rowsBefore[table]} rows): copying to every node`);
        await session.query('select create_reference_table($1)', [table]);
      }
      for (const table of toDistribute) {
        log(`distributed table ${table} (${rowsBefore[table]} rows): ${shardCount} shards by ${DISTRIBUTION_COLUMN}`);
        // The first starts the store's own co-location group; every other joins it.
        const colocateWith = table === DISTRIBUTED_TABLES[0] ? 'none' : DISTRIBUTED_TABLES[0];
        await session.query('select create_distributed_table($1, $2, colocate_with => $3)', [table, DISTRIBUTION_COLUMN, colocateWith]);
      }
      for (const key of foreignKeys) {
        log(`foreign key ${key.name} on ${key.table}: checking every row`);
        await session.query(`alter table public.${quoteIdent(key.table)} add constraint ${quoteIdent(key.name)} ${key.definition}`);
      }
      for (const definition of auditTriggers) await session.query(definition);
      if (auditTriggers.length > 0) log(`${auditTriggers.length} audit capture triggers back in place, on every shard`);
      // verify_api_key runs as app_key_verifier, and Citus reaches the workers as the current
      // role: it must be able to log in there (from the coordinator only: see docs/scaling-out.md).
      // Only when it cannot yet: ALTER ROLE rewrites the role's row on every node, and two
      // databases of one cluster distributed at the same time would collide on it ("tuple
      // concurrently updated", XX000).
      const { rows: verifier } = await session.query<{ login: boolean }>(
        `select rolcanlogin as login from pg_catalog.pg_roles where rolname = 'app_key_verifier'`,
      );
      if (!verifier[0]?.login) {
        log('app_key_verifier may log in, so that key verification reaches the workers');
        await session.query('alter role app_key_verifier login');
      }
      const rowsAfter = await countRows(session);
      const lost = Object.keys(rowsBefore).filter((table) => rowsBefore[table] !== rowsAfter[table]);
      if (lost.length > 0) {
        throw new StoreError('DATABASE_ERROR', `row counts changed while distributing ${lost.join(', ')}: rolled back`, {
          reason: 'rows_changed',
        });
      }
      await session.query('commit');
      log(`distributed over ${workers} worker(s); every table has the rows it had`);
      return { workers, referenceTables: toReference, distributedTables: toDistribute, rows: rowsAfter };
    } catch (error) {
      await session.query('rollback').catch(() => undefined);
      throw error;
    }
  }, NO_DEADLINE);
}

async function activeWorkers(db: Database): Promise<number> {
  const { rows } = await db.query<{ workers: number }>(
    `select count(*)::int as workers from pg_catalog.pg_dist_node where isactive and noderole = 'primary' and groupid <> 0`,
  );
  return rows[0]!.workers;
}

async function tableStates(session: Session): Promise<Map<string, TableState>> {
  const { rows } = await session.query<TableState>(
    `select t.name as table,
            case when p.logicalrelid is null then 'local'
                 when p.partmethod = 'n' and p.repmodel = 't' then 'reference'
                 when p.partmethod = 'h' then 'distributed'
                 else 'other' end as placement,
            case when p.partmethod = 'h' then pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) end as column
       from unnest($1::text[]) as t(name)
       left join pg_catalog.pg_dist_partition p on p.logicalrelid = pg_catalog.to_regclass('public.' || pg_catalog.quote_ident(t.name))`,
    [[...REFERENCE_TABLES, ...DISTRIBUTED_TABLES]],
  );
  return new Map(rows.map((row) => [row.table, row]));
}

/** Tables already on Citus, but not as the store lays them out: the operator decides, not this command. */
function refuseForeignLayouts(states: Map<string, TableState>): void {
  for (const table of REFERENCE_TABLES) {
    const state = states.get(table)!;
    if (state.placement === 'distributed' || state.placement === 'other') {
      throw refused(
        'unexpected_layout',
        `table ${table} is already on Citus, but not as a reference table: undo that (undistribute_table) and run again`,
      );
    }
  }
  for (const table of DISTRIBUTED_TABLES) {
    const state = states.get(table)!;
    if (state.placement === 'reference' || (state.placement === 'distributed' && state.column !== DISTRIBUTION_COLUMN)) {
      throw refused(
        'unexpected_layout',
        `table ${table} is already on Citus, but not sharded by ${DISTRIBUTION_COLUMN}: undo that (undistribute_table) and run again`,
      );
    }
  }
}

interface ForeignKey {
  table: string;
  name: string;
  definition: string;
}

/** Drops `triggers` where they exist, and returns their definitions to create them again. */
async function setAsideTriggers(session: Session, triggers: readonly { table: string; trigger: string }[]): Promise<string[]> {
  const { rows } = await session.query<{ table: string; trigger: string; definition: string }>(
    `select c.relname as table, t.tgname as trigger, pg_catalog.pg_get_triggerdef(t.oid) as definition
       from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid
       join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and (c.relname, t.tgname) in (select * from unnest($1::text[], $2::text[]))
      order by 1, 2`,
    [triggers.map((t) => t.table), triggers.map((t) => t.trigger)],
  );
  for (const row of rows) await session.query(`drop trigger ${quoteIdent(row.trigger)} on public.${quoteIdent(row.table)}`);
  return rows.map((row) => row.definition);
}

/** Drops every foreign key between the store's tables and returns them, to be added back. */
async function dropForeignKeys(session: Session): Promise<ForeignKey[]> {
  const { rows } = await session.query<ForeignKey>(
    `select c.relname as table, con.conname as name, pg_catalog.pg_get_constraintdef(con.oid) as definition
       from pg_catalog.pg_constraint con
       join pg_catalog.pg_class c on c.oid = con.conrelid
       join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where con.contype = 'f' and n.nspname = 'public' and c.relname = any ($1::text[])
      order by c.relname, con.conname`,
    [[...REFERENCE_TABLES, ...DISTRIBUTED_TABLES]],
  );
  for (const key of rows) await session.query(`alter table public.${quoteIdent(key.table)} drop constraint ${quoteIdent(key.name)}`);
  return rows;
}

/**
 * The scope key, on every worker, as the migration creates it on the coordinator (NODE_LOCAL_TABLES
 * says why it is not a reference table). Every run copies it again: after the key is rotated
 * (rotate_tenant_scope_key()), or a worker is added, run the command once more; until then the
 * workers refuse every scope (a signature they cannot check is refused, a missing table fails).
 */
const SCOPE_KEY_ON_WORKER = `create table if not exists public.tenant_scope_key (
    id smallint not null default 1, secret bytea not null, inner_pad bytea not null, outer_pad bytea not null,
    created_at timestamptz not null default now(),
    constraint tenant_scope_key_pkey primary key (id),
    constraint tenant_scope_key_id_check check (id = 1),
    constraint tenant_scope_key_secret_check check (octet_length(secret) = 32),
    constraint tenant_scope_key_pads_check check (octet_length(inner_pad) = 64 and octet_length(outer_pad) = 64));
  revoke all on public.tenant_scope_key from public;
  insert into public.tenant_scope_key (id, secret, inner_pad, outer_pad, created_at) values (1, %L, %L, %L, %L)
  on conflict on constraint tenant_scope_key_pkey do update
  set secret = excluded.secret, inner_pad = excluded.inner_pad, outer_pad = excluded.outer_pad, created_at = excluded.created_at`;

async function copyScopeKeyToWorkers(session: Session): Promise<void> {
  const { rows } = await session.query<{ failures: number }>(
    `select count(*) filter (where not w.success)::int as failures
       from public.tenant_scope_key k,
            run_command_on_workers(pg_catalog.format($1, k.secret, k.inner_pad, k.outer_pad, k.created_at)) w
      where k.id = 1`,
    [SCOPE_KEY_ON_WORKER],
  );
  if (rows[0]?.failures !== 0) {
    throw refused('scope_key', `the tenant scope key (${NODE_LOCAL_TABLES.join(', ')}) could not be copied to every worker`);
  }
}

/** `(SELECT visible_org_id() AS visible_org_id)`, as PostgreSQL prints the policies' once-per-statement call. */
const ONCE_PER_STATEMENT = /\(\s*SELECT\s+((?:public\.)?(?:visible_org_id|current_org_id))\(\)\s+AS\s+\w+\)/gi;

/** A policy expression as distribution leaves it: the scope functions called per row. */
export function policyExpressionOnCitus(expression: string | null): string | null {
  return expression?.replace(ONCE_PER_STATEMENT, '$1()') ?? null;
}

/**
 * The policies call visible_org_id() and current_org_id() once per statement, through a
 * sub-select (an InitPlan: checking a scope's signature costs a few microseconds, see migration
 * 20261128130000). Citus refuses sub-selects in the policies of its tables, so here they become
 * plain calls, which the workers evaluate per row from the settings the coordinator propagates.
 * Returns how many policies changed; any other sub-select is refused rather than guessed at.
 */
async function callPolicyFunctionsPerRow(session: Session): Promise<number> {
  const { rows } = await session.query<{ table: string; name: string; using: string | null; check: string | null }>(
    `select c.relname as table, p.polname as name,
            pg_catalog.pg_get_expr(p.polqual, p.polrelid) as using, pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) as check
       from pg_catalog.pg_policy p
       join pg_catalog.pg_class c on c.oid = p.polrelid
       join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relname = any ($1::text[])
      order by c.relname, p.polname`,
    [[...REFERENCE_TABLES, ...DISTRIBUTED_TABLES]],
  );
  let changed = 0;
  for (const policy of rows) {
    const using = policyExpressionOnCitus(policy.using);
    const check = policyExpressionOnCitus(policy.check);
    if (using === policy.using && check === policy.check) continue;
    if (/\bselect\b/i.test(`${using ?? ''} ${check ?? ''}`)) {
      throw refused('policy_subquery', `policy ${policy.name} on ${policy.table} has a sub-select Citus cannot run: rewrite it first`);
    }
    await session.query(
      `alter policy ${quoteIdent(policy.name)} on public.${quoteIdent(policy.table)}` +
        (using !== null ? ` using (${using})` : '') +
        (check !== null ? ` with check (${check})` : ''),
    );
    changed += 1;
  }
  return changed;
}

async function countRows(session: Session): Promise<Record<string, number>> {
  const tables = [...REFERENCE_TABLES, ...DISTRIBUTED_TABLES];
  const { rows } = await session.query<Record<string, string>>(
    `select ${tables.map((table) => `(select count(*) from public.${quoteIdent(table)}) as ${quoteIdent(table)}`).join(', ')}`,
  );
  return Object.fromEntries(tables.map((table) => [table, Number(rows[0]![table])]));
}
