/**
 * `doctor`: checks a live database and reports what is wrong with it, one finding at a time.
 *
 * - migrations: pending, edited since applied (checksum), applied without a file, interrupted
 *   (partly applied or partly reverted);
 * - INVALID indexes (what an interrupted concurrent build leaves), on any table;
 * - drift: the live catalog against the catalog of a scratch database built from schema.sql on
 *   the same kind of server (only when no migration is pending or edited: drift is expected then);
 * - row-level security: every tenant table (one with an org_id column) must have it enabled,
 *   forced, and at least one policy;
 * - the tenant role: it must exist and must not bypass row-level security;
 * - the tenant login: no way out of row-level security or to more privilege; and what a leaked
 *   login can leave that PostgreSQL does not prevent: role defaults on it, large objects (which
 *   belong to no organization), a password past the rotation convention (password-rotation.ts);
 * - indexes: every tenant table needs an org_id-first index (covering (org_id, created_at) when
 *   it has created_at), and every foreign key of a tenant table an index led by its columns;
 * - the data (data-checks.ts): the default organization there, no table file truncated behind
 *   PostgreSQL's back, and with `deep` every page and index checked.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { catalogDifferences, readCatalog, type CatalogSnapshot } from './catalog.ts';
import { openDatabase, withDatabaseName, type Database, type Queryable } from '../connection/database.ts';
import { migrationStatus } from '../migrator/runner.ts';
import { loadSchemaFile, SCHEMA_CATALOG_FILE } from '../migrator/schema-file.ts';
import { parseInput } from '../repositories/validation.ts';
import { DEFAULT_MAX_PASSWORD_AGE_DAYS, maxPasswordAgeDays } from '../tenancy/password-rotation.ts';
import { largeObjectOwners } from './large-objects.ts';
import { isCitus } from '../citus/detect.ts';
import { policyExpressionOnCitus } from '../citus/distribute.ts';
import { TRIGGERS_NOT_ON_CITUS } from '../citus/layout.ts';
import { checkAuditTrail } from './audit-checks.ts';
import { checkCitusLayout, checkDefaultOrganization, checkRoleGrants, checkTruncatedTables, deepChecks } from './data-checks.ts';
import {
  inspectTenantLogin,
  inspectTenantSafety,
  tenantLoginProblems,
  TENANT_ROLE,
  type TenantLoginProblemCode,
} from '../tenancy/tenant-safety.ts';

export type FindingCode =
  | 'MIGRATION_PENDING'
  | 'MIGRATION_EDITED'
  | 'MIGRATION_MISSING'
  | 'MIGRATION_INTERRUPTED'
  | 'INVALID_INDEX'
  | 'SCHEMA_DRIFT'
  | 'DRIFT_NOT_CHECKED'
  | 'RLS_DISABLED'
  | 'RLS_NOT_FORCED'
  | 'RLS_NO_POLICY'
  | 'TENANT_ROLE_MISSING'
  | 'TENANT_ROLE_BYPASSES_RLS'
  | TenantLoginProblemCode
  | 'TENANT_LOGIN_LARGE_OBJECTS'
  | 'LARGE_OBJECTS'
  | 'MISSING_ORG_INDEX'
  | 'UNINDEXED_FOREIGN_KEY'
  | 'DEFAULT_ORG_MISSING'
  | 'ROLE_GRANTS_STALE'
  | 'TABLE_FILE_EMPTY'
  | 'HEAP_CORRUPTION'
  | 'INDEX_CORRUPTION'
  | 'DEEP_CHECK_NOT_RUN'
  | 'CITUS_NOT_DISTRIBUTED'
  | 'CITUS_LAYOUT'
  | 'CITUS_INACTIVE_PLACEMENTS'
  | 'AUDIT_RETENTION_NOT_SET'
  | 'AUDIT_RETENTION_OVERDUE'
  | 'AUDIT_DEFAULT_PARTITION'
  | 'AUDIT_PARTITION_MISSING';

export interface Finding {
  code: FindingCode | (string & {});
  severity: 'error' | 'warning';
  message: string;
  /** What the finding is about: a migration, a table, `table.constraint`, `table.index`, a role. */
  object?: string;
}

/** An empty database to build the reference schema in; `dispose` removes it. */
export interface ReferenceDatabase {
  db: Database;
  dispose(): Promise<void>;
}

export interface DiagnoseOptions {
  /**
   * The live database's URL (PostgreSQL only): the default reference database is a scratch
   * database `engine_store_doctor_<pid>_<random>` on the same server, reached through this URL
   * with another database name. Without it (and without `referenceFactory`) drift is not checked.
   */
  url?: string;
  /** Makes the empty database schema.sql is loaded into. Overrides the default for either backend. */
  referenceFactory?: () => Promise<ReferenceDatabase>;
  /** The role tenant queries run as (default app_tenant). */
  tenantRole?: string;
  /**
   * The login tenant traffic connects as (default: the user of `TENANT_DATABASE_URL`, else
   * app_tenant): reported if it is a superuser, has BYPASSRLS, owns objects, can create roles
   * or temporary tables, or is a member of other roles.
   */
  tenantLogin?: string;
  /**
   * The rotation convention's maximum age of the tenant login's password, in days (default 90):
   * its VALID UNTIL must be set, in the future, and no further away than this.
   */
  maxPasswordAgeDays?: number;
  /** The migrations directory (default: the store's own). */
  migrationsDir?: string;
  /**
   * Also read all the data (see data-checks.ts): amcheck on a server where the login may use it,
   * a full read of every table on the embedded database. Takes as long as reading the database.
   */
  deep?: boolean;
  /** schema.sql (default: the store's own). */
  schemaFile?: string;
  /**
   * The catalog schema.sql builds (see referenceCatalogFor), when the caller diagnoses many
   * times and has it already: building it costs a scratch database each time.
   */
  reference?: CatalogSnapshot;
}

/** A check that does not apply to this database, and why: not a finding. */
export interface SkippedCheck {
  check: 'tenant_login_role_settings' | 'tenant_login_password_age';
  reason: string;
}

export interface Diagnosis {
  findings: Finding[];
  skipped: SkippedCheck[];
}

/**
 * Checks `db` and returns every finding; an empty list means the database is healthy.
 *
 * @example
 * const { findings } = await diagnose(db, { url: process.env.DATABASE_URL });
 * const healthy = findings.every((finding) => finding.severity !== 'error');
 */
export async function diagnose(db: Database, options: DiagnoseOptions = {}): Promise<Diagnosis> {
  const maxAgeDays = parseInput(maxPasswordAgeDays, options.maxPasswordAgeDays ?? DEFAULT_MAX_PASSWORD_AGE_DAYS, 'maxPasswordAgeDays');
  const findings: Finding[] = [];
  const skipped: SkippedCheck[] = [];
  const migrationsOk = await checkMigrations(db, options, findings);
  if (migrationsOk) {
    await checkDrift(db, options, findings);
  } else {
    findings.push({
      code: 'DRIFT_NOT_CHECKED',
      severity: 'warning',
      message: 'schema drift was not checked: migrations are pending or edited, so the schema is expected to differ from schema.sql',
    });
  }
  await checkTenantSafety(db, options.tenantRole ?? TENANT_ROLE, findings);
  const login = options.tenantLogin ?? defaultTenantLogin();
  await checkTenantLogin(db, login, maxAgeDays, findings, skipped);
  await checkLargeObjects(db, [login, options.tenantRole ?? TENANT_ROLE], findings);
  await checkIndexes(db, findings);
  await checkInvalidIndexes(db, findings);
  await checkDefaultOrganization(db, findings);
  await checkTruncatedTables(db, findings);
  await checkRoleGrants(db, findings);
  await checkCitusLayout(db, findings);
  await checkAuditTrail(db, findings);
  if (options.deep) await deepChecks(db, findings);
  return { findings, skipped };
}

/** Adds migration findings; returns whether the schema should match schema.sql. */
async function checkMigrations(db: Database, options: DiagnoseOptions, findings: Finding[]): Promise<boolean> {
  const status = await migrationStatus(db, { dir: options.migrationsDir });
  let comparable = true;
  for (const entry of status.migrations) {
    if (entry.state === 'pending') {
      comparable = false;
      findings.push({
        code: 'MIGRATION_PENDING',
        severity: 'error',
        message: `migration ${entry.name} is not applied; run engine-store migrate up`,
        object: entry.name,
      });
    } else if (entry.state === 'edited') {
      comparable = false;
      findings.push({
        code: 'MIGRATION_EDITED',
        severity: 'error',
        message: `migration ${entry.name} was edited after it was applied (its checksum differs); restore the file and add a new migration instead`,
        object: entry.name,
      });
    } else if (entry.state === 'partly_applied' || entry.state === 'partly_reverted') {
      comparable = false;
      findings.push({
        code: 'MIGRATION_INTERRUPTED',
        severity: 'error',
        message: `migration ${entry.name} is ${entry.state.replace('_', ' ')} (it resumes at statement ${entry.progress!.done + 1} of ${entry.progress!.of}): ${entry.hint}`,
        object: entry.name,
      });
    } else if (entry.state === 'missing') {
      findings.push({
        code: 'MIGRATION_MISSING',
        severity: 'error',
        message: `migration ${entry.name} is applied but its file is missing`,
        object: entry.name,
      });
    }
  }
  return comparable;
}

/**
 * The catalog schema.sql builds, in a scratch database of `db`'s kind (see
 * DiagnoseOptions.url and referenceFactory); undefined when there is nowhere to build it.
 */
export async function referenceCatalogFor(db: Database, options: DiagnoseOptions = {}): Promise<CatalogSnapshot | undefined> {
  if (!options.referenceFactory && options.schemaFile === undefined) {
    const shipped = await shippedCatalog(db);
    if (shipped) return shipped;
  }
  const factory = options.referenceFactory ?? defaultReferenceFactory(db, options.url);
  return factory ? referenceCatalog(factory, options.schemaFile) : undefined;
}

/**
 * The catalog shipped with schema.sql (SCHEMA_CATALOG_FILE), where it applies: a PostgreSQL
 * server of the major version it was read on (the catalog functions word definitions a little
 * differently from one major version to the next). It needs no scratch database, so doctor
 * checks drift for the README's owner without CREATEDB too.
 */
async function shippedCatalog(db: Database): Promise<CatalogSnapshot | undefined> {
  if (db.kind !== 'postgres' || !SCHEMA_CATALOG_FILE || !existsSync(SCHEMA_CATALOG_FILE)) return undefined;
  const shipped = JSON.parse(readFileSync(SCHEMA_CATALOG_FILE, 'utf8')) as { serverMajor: number; catalog: CatalogSnapshot };
  const { rows } = await db.query<{ major: number }>(`select current_setting('server_version_num')::int / 10000 as major`);
  return rows[0]!.major === shipped.serverMajor ? shipped.catalog : undefined;
}

async function checkDrift(db: Database, options: DiagnoseOptions, findings: Finding[]): Promise<void> {
  let expected: CatalogSnapshot | undefined;
  try {
    expected = options.reference ?? (await referenceCatalogFor(db, options));
  } catch (error) {
    findings.push({
      code: 'DRIFT_NOT_CHECKED',
      severity: 'warning',
      message: `schema drift was not checked: the reference database could not be built from schema.sql: ${error instanceof Error ? error.message : String(error)}`,
    });
    return;
  }
  if (!expected) {
    findings.push({
      code: 'DRIFT_NOT_CHECKED',
      severity: 'warning',
      message:
        'schema drift was not checked: the shipped catalog is of another PostgreSQL major version, and there is no URL to create a reference database on this server',
    });
    return;
  }
  const actual = await readCatalog(db);
  if (await isCitus(db)) expected = asDistributed(expected);
  for (const difference of catalogDifferences(expected, actual)) {
    findings.push({ code: 'SCHEMA_DRIFT', severity: 'error', message: `schema drift: ${difference.line}`, object: difference.object });
  }
}

/**
 * The catalog as distribution on Citus leaves it (citus/distribute.ts): its policies call the
 * scope functions per row, since Citus refuses the sub-selects that call them once a statement,
 * and the triggers Citus cannot run are gone.
 */
function asDistributed(catalog: CatalogSnapshot): CatalogSnapshot {
  const dropped = new Set(TRIGGERS_NOT_ON_CITUS.map(({ table, trigger }) => `${table}.${trigger}`));
  return {
    ...catalog,
    triggers: catalog.triggers.filter((trigger) => !dropped.has(`${String(trigger.table)}.${String(trigger.name)}`)),
    // A constraint trigger is a constraint too (the audit trail's): it goes with its trigger.
    constraints: catalog.constraints.filter(
      (constraint) => constraint.type !== 't' || !dropped.has(`${String(constraint.table)}.${String(constraint.name)}`),
    ),
    policies: catalog.policies.map((policy) => ({
      ...policy,
      using: policyExpressionOnCitus(policy.using as string | null),
      with_check: policyExpressionOnCitus(policy.with_check as string | null),
    })),
  };
}

async function referenceCatalog(factory: () => Promise<ReferenceDatabase>, schemaFile: string | undefined): Promise<CatalogSnapshot> {
  const reference = await factory();
  try {
    await loadSchemaFile(reference.db, schemaFile);
    return await readCatalog(reference.db);
  } finally {
    await reference.dispose();
  }
}

/** A scratch database of the same kind as `db`: in-memory PGlite, or a new database on the same server. */
function defaultReferenceFactory(db: Database, url: string | undefined): (() => Promise<ReferenceDatabase>) | undefined {
  if (db.kind === 'pglite') {
    return async () => {
      const reference = await openDatabase({ dataDir: 'memory://' });
      return { db: reference, dispose: () => reference.close() };
    };
  }
  if (!url) return undefined;
  return async () => {
    const name = `engine_store_doctor_${process.pid}_${randomBytes(4).toString('hex')}`;
    const drop = () => db.query(`drop database if exists ${name} with (force)`).then(() => undefined);
    await db.query(`create database ${name}`);
    let reference: Database;
    try {
      reference = await openDatabase({ url: withDatabaseName(url, name), poolSize: 1 });
    } catch (error) {
      await drop().catch(() => undefined);
      throw error;
    }
    return {
      db: reference,
      async dispose() {
        try {
          await reference.close();
        } finally {
          await drop();
        }
      },
    };
  };
}

/** The tenant login's name as the store would derive it. */
function defaultTenantLogin(): string {
  const url = process.env.TENANT_DATABASE_URL?.trim();
  if (url) {
    try {
      const user = decodeURIComponent(new URL(url).username);
      if (user) return user;
    } catch {
      // An unparseable URL is openStore's to report; the doctor checks the default login.
    }
  }
  return TENANT_ROLE;
}

const PASSWORD_CODES: readonly string[] = [
  'TENANT_LOGIN_PASSWORD_NOT_CHECKED',
  'TENANT_LOGIN_PASSWORD_NO_EXPIRY',
  'TENANT_LOGIN_PASSWORD_EXPIRED',
  'TENANT_LOGIN_PASSWORD_EXPIRY_TOO_FAR',
];

async function checkTenantLogin(
  db: Database,
  login: string,
  maxPasswordAgeDays: number,
  findings: Finding[],
  skipped: SkippedCheck[],
): Promise<void> {
  const facts = await inspectTenantLogin(db, login);
  // The embedded database has one session, its superuser's: tenant scopes enter the role with
  // SET ROLE, so the role never logs in, and role defaults and passwords (applied at login) never apply.
  const logsIn = db.kind !== 'pglite';
  if (!logsIn) {
    const reason = `${login} is entered with SET ROLE from the embedded database's only session and never logs in`;
    skipped.push({ check: 'tenant_login_role_settings', reason: `${reason}: role defaults apply at login` });
    skipped.push({ check: 'tenant_login_password_age', reason: `${reason}: it has no use for a password` });
  } else if (facts.exists && facts.password.hasPassword === false) {
    skipped.push({
      check: 'tenant_login_password_age',
      reason: `${login} has no password (it can log in only where pg_hba.conf needs none: trust, peer, cert): there is no password to age`,
    });
  }
  for (const problem of tenantLoginProblems(facts, { maxPasswordAgeDays })) {
    // A missing app_tenant is already TENANT_ROLE_MISSING.
    if (
      problem.code === 'TENANT_LOGIN_MISSING' &&
      findings.some((finding) => finding.code === 'TENANT_ROLE_MISSING' && finding.object === login)
    )
      continue;
    if (!logsIn && (problem.code === 'TENANT_LOGIN_ROLE_SETTINGS' || PASSWORD_CODES.includes(problem.code))) continue;
    // Like DRIFT_NOT_CHECKED: said, not failed on.
    const severity = problem.code === 'TENANT_LOGIN_PASSWORD_NOT_CHECKED' ? 'warning' : 'error';
    findings.push({ code: problem.code, severity, message: problem.message, object: login });
  }
}

/** Large objects, by owner: the store makes none (large-objects.ts). */
async function checkLargeObjects(db: Queryable, tenantRoles: string[], findings: Finding[]): Promise<void> {
  for (const { owner, count } of await largeObjectOwners(db)) {
    const tenant = tenantRoles.includes(owner);
    findings.push({
      code: tenant ? 'TENANT_LOGIN_LARGE_OBJECTS' : 'LARGE_OBJECTS',
      severity: 'error',
      message:
        `${count} large object(s) owned by ${owner}${tenant ? ' (the tenant login: what a leaked login can store)' : ''}: ` +
        `the store makes none, and they belong to no organization, out of reach of row-level security. ` +
        `Look at them (pg_largeobject_metadata, lo_get), then as a superuser or their owner remove them ` +
        `(SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE lomowner = '${owner}'::regrole); ` +
        `a superuser can refuse new ones in this database (REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC)`,
      object: owner,
    });
  }
}

async function checkTenantSafety(db: Database, role: string, findings: Finding[]): Promise<void> {
  const safety = await inspectTenantSafety(db, role);
  if (!safety.roleExists) {
    findings.push({ code: 'TENANT_ROLE_MISSING', severity: 'error', message: `the tenant role ${role} does not exist`, object: role });
  } else {
    if (safety.roleSuperuser) {
      findings.push({
        code: 'TENANT_ROLE_BYPASSES_RLS',
        severity: 'error',
        message: `the tenant role ${role} is a superuser, so row-level security does not apply to it`,
        object: role,
      });
    }
    if (safety.roleBypassesRls) {
      findings.push({
        code: 'TENANT_ROLE_BYPASSES_RLS',
        severity: 'error',
        message: `the tenant role ${role} has BYPASSRLS, so row-level security does not apply to it`,
        object: role,
      });
    }
  }
  for (const table of safety.tenantTables) {
    if (!table.rowSecurity) {
      findings.push({
        code: 'RLS_DISABLED',
        severity: 'error',
        message: `row-level security is disabled on tenant table ${table.name}`,
        object: table.name,
      });
    }
    if (!table.forceRowSecurity && !table.ownerWide) {
      findings.push({
        code: 'RLS_NOT_FORCED',
        severity: 'error',
        message: `row-level security is not forced on tenant table ${table.name} (its owner bypasses it)`,
        object: table.name,
      });
    }
    if (!table.hasPolicy && !table.ownerWide) {
      findings.push({
        code: 'RLS_NO_POLICY',
        severity: 'error',
        message: `tenant table ${table.name} has no row-level security policy`,
        object: table.name,
      });
    }
  }
}

interface IndexRow {
  table: string;
  name: string;
  /** Key columns in order; null for an expression. */
  columns: (string | null)[];
  usable: boolean;
}

interface ForeignKeyRow {
  table: string;
  name: string;
  columns: string[];
}

const TENANT_TABLES = `
  select c.oid, c.relname::text as name,
         exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'created_at' and not a.attisdropped) as has_created_at
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = current_schema() and c.relkind in ('r', 'p')
    and exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)`;

// An index serves every row only when it is valid and not partial.
const TENANT_INDEXES = `
  with tenant as (${TENANT_TABLES})
  select t.name as table, i.relname::text as name,
         array(select a.attname::text
               from unnest(x.indkey::int2[]) with ordinality k(attnum, ord)
               left join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
               where k.ord <= x.indnkeyatts
               order by k.ord) as columns,
         (x.indisvalid and x.indpred is null) as usable
  from tenant t
  join pg_index x on x.indrelid = t.oid
  join pg_class i on i.oid = x.indexrelid
  order by 1, 2`;

const TENANT_FOREIGN_KEYS = `
  with tenant as (${TENANT_TABLES})
  select t.name as table, k.conname::text as name,
         array(select a.attname::text
               from unnest(k.conkey) with ordinality u(attnum, ord)
               join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.attnum
               order by u.ord) as columns
  from tenant t
  join pg_constraint k on k.conrelid = t.oid and k.contype = 'f'
  order by 1, 2`;

async function checkIndexes(db: Queryable, findings: Finding[]): Promise<void> {
  const { rows: tables } = await db.query<{ name: string; has_created_at: boolean }>(`${TENANT_TABLES} order by 2`);
  const { rows: indexes } = await db.query<IndexRow>(TENANT_INDEXES);
  const { rows: foreignKeys } = await db.query<ForeignKeyRow>(TENANT_FOREIGN_KEYS);
  const usableOn = (table: string) => indexes.filter((index) => index.table === table && index.usable);

  for (const table of tables) {
    const candidates = usableOn(table.name).filter((index) => index.columns[0] === 'org_id');
    const covered = table.has_created_at ? candidates.some((index) => index.columns[1] === 'created_at') : candidates.length > 0;
    if (!covered) {
      findings.push({
        code: 'MISSING_ORG_INDEX',
        severity: 'error',
        message: table.has_created_at
          ? `tenant table ${table.name} has no index on (org_id, created_at, ...): listing an organization's rows scans the table`
          : `tenant table ${table.name} has no index whose first column is org_id`,
        object: table.name,
      });
    }
  }

  for (const foreignKey of foreignKeys) {
    const wanted = new Set(foreignKey.columns);
    const indexed = usableOn(foreignKey.table).some((index) => {
      const leading = index.columns.slice(0, wanted.size);
      return leading.length === wanted.size && leading.every((column) => column !== null && wanted.has(column));
    });
    if (!indexed) {
      findings.push({
        code: 'UNINDEXED_FOREIGN_KEY',
        severity: 'error',
        message: `foreign key ${foreignKey.name} on ${foreignKey.table} (${foreignKey.columns.join(', ')}) has no index led by its columns: deleting or updating a referenced row scans ${foreignKey.table}`,
        object: `${foreignKey.table}.${foreignKey.name}`,
      });
    }
  }
}

/**
 * Indexes PostgreSQL does not use: what a concurrent build that failed or was interrupted leaves
 * behind. Writes still maintain them, and a later CREATE INDEX of the same name fails.
 */
async function checkInvalidIndexes(db: Queryable, findings: Finding[]): Promise<void> {
  const { rows } = await db.query<{ table: string; name: string }>(
    `select t.relname::text as table, i.relname::text as name
     from pg_index x
     join pg_class i on i.oid = x.indexrelid
     join pg_class t on t.oid = x.indrelid
     join pg_namespace n on n.oid = i.relnamespace
     where not x.indisvalid and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%'
     order by 1, 2`,
  );
  for (const index of rows) {
    findings.push({
      code: 'INVALID_INDEX',
      severity: 'error',
      message: `index ${index.name} on ${index.table} is INVALID (a concurrent build failed or was interrupted): finish the interrupted migration (engine-store migrate up), or drop it with DROP INDEX CONCURRENTLY ${index.name}`,
      object: `${index.table}.${index.name}`,
    });
  }
}
