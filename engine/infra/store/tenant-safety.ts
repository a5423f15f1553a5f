/**
 * The checks a store runs before it serves anyone: if tenant queries could bypass row-level
 * security, it refuses to start instead of quietly serving every organization's rows.
 * `doctor` reads the same facts through inspectTenantSafety() and reports them one by one.
 */
import type { Database, Queryable } from './db.ts';
import { StoreError } from './errors.ts';

export const TENANT_ROLE = 'app_tenant';

/** A table that carries org_id, with the row-level security facts that protect it. */
export interface TenantTableSecurity {
  name: string;
  rowSecurity: boolean;
  forceRowSecurity: boolean;
  hasPolicy: boolean;
}

/** What the database says about the tenant role and the tenant tables. */
export interface TenantSafety {
  role: string;
  roleExists: boolean;
  roleSuperuser: boolean;
  roleBypassesRls: boolean;
  /** Whether the connecting user can SET ROLE to it (false when the role does not exist). */
  canEnterRole: boolean;
  /** Every table of the current schema with an org_id column, by name. */
  tenantTables: TenantTableSecurity[];
}

interface SafetyRow {
  role_exists: boolean;
  role_superuser: boolean | null;
  role_bypasses_rls: boolean | null;
  can_enter_role: boolean;
  tenant_tables: { name: string; row_security: boolean; force_row_security: boolean; has_policy: boolean }[] | string | null;
}

/** Tables that carry org_id: each must have row-level security enabled and forced. */
const SAFETY_SQL = `
  select exists (select from pg_roles where rolname = $1) as role_exists,
         (select rolsuper from pg_roles where rolname = $1) as role_superuser,
         (select rolbypassrls from pg_roles where rolname = $1) as role_bypasses_rls,
         exists (select from pg_roles where rolname = $1) and pg_has_role(current_user, $1, 'MEMBER') as can_enter_role,
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
    canEnterRole: row.can_enter_role,
    tenantTables: (tables as Exclude<SafetyRow['tenant_tables'], string | null>).map((table) => ({
      name: table.name,
      rowSecurity: table.row_security,
      forceRowSecurity: table.force_row_security,
      hasPolicy: table.has_policy,
    })),
  };
}

/** Throws STORE_UNSAFE, saying what is wrong, unless tenant isolation is enforced by the database. */
export async function assertTenantIsolation(db: Database): Promise<void> {
  const safety = await inspectTenantSafety(db, TENANT_ROLE);
  const unprotected = safety.tenantTables
    .filter((table) => !(table.rowSecurity && table.forceRowSecurity && table.hasPolicy))
    .map((table) => table.name);
  const problems: string[] = [];
  if (!safety.roleExists) problems.push(`the role ${TENANT_ROLE} does not exist`);
  if (safety.roleSuperuser) problems.push(`the role ${TENANT_ROLE} is a superuser`);
  if (safety.roleBypassesRls) problems.push(`the role ${TENANT_ROLE} has BYPASSRLS`);
  if (safety.roleExists && !safety.canEnterRole) problems.push(`the connecting user cannot SET ROLE ${TENANT_ROLE} (grant it the role)`);
  if (unprotected.length > 0) {
    problems.push(`row-level security is not enabled, forced and given a policy on: ${unprotected.join(', ')}`);
  }
  if (problems.length > 0) {
    throw new StoreError('STORE_UNSAFE', `refusing to start: ${problems.join('; ')}`, { reason: 'row_level_security' });
  }
}
