/**
 * Checks of the data itself, not the schema: what the catalog checks cannot see.
 *
 * Always (cheap):
 * - the default organization is there once its migration is applied (the engine's legacy rows
 *   belong to it; a damaged `organizations` file once showed as an empty list, with exit 0);
 * - no table whose file is empty while the statistics say it holds rows (a truncated file, which
 *   PostgreSQL reads as an empty table without a word);
 * - role_grants, the copy of role_permissions that verification reads, agrees with it (on Citus
 *   nothing keeps them together: see migration 20261128140000).
 *
 * `deep` (reads everything; for a maintenance window or a replica):
 * - PostgreSQL: amcheck's `verify_heapam` on every table and `bt_index_check` (with
 *   heapallindexed) on every B-tree index of the store's schema, where the login may use them:
 *   amcheck installed and executable by it, or a superuser (who gets it in a transaction that
 *   is rolled back, so the database is left as it was). Row-level security does not apply to
 *   them, so a tenant table is read whole even by an owner that sees none of its rows.
 * - The embedded database: a full read of every table, each row turned into text (every column
 *   read, every TOASTed value detoasted). Its one user is a superuser: row-level security does
 *   not hide rows from it.
 */
import { NO_DEADLINE, type Database, type Session } from '../connection/database.ts';
import { databaseErrorFields, SQLSTATE } from '../connection/database-errors.ts';
import { DEFAULT_ORG_ID } from '../repositories/default-organization.ts';
import { MIGRATIONS_TABLE } from '../migrator/runner.ts';
import { quoteIdent } from '../connection/run.ts';
import type { Finding } from './doctor.ts';
import { isCitus } from '../citus/detect.ts';
import { DISTRIBUTED_TABLES, DISTRIBUTION_COLUMN, REFERENCE_TABLES } from '../citus/layout.ts';

/** The migration that brings the default organization (and moves the engine's rows into it). */
const DEFAULT_ORG_MIGRATION = '20261128120100_update_existing_tables_for_multitenancy';

export async function checkDefaultOrganization(db: Database, findings: Finding[]): Promise<void> {
  const { rows: tables } = await db.query<{ present: boolean }>(
    `select to_regclass('public.${MIGRATIONS_TABLE}') is not null and to_regclass('public.organizations') is not null as present`,
  );
  if (!tables[0]!.present) return;
  let rows: { applied: boolean; present: boolean }[];
  try {
    ({ rows } = await db.query<{ applied: boolean; present: boolean }>(
      `select exists (select from public.${MIGRATIONS_TABLE} where name = $1 and state = 'applied') as applied,
              exists (select from public.organizations where id = $2) as present`,
      [DEFAULT_ORG_MIGRATION, DEFAULT_ORG_ID],
    ));
  } catch (error) {
    // Class XX: the server found the data damaged (an invalid page, say) while reading it.
    const fields = databaseErrorFields(error);
    if (!fields?.code?.startsWith('XX')) throw error;
    findings.push(
      corrupt('HEAP_CORRUPTION', `the organizations table cannot be read: ${fields.message} (SQLSTATE ${fields.code})`, 'organizations'),
    );
    return;
  }
  if (rows[0]!.applied && !rows[0]!.present) {
    findings.push({
      code: 'DEFAULT_ORG_MISSING',
      severity: 'error',
      message: `the default organization (${DEFAULT_ORG_ID}) is missing: the engine's rows from before multi-tenancy belong to it. If nobody purged it, the organizations table is damaged: run doctor --deep, and restore from a backup`,
      object: 'organizations',
    });
  }
}

/** Roles whose permissions in role_grants are not role_permissions' (each side as a sorted list). */
export async function checkRoleGrants(db: Database, findings: Finding[]): Promise<void> {
  const { rows: present } = await db.query<{ present: boolean }>(`select to_regclass('public.role_grants') is not null as present`);
  if (!present[0]!.present) return;
  const { rows } = await db.query<{ role: string }>(
    `select coalesce(m.role, g.role) as role
       from (select role, array_agg(permission order by permission) as permissions from public.role_permissions group by role) m
       full join public.role_grants g on g.role = m.role
      where m.permissions is distinct from g.permissions
      order by 1`,
  );
  if (rows.length === 0) return;
  findings.push({
    code: 'ROLE_GRANTS_STALE',
    severity: 'error',
    message: `role_grants, which key verification reads, disagrees with role_permissions for ${rows.map((row) => row.role).join(', ')}: verifications return the permissions of the copy. Run SELECT refresh_role_grants() as the owner`,
    object: 'role_grants',
  });
}

export async function checkTruncatedTables(db: Database, findings: Finding[]): Promise<void> {
  const { rows } = await db.query<{ table: string; reltuples: number }>(
    `select c.relname as table, c.reltuples::float8 as reltuples
       from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and c.reltuples > 0
        and pg_relation_size(c.oid) = 0
      order by c.relname`,
  );
  for (const { table, reltuples } of rows) {
    findings.push({
      code: 'TABLE_FILE_EMPTY',
      severity: 'error',
      message: `table ${table}'s file is empty, while the statistics say it held about ${Math.round(reltuples)} row(s): its file was truncated outside PostgreSQL, and it reads as empty. Restore from a backup`,
      object: table,
    });
  }
}

/** The store's tables and their B-tree indexes, by name and oid. */
async function relations(session: Session): Promise<{ tables: Relation[]; indexes: Relation[] }> {
  const { rows } = await session.query<Relation & { kind: string }>(
    `select c.oid::int8 as oid, c.relname as name, c.relkind::text as kind
       from pg_class c
       left join pg_am am on am.oid = c.relam
      where c.relnamespace = 'public'::regnamespace
        and (c.relkind = 'r' or (c.relkind = 'i' and am.amname = 'btree'))
      order by c.relname`,
  );
  return { tables: rows.filter((row) => row.kind === 'r'), indexes: rows.filter((row) => row.kind === 'i') };
}

interface Relation {
  oid: number;
  name: string;
}

export async function deepChecks(db: Database, findings: Finding[]): Promise<void> {
  await db.withSession(async (session) => {
    await session.query('begin');
    try {
      if (db.kind === 'pglite') await readEveryRow(session, findings);
      else await amcheck(session, findings);
    } catch (error) {
      if (databaseErrorFields(error)?.code !== SQLSTATE.insufficientPrivilege) throw error;
      findings.push({
        code: 'DEEP_CHECK_NOT_RUN',
        severity: 'warning',
        message: `doctor --deep did not finish: ${databaseErrorFields(error)!.message}`,
      });
    } finally {
      await session.query('rollback').catch(() => undefined);
    }
  }, NO_DEADLINE);
}

/** Each table read whole, by a sequential scan that turns every row into text. */
async function readEveryRow(session: Session, findings: Finding[]): Promise<void> {
  await session.exec('set local enable_indexscan = off; set local enable_indexonlyscan = off; set local enable_bitmapscan = off');
  const { tables } = await relations(session);
  for (const table of tables) {
    const failure = await inSavepoint(session, () =>
      session.query(`select count(*), sum(length(t::text)) from only public.${quoteIdent(table.name)} t`),
    );
    if (failure) findings.push(corrupt('HEAP_CORRUPTION', `table ${table.name} cannot be read whole: ${failure}`, table.name));
  }
}

async function amcheck(session: Session, findings: Finding[]): Promise<void> {
  const schema = await amcheckSchema(session);
  if (typeof schema !== 'string') {
    findings.push({ code: 'DEEP_CHECK_NOT_RUN', severity: 'warning', message: schema.why });
    return;
  }
  const { tables, indexes } = await relations(session);
  for (const table of tables) {
    let problems: { count: number; first: string | null } | undefined;
    const failure = await inSavepoint(session, async () => {
      const { rows } = await session.query<{ count: number; first: string | null }>(
        `select count(*)::int as count, min(format('block %s, offset %s: %s', blkno, offnum, msg)) as first
           from ${schema}.verify_heapam($1::oid::regclass, check_toast => true)`,
        [table.oid],
      );
      problems = rows[0];
    });
    if (failure) findings.push(corrupt('HEAP_CORRUPTION', `table ${table.name} cannot be checked: ${failure}`, table.name));
    else if (problems && problems.count > 0) {
      findings.push(
        corrupt('HEAP_CORRUPTION', `table ${table.name}: ${problems.count} problem(s), the first at ${problems.first}`, table.name),
      );
    }
  }
  for (const index of indexes) {
    const failure = await inSavepoint(session, () =>
      session.query(`select ${schema}.bt_index_check($1::oid::regclass, heapallindexed => true)`, [index.oid]),
    );
    if (failure) findings.push(corrupt('INDEX_CORRUPTION', `index ${index.name}: ${failure}`, index.name));
  }
}

/**
 * The schema amcheck's functions are in, for this login: installed and executable, or installed
 * here for a superuser (in the check's transaction, rolled back with it). Otherwise why not.
 */
async function amcheckSchema(session: Session): Promise<string | { why: string }> {
  const { rows } = await session.query<{ schema: string | null; superuser: boolean; available: boolean }>(
    `select (select quote_ident(extnamespace::regnamespace::text) from pg_extension where extname = 'amcheck') as schema,
            (select rolsuper from pg_roles where rolname = current_user) as superuser,
            exists (select from pg_available_extensions where name = 'amcheck') as available`,
  );
  const { schema, superuser, available } = rows[0]!;
  const enable =
    'a superuser can run CREATE EXTENSION amcheck in this database and GRANT EXECUTE ON FUNCTION verify_heapam, bt_index_check to this login';
  if (schema === null) {
    if (!available) return { why: 'doctor --deep did not check the data: amcheck is not available on this server (a contrib package)' };
    if (!superuser) return { why: `doctor --deep did not check the data: amcheck is not installed; ${enable}` };
    // Its own schema, so that nothing of it mixes with the store's; gone with the rollback.
    await session.exec('create schema engine_store_doctor_amcheck; create extension amcheck schema engine_store_doctor_amcheck');
    return 'engine_store_doctor_amcheck';
  }
  const { rows: allowed } = await session.query<{ allowed: boolean }>(
    `select bool_and(has_function_privilege(p.oid, 'execute')) as allowed
       from pg_proc p join pg_extension e on e.extnamespace = p.pronamespace
      where e.extname = 'amcheck' and p.proname in ('verify_heapam', 'bt_index_check')`,
  );
  if (!allowed[0]!.allowed) return { why: `doctor --deep did not check the data: this login may not run amcheck; ${enable}` };
  return schema;
}

/** `work` in a savepoint; the message of its failure, if it failed (the transaction goes on). */
async function inSavepoint(session: Session, work: () => Promise<unknown>): Promise<string | undefined> {
  await session.query('savepoint data_check');
  try {
    await work();
    await session.query('release savepoint data_check');
    return undefined;
  } catch (error) {
    await session.query('rollback to savepoint data_check');
    const fields = databaseErrorFields(error);
    if (fields?.code === SQLSTATE.insufficientPrivilege) throw error;
    return fields ? `${fields.message} (SQLSTATE ${fields.code})` : error instanceof Error ? error.message : String(error);
  }
}

function corrupt(code: 'HEAP_CORRUPTION' | 'INDEX_CORRUPTION', message: string, object: string): Finding {
  return { code, severity: 'error', message: `${message}. Restore from a backup, or rebuild what can be rebuilt (REINDEX)`, object };
}

/**
 * On a Citus coordinator, the store's layout (citus/layout.ts) as the metadata has it: each
 * tenant table distributed by org_id and co-located with the others, each global table a
 * reference table, and every shard placed on an active node. Skipped on a database that is not
 * distributed at all (`citus distribute` not run yet: a finding of its own).
 */
export async function checkCitusLayout(db: Database, findings: Finding[]): Promise<void> {
  if (!(await isCitus(db))) return;
  const { rows } = await db.query<{ table: string; method: string | null; column: string | null; colocation: number | null }>(
    `select t.name as table, p.partmethod::text as method,
            case when p.partmethod = 'h' then column_to_column_name(p.logicalrelid, p.partkey) end as column,
            p.colocationid as colocation
       from unnest($1::text[]) t(name)
       left join pg_dist_partition p on p.logicalrelid = to_regclass('public.' || t.name)`,
    [[...DISTRIBUTED_TABLES, ...REFERENCE_TABLES]],
  );
  if (rows.every((row) => row.method === null)) {
    findings.push({
      code: 'CITUS_NOT_DISTRIBUTED',
      severity: 'error',
      message: 'this is a Citus coordinator, but the store is not distributed: run engine-store citus distribute',
    });
    return;
  }
  const colocations = new Set<number>();
  for (const row of rows) {
    const distributed = (DISTRIBUTED_TABLES as readonly string[]).includes(row.table);
    const expected = distributed ? `distributed by ${DISTRIBUTION_COLUMN}` : 'a reference table';
    const actual = row.method === 'h' ? `distributed by ${row.column}` : row.method === 'n' ? 'a reference table' : 'not in Citus metadata';
    if (actual !== expected) {
      findings.push({
        code: 'CITUS_LAYOUT',
        severity: 'error',
        message: `table ${row.table} should be ${expected}, and is ${actual}: run engine-store citus distribute`,
        object: row.table,
      });
    }
    if (distributed && row.colocation !== null) colocations.add(row.colocation);
  }
  if (colocations.size > 1) {
    findings.push({
      code: 'CITUS_LAYOUT',
      severity: 'error',
      message: `the tenant tables are in ${colocations.size} co-location groups, not one: joins and foreign keys between them go across nodes`,
    });
  }
  const { rows: stranded } = await db.query<{ shards: number }>(
    `select count(*)::int as shards
       from pg_dist_placement pl join pg_dist_node n on n.groupid = pl.groupid
      where not n.isactive`,
  );
  if (stranded[0]!.shards > 0) {
    findings.push({
      code: 'CITUS_INACTIVE_PLACEMENTS',
      severity: 'error',
      message: `${stranded[0]!.shards} shard placement(s) are on nodes that are not active: their organizations' data cannot be reached`,
    });
  }
}
