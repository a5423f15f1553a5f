/**
 * The checks a store runs before it serves anyone: if tenant queries could bypass row-level
 * security, it refuses to start instead of quietly serving every organization's rows.
 */
import type { Database } from './db.ts';
import { StoreError } from './errors.ts';

export const TENANT_ROLE = 'app_tenant';

interface SafetyRow {
  role_exists: boolean;
  role_superuser: boolean | null;
  role_bypasses_rls: boolean | null;
  can_enter_role: boolean;
  unprotected_tables: string[];
}

/** Tables that carry org_id: each must have row-level security enabled and forced. */
const SAFETY_SQL = `
  select exists (select from pg_roles where rolname = $1) as role_exists,
         (select rolsuper from pg_roles where rolname = $1) as role_superuser,
         (select rolbypassrls from pg_roles where rolname = $1) as role_bypasses_rls,
         exists (select from pg_roles where rolname = $1) and pg_has_role(current_user, $1, 'MEMBER') as can_enter_role,
         coalesce((
           select array_agg(c.relname::text order by c.relname)
           from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = current_schema() and c.relkind in ('r', 'p')
             and exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
             and not (c.relrowsecurity and c.relforcerowsecurity and exists (select from pg_policy p where p.polrelid = c.oid))
         ), '{}') as unprotected_tables`;

/** Throws STORE_UNSAFE, saying what is wrong, unless tenant isolation is enforced by the database. */
export async function assertTenantIsolation(db: Database): Promise<void> {
  const { rows } = await db.query<SafetyRow>(SAFETY_SQL, [TENANT_ROLE]);
  const row = rows[0]!;
  const problems: string[] = [];
  if (!row.role_exists) problems.push(`the role ${TENANT_ROLE} does not exist`);
  if (row.role_superuser) problems.push(`the role ${TENANT_ROLE} is a superuser`);
  if (row.role_bypasses_rls) problems.push(`the role ${TENANT_ROLE} has BYPASSRLS`);
  if (row.role_exists && !row.can_enter_role) problems.push(`the connecting user cannot SET ROLE ${TENANT_ROLE} (grant it the role)`);
  if (row.unprotected_tables.length > 0) {
    problems.push(`row-level security is not enabled, forced and given a policy on: ${row.unprotected_tables.join(', ')}`);
  }
  if (problems.length > 0) {
    throw new StoreError('STORE_UNSAFE', `refusing to start: ${problems.join('; ')}`, { reason: 'row_level_security' });
  }
}
