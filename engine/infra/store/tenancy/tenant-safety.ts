/**
 * The checks a store runs before it serves anyone: if tenant queries could bypass row-level
 * security, it refuses to start instead of quietly serving every organization's rows.
 * `doctor` reads the same facts through inspectTenantSafety() and reports them one by one.
 */
import type { Database, Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { passwordRotationProblems, type PasswordFacts, type PasswordRotationProblemCode } from './password-rotation.ts';

export const TENANT_ROLE = 'app_tenant';

/** A table that carries org_id, with the row-level security facts that protect it. */
export interface TenantTableSecurity {
  name: string;
  rowSecurity: boolean;
  forceRowSecurity: boolean;
  hasPolicy: boolean;
  /** One of OWNER_WIDE_TABLES: needs row-level security enabled only. */
  ownerWide: boolean;
}

/**
 * Tables with org_id that the owner reads across organizations by design: the audit trail (and
 * its counts of refused verifications), which `audit verify` recomputes for every organization
 * and only SECURITY DEFINER functions of the owner write (migration 20261205120000). Row-level
 * security is enabled on them, so that the tenant login reads only its own organization's rows
 * (and writes none: it holds SELECT only), but not forced, which would hide them from the owner.
 * The store still refuses to start when it is off.
 */
export const OWNER_WIDE_TABLES: ReadonlySet<string> = new Set(['audit_events', 'audit_heads', 'api_key_auth_failures']);

/** Whether `table` is protected as it must be: see TenantTableSecurity and OWNER_WIDE_TABLES. */
export function isProtected(table: TenantTableSecurity): boolean {
  return table.rowSecurity && (table.ownerWide || (table.forceRowSecurity && table.hasPolicy));
}

/** What the database says about the tenant role and the tenant tables. */
export interface TenantSafety {
  role: string;
  roleExists: boolean;
  roleSuperuser: boolean;
  roleBypassesRls: boolean;
  /** Every table of the current schema with an org_id column, by name. */
  tenantTables: TenantTableSecurity[];
}

interface SafetyRow {
  role_exists: boolean;
  role_superuser: boolean | null;
  role_bypasses_rls: boolean | null;
  tenant_tables: { name: string; row_security: boolean; force_row_security: boolean; has_policy: boolean }[] | string | null;
}

/** Tables that carry org_id: each must have row-level security enabled and forced. */
const SAFETY_SQL = `
  select exists (select from pg_roles where rolname = $1) as role_exists,
         (select rolsuper from pg_roles where rolname = $1) as role_superuser,
         (select rolbypassrls from pg_roles where rolname = $1) as role_bypasses_rls,
         coalesce((
           select json_agg(json_build_object(
                    'name', c.relname::text,
                    'row_security', c.relrowsecurity,
                    'force_row_security', c.relforcerowsecurity,
                    'has_policy', exists (select from pg_policy p where p.polrelid = c.oid))
                  order by c.relname::text)
           from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = current_schema() and c.relkind in ('r', 'p')
             and exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
             -- A partition is reached through its parent, whose policies apply; the tenant login
             -- holds no privilege on a partition by its own name.
             and not c.relispartition
         ), '[]'::json) as tenant_tables`;

/** Reads the tenant role's attributes and the row-level security of every tenant table. */
export async function inspectTenantSafety(db: Queryable, role: string = TENANT_ROLE): Promise<TenantSafety> {
  const { rows } = await db.query<SafetyRow>(SAFETY_SQL, [role]);
  const row = rows[0]!;
  const tables = typeof row.tenant_tables === 'string' ? JSON.parse(row.tenant_tables) : (row.tenant_tables ?? []);
  return {
    role,
    roleExists: row.role_exists,
    roleSuperuser: row.role_superuser === true,
    roleBypassesRls: row.role_bypasses_rls === true,
    tenantTables: (tables as Exclude<SafetyRow['tenant_tables'], string | null>).map((table) => ({
      name: table.name,
      rowSecurity: table.row_security,
      forceRowSecurity: table.force_row_security,
      hasPolicy: table.has_policy,
      ownerWide: OWNER_WIDE_TABLES.has(table.name),
    })),
  };
}

/** Throws STORE_UNSAFE, saying what is wrong, unless tenant isolation is enforced by the database. */
export async function assertTenantIsolation(db: Database): Promise<void> {
  const safety = await inspectTenantSafety(db, TENANT_ROLE);
  const unprotected = safety.tenantTables.filter((table) => !isProtected(table)).map((table) => table.name);
  const problems: string[] = [];
  if (!safety.roleExists) problems.push(`the role ${TENANT_ROLE} does not exist`);
  if (safety.roleSuperuser) problems.push(`the role ${TENANT_ROLE} is a superuser`);
  if (safety.roleBypassesRls) problems.push(`the role ${TENANT_ROLE} has BYPASSRLS`);
  if (unprotected.length > 0) {
    problems.push(`row-level security is not enabled, forced and given a policy on: ${unprotected.join(', ')}`);
  }
  if (problems.length > 0) {
    throw new StoreError('STORE_UNSAFE', `refusing to start: ${problems.join('; ')}`, { reason: 'row_level_security' });
  }
}

/** What the catalog says about the login that tenant traffic uses. */
export interface TenantLogin {
  login: string;
  exists: boolean;
  superuser: boolean;
  bypassRls: boolean;
  inherit: boolean;
  /** CREATEROLE, CREATEDB or REPLICATION: ways to more privilege than tenant work needs. */
  elevatedAttributes: string[];
  /** The roles it is a member of. */
  memberOf: string[];
  /** Whether it owns the database or any object in it (the schema owner's login does). */
  ownsObjects: boolean;
  /** Whether it may create temporary tables in this database. */
  canCreateTemp: boolean;
  /**
   * The names of its role defaults (`ALTER ROLE … [IN DATABASE …] SET name = …`), which every new
   * session of it starts with: those for this database, and those for every database.
   */
  settings: { thisDatabase: string[]; everyDatabase: string[] };
  /** Its password, as far as anyone may see it: whether one is set, and its VALID UNTIL. */
  password: PasswordFacts;
}

interface LoginRow {
  login: string;
  exists: boolean;
  superuser: boolean | null;
  bypass_rls: boolean | null;
  inherit: boolean | null;
  elevated: string[] | null;
  member_of: string[] | null;
  owns_objects: boolean | null;
  can_create_temp: boolean | null;
  settings_here: string[] | null;
  settings_everywhere: string[] | null;
  can_read_authid: boolean;
  valid_until_epoch: number | string | null;
  now_epoch: number | string;
}

const USER_NAMESPACES = `(select n.oid from pg_namespace n where n.nspname !~ '^pg_' and n.nspname <> 'information_schema')`;

const LOGIN_SQL = `
  with login as (select coalesce($1::text, current_user::text) as name)
  select login.name as login, r.oid is not null as exists, r.rolsuper as superuser, r.rolbypassrls as bypass_rls,
         r.rolinherit as inherit,
         array_remove(array[case when r.rolcreaterole then 'CREATEROLE' end, case when r.rolcreatedb then 'CREATEDB' end,
                             case when r.rolreplication then 'REPLICATION' end], null) as elevated,
         (select coalesce(array_agg(g.rolname::text order by g.rolname), '{}')
            from pg_auth_members m join pg_roles g on g.oid = m.roleid where m.member = r.oid) as member_of,
         (select d.datdba = r.oid from pg_database d where d.datname = current_database())
           or exists (select from pg_class c where c.relowner = r.oid and c.relnamespace in ${USER_NAMESPACES})
           or exists (select from pg_proc p where p.proowner = r.oid and p.pronamespace in ${USER_NAMESPACES})
           or exists (select from pg_namespace n where n.nspowner = r.oid and n.oid in ${USER_NAMESPACES}) as owns_objects,
         case when r.oid is not null then has_database_privilege(r.oid, current_database(), 'TEMP') end as can_create_temp,
         (select array_agg(split_part(c, '=', 1) order by c) from pg_db_role_setting s, unnest(s.setconfig) c
           where s.setrole = r.oid and s.setdatabase = (select d.oid from pg_database d where d.datname = current_database())) as settings_here,
         (select array_agg(split_part(c, '=', 1) order by c) from pg_db_role_setting s, unnest(s.setconfig) c
           where s.setrole = r.oid and s.setdatabase = 0) as settings_everywhere,
         -- pg_roles shows '********' whether or not a password is set: only pg_authid (a
         -- superuser's) says, and reading it is a query of its own, run only where it is allowed.
         has_table_privilege('pg_catalog.pg_authid', 'SELECT') as can_read_authid,
         extract(epoch from nullif(r.rolvaliduntil, 'infinity'))::float8 as valid_until_epoch,
         extract(epoch from now())::float8 as now_epoch
  from login left join pg_roles r on r.rolname = login.name`;

/**
 * Reads the catalog's facts about `login` (default: the connection's own user), the login that
 * tenant traffic runs on.
 */
export async function inspectTenantLogin(db: Queryable, login?: string): Promise<TenantLogin> {
  const { rows } = await db.query<LoginRow>(LOGIN_SQL, [login ?? null]);
  const row = rows[0]!;
  let hasPassword: boolean | null = null;
  if (row.exists && row.can_read_authid) {
    const { rows: authid } = await db.query<{ set: boolean }>(
      'select rolpassword is not null as set from pg_catalog.pg_authid where rolname = $1',
      [row.login],
    );
    hasPassword = authid[0]?.set === true;
  }
  return {
    login: row.login,
    exists: row.exists,
    superuser: row.superuser === true,
    bypassRls: row.bypass_rls === true,
    inherit: row.inherit === true,
    elevatedAttributes: row.elevated ?? [],
    memberOf: row.member_of ?? [],
    ownsObjects: row.owns_objects === true,
    canCreateTemp: row.can_create_temp === true,
    settings: { thisDatabase: row.settings_here ?? [], everyDatabase: row.settings_everywhere ?? [] },
    password: {
      login: row.login,
      hasPassword,
      validUntil: row.valid_until_epoch === null ? null : dateOfEpoch(Number(row.valid_until_epoch)),
      checkedAt: dateOfEpoch(Number(row.now_epoch)),
    },
  };
}

/** Seconds since 1970 as a Date; '-infinity' (-Infinity) as the earliest Date there is. */
function dateOfEpoch(seconds: number): Date {
  return seconds === Number.NEGATIVE_INFINITY ? new Date(-8.64e15) : new Date(seconds * 1000);
}

export type TenantLoginProblemCode =
  | 'TENANT_LOGIN_MISSING'
  | 'TENANT_LOGIN_SUPERUSER'
  | 'TENANT_LOGIN_BYPASSES_RLS'
  | 'TENANT_LOGIN_IS_OWNER'
  | 'TENANT_LOGIN_ELEVATED'
  | 'TENANT_LOGIN_MEMBER_OF_OTHER_ROLES'
  | 'TENANT_LOGIN_INHERITS'
  | 'TENANT_LOGIN_CAN_CREATE_TEMP'
  | 'TENANT_LOGIN_ROLE_SETTINGS'
  | PasswordRotationProblemCode;

export interface TenantLoginProblem {
  code: TenantLoginProblemCode;
  message: string;
  /**
   * Whether the login is unfit to carry tenant traffic at all (a way out of row-level security
   * or to more privilege): the store refuses to start on it. The others (role defaults, a
   * password overdue for rotation) are what a leaked login leaves or an operator forgot; doctor
   * reports them, and refusing to start on them would only turn a leak into an outage.
   */
  unsafe: boolean;
}

export interface TenantLoginProblemOptions {
  /** The rotation convention's maximum password age (password-rotation.ts); default 90. */
  maxPasswordAgeDays?: number;
}

/**
 * Everything wrong with `login` as the tenant login. Unsafe (the store refuses it): any way out
 * of row-level security (superuser, BYPASSRLS, owning the tables), any way to more privilege
 * (CREATEROLE, membership in another role, inheriting what it switches to), and temporary
 * objects, which could shadow the store's tables for the next user of a pooled connection.
 * Reported only: role defaults, which the store never sets and a leaked login can plant in every
 * future session of it (`ALTER ROLE app_tenant SET row_security = off`; PostgreSQL lets any role
 * set its own), and a password overdue for rotation (password-rotation.ts).
 *
 * @example
 * tenantLoginProblems(await inspectTenantLogin(db, 'app_tenant'), { maxPasswordAgeDays: 30 });
 */
export function tenantLoginProblems(facts: TenantLogin, options: TenantLoginProblemOptions = {}): TenantLoginProblem[] {
  const who = `the tenant login ${facts.login}`;
  const problems: TenantLoginProblem[] = [];
  const unsafe = (code: TenantLoginProblemCode, message: string) => problems.push({ code, message, unsafe: true });
  const reported = (code: TenantLoginProblemCode, message: string) => problems.push({ code, message, unsafe: false });
  if (!facts.exists) {
    unsafe('TENANT_LOGIN_MISSING', `${who} does not exist`);
    return problems;
  }
  if (facts.superuser) unsafe('TENANT_LOGIN_SUPERUSER', `${who} is a superuser: row-level security does not apply to it`);
  if (facts.bypassRls) unsafe('TENANT_LOGIN_BYPASSES_RLS', `${who} has BYPASSRLS: row-level security does not apply to it`);
  if (facts.ownsObjects) unsafe('TENANT_LOGIN_IS_OWNER', `${who} owns the database or objects in it: it could turn row-level security off`);
  if (facts.elevatedAttributes.length > 0) {
    unsafe('TENANT_LOGIN_ELEVATED', `${who} has ${facts.elevatedAttributes.join(', ')}: more than tenant work needs`);
  }
  const others = facts.memberOf.filter((role) => role !== TENANT_ROLE);
  if (others.length > 0) unsafe('TENANT_LOGIN_MEMBER_OF_OTHER_ROLES', `${who} is a member of ${others.join(', ')}: it could become them`);
  if (facts.login !== TENANT_ROLE && facts.inherit) {
    unsafe(
      'TENANT_LOGIN_INHERITS',
      `${who} switches to ${TENANT_ROLE} and must be NOINHERIT, so that it has no privilege outside the scope`,
    );
  }
  if (facts.canCreateTemp) {
    unsafe(
      'TENANT_LOGIN_CAN_CREATE_TEMP',
      `${who} may create temporary tables, which would shadow the store's tables (as the database owner: REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC)`,
    );
  }
  const { thisDatabase, everyDatabase } = facts.settings;
  if (thisDatabase.length > 0 || everyDatabase.length > 0) {
    const where = [
      thisDatabase.length > 0 ? `in this database: ${thisDatabase.join(', ')}` : '',
      everyDatabase.length > 0 ? `in every database: ${everyDatabase.join(', ')}` : '',
    ].filter(Boolean);
    const reset = [
      thisDatabase.length > 0 ? `ALTER ROLE ${facts.login} IN DATABASE <this database> RESET ALL` : '',
      everyDatabase.length > 0 ? `ALTER ROLE ${facts.login} RESET ALL` : '',
    ].filter(Boolean);
    reported(
      'TENANT_LOGIN_ROLE_SETTINGS',
      `${who} has role defaults that every new session of it starts with (${where.join('; ')}); the store sets none, and a leaked login can set its own: look at them (pg_db_role_setting), then as the owner ${reset.join(' and ')}`,
    );
  }
  for (const problem of passwordRotationProblems(facts.password, options.maxPasswordAgeDays)) reported(problem.code, problem.message);
  return problems;
}

/** Throws STORE_UNSAFE, saying what is wrong, unless `tenant` is fit to carry tenant traffic; returns what it found. */
export async function assertTenantLogin(tenant: Queryable): Promise<TenantLogin> {
  const facts = await inspectTenantLogin(tenant);
  const problems = tenantLoginProblems(facts).filter((problem) => problem.unsafe);
  if (problems.length > 0) {
    throw new StoreError('STORE_UNSAFE', `refusing to run tenant traffic: ${problems.map((problem) => problem.message).join('; ')}`, {
      reason: 'privileged_tenant_login',
    });
  }
  return facts;
}
