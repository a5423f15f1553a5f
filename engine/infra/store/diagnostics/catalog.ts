/**
 * A comparable snapshot of everything the project defines in a database: tables, columns,
 * constraints, indexes, triggers, functions, policies, grants and comments, read from the
 * system catalogs and rendered by PostgreSQL's own pg_get_*def functions.
 *
 * Two databases with equal snapshots have the same schema. The tests use this to prove that
 * schema.sql builds what the migrations build and that every down migration undoes its up;
 * `doctor` uses it to detect drift in a live database.
 */
import type { Queryable } from '../connection/database.ts';
import { MIGRATIONS_TABLE } from '../migrator/runner.ts';

export interface CatalogSnapshot {
  schemas: Record<string, unknown>[];
  extensions: string[];
  tables: Record<string, unknown>[];
  columns: Record<string, unknown>[];
  constraints: Record<string, unknown>[];
  indexes: Record<string, unknown>[];
  triggers: Record<string, unknown>[];
  functions: Record<string, unknown>[];
  policies: Record<string, unknown>[];
  types: Record<string, unknown>[];
}

/** The role that owns the database: who migrated it, in the documented setup. */
const DATABASE_OWNER = `(select datdba from pg_database where datname = current_database())`;

/**
 * An ACL by meaning: each grantee with its privileges, the database's owner read as
 * `<database owner>`, without grantors. Who migrated a database varies between environments
 * (a superuser here, the owner role of the README's production setup there), and so do the
 * names in its ACLs and who granted what; the rights each role holds do not. NULL (never
 * granted: the default) reads as the default it stands for, since a GRANT followed by its REVOKE
 * leaves the same rights spelled out explicitly.
 */
function grantsOf(acl: string, kind: string, owner: string): string {
  return `coalesce((select array_agg(g.entry order by g.entry) from (
      select format('%s=%s',
               case when a.grantee = 0 then 'public' when a.grantee = ${DATABASE_OWNER} then '<database owner>' else pg_get_userbyid(a.grantee)::text end,
               string_agg(a.privilege_type || case when a.is_grantable then '*' else '' end, ',' order by a.privilege_type)) as entry
      from aclexplode(coalesce(${acl}, acldefault('${kind}', ${owner}))) a
      group by a.grantee) g), '{}')`;
}

/** Schemas that belong to PostgreSQL or PGlite rather than to the project. */
const PROJECT_SCHEMAS = `
  n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_%'`;

/**
 * Objects an extension made (its schemas, views and functions: Citus's citus_tables, say) are
 * the extension's, not the project's: the extension's version says what they are.
 */
const notOfAnExtension = (catalog: string, oid: string) =>
  `not exists (select from pg_depend e where e.classid = '${catalog}'::regclass and e.objid = ${oid} and e.deptype = 'e')`;

/**
 * Extensions a cluster brings rather than the schema: Citus (its coordinator and workers have
 * it in every database), and the operator's own tools.
 */
const INFRASTRUCTURE_EXTENSIONS = ['plpgsql', 'citus', 'citus_columnar', 'amcheck', 'pg_stat_statements'];

/**
 * The migration runner's bookkeeping is not part of the schema it manages, nor are the audit
 * trail's monthly partitions: which months exist depends on when the database was made and
 * pruned (see audit/retention.ts), not on its schema. Their parent and default partition are.
 */
export const MONTHLY_AUDIT_PARTITION = '^audit_events_y[0-9]{4}m[0-9]{2}$';
const PROJECT_RELATION = `${PROJECT_SCHEMAS} and c.relname <> '${MIGRATIONS_TABLE}' and c.relname !~ '${MONTHLY_AUDIT_PARTITION}' and ${notOfAnExtension('pg_class', 'c.oid')}`;

const QUERIES: Record<keyof CatalogSnapshot, string> = {
  schemas: `
    select n.nspname as name,
           ${grantsOf('n.nspacl', 'n', 'n.nspowner')} as grants
    from pg_namespace n where ${PROJECT_SCHEMAS} and ${notOfAnExtension('pg_namespace', 'n.oid')} order by 1`,
  extensions: `select extname as name from pg_extension
    where extname not in (${INFRASTRUCTURE_EXTENSIONS.map((name) => `'${name}'`).join(', ')}) order by 1`,
  tables: `
    select n.nspname as schema, c.relname as name, c.relkind::text as kind,
           c.relpersistence::text as persistence,
           c.relrowsecurity as row_security, c.relforcerowsecurity as force_row_security,
           case when c.relkind = 'S' then ${grantsOf('c.relacl', 's', 'c.relowner')} else ${grantsOf('c.relacl', 'r', 'c.relowner')} end as grants,
           obj_description(c.oid, 'pg_class') as comment,
           case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end as view_definition
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and ${PROJECT_RELATION}
    order by 1, 2`,
  columns: `
    select n.nspname as schema, c.relname as table, a.attname as name,
           row_number() over (partition by c.oid order by a.attnum) as position,
           format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as not_null,
           pg_get_expr(d.adbin, d.adrelid) as default, a.attidentity::text as identity,
           a.attgenerated::text as generated, co.collname as collation,
           ${grantsOf('a.attacl', 'c', 'c.relowner')} as grants,
           col_description(c.oid, a.attnum) as comment
    from pg_attribute a
    join pg_class c on c.oid = a.attrelid
    join pg_namespace n on n.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    left join pg_collation co on co.oid = a.attcollation and a.attcollation <> 100
    where a.attnum > 0 and not a.attisdropped and c.relkind in ('r', 'p', 'v', 'm', 'f') and ${PROJECT_RELATION}
    order by 1, 2, 4`,
  constraints: `
    select n.nspname as schema, c.relname as table, k.conname as name, k.contype::text as type,
           pg_get_constraintdef(k.oid) as definition, k.convalidated as validated,
           k.condeferrable as deferrable, k.condeferred as deferred
    from pg_constraint k
    join pg_class c on c.oid = k.conrelid
    join pg_namespace n on n.oid = c.relnamespace
    -- NOT NULL constraints (PostgreSQL 18, PGlite) are the columns' not_null, named by how the
    -- table was made (a partition made as one, or attached): compared there, not by name.
    where ${PROJECT_RELATION} and k.contype <> 'n'
    order by 1, 2, 3`,
  indexes: `
    select n.nspname as schema, c.relname as table, i.relname as name,
           pg_get_indexdef(x.indexrelid) as definition, x.indisvalid as valid,
           x.indisprimary as primary, x.indisunique as unique
    from pg_index x
    join pg_class c on c.oid = x.indrelid
    join pg_class i on i.oid = x.indexrelid
    join pg_namespace n on n.oid = c.relnamespace
    where ${PROJECT_RELATION}
    order by 1, 2, 3`,
  triggers: `
    select n.nspname as schema, c.relname as table, t.tgname as name,
           pg_get_triggerdef(t.oid) as definition, t.tgenabled::text as enabled
    from pg_trigger t
    join pg_class c on c.oid = t.tgrelid
    join pg_namespace n on n.oid = c.relnamespace
    where not t.tgisinternal and ${PROJECT_RELATION}
    order by 1, 2, 3`,
  functions: `
    select n.nspname as schema, p.proname as name, pg_get_function_identity_arguments(p.oid) as arguments,
           pg_get_functiondef(p.oid) as definition,
           -- Who owns a SECURITY DEFINER function decides what it can do; the migrating role's
           -- own name varies between environments, so it reads as <database owner>.
           case when p.proowner = ${DATABASE_OWNER} then '<database owner>'
                else pg_get_userbyid(p.proowner)::text end as owner,
           ${grantsOf('p.proacl', 'f', 'p.proowner')} as grants,
           obj_description(p.oid, 'pg_proc') as comment
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where ${PROJECT_SCHEMAS} and p.prokind in ('f', 'p') and ${notOfAnExtension('pg_proc', 'p.oid')}
    order by 1, 2, 3`,
  policies: `
    select n.nspname as schema, c.relname as table, p.polname as name, p.polcmd::text as command,
           p.polpermissive as permissive,
           (select array_agg(case when r = 0 then 'public' else pg_get_userbyid(r)::text end order by 1)
              from unnest(p.polroles) r) as roles,
           pg_get_expr(p.polqual, p.polrelid) as using, pg_get_expr(p.polwithcheck, p.polrelid) as with_check
    from pg_policy p
    join pg_class c on c.oid = p.polrelid
    join pg_namespace n on n.oid = c.relnamespace
    where ${PROJECT_RELATION}
    order by 1, 2, 3`,
  types: `
    select n.nspname as schema, t.typname as name, t.typtype::text as kind,
           format_type(t.typbasetype, t.typtypmod) as base_type,
           (select array_agg(e.enumlabel order by e.enumsortorder) from pg_enum e where e.enumtypid = t.oid) as labels,
           -- A domain's constraints, which the constraints above (a table's) do not list.
           t.typnotnull as not_null,
           (select array_agg(k.conname || ' ' || pg_get_constraintdef(k.oid) order by k.conname)
              from pg_constraint k where k.contypid = t.oid) as checks,
           obj_description(t.oid, 'pg_type') as comment
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where t.typtype in ('e', 'd', 'r', 'm') and ${PROJECT_SCHEMAS} and ${notOfAnExtension('pg_type', 't.oid')}
    order by 1, 2`,
};

/** Reads the snapshot. Rows come back as plain JSON-comparable objects. */
export async function readCatalog(db: Queryable): Promise<CatalogSnapshot> {
  const snapshot = {} as CatalogSnapshot;
  for (const [key, sql] of Object.entries(QUERIES) as [keyof CatalogSnapshot, string][]) {
    const { rows } = await db.query<Record<string, unknown>>(sql);
    (snapshot as unknown as Record<string, unknown>)[key] = key === 'extensions' ? rows.map((row) => row.name) : rows.map(normalizeRow);
  }
  return snapshot;
}

function normalizeRow(row: Record<string, unknown>): Record<string, unknown> {
  const normalized: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(row)) {
    normalized[key] = typeof value === 'bigint' ? Number(value) : typeof value === 'string' && key === 'position' ? Number(value) : value;
  }
  return normalized;
}

/** One difference between two snapshots, about one object. */
export interface CatalogDifference {
  /** `users.extra_idx`, `workflow_states`, `verify_api_key`: the object, as doctor names it. */
  object: string;
  /** One readable line: what the object is, and what differs. */
  line: string;
}

const LABELS: Record<keyof CatalogSnapshot, string> = {
  schemas: 'schema',
  extensions: 'extension',
  tables: 'table',
  columns: 'column',
  constraints: 'constraint',
  indexes: 'index',
  triggers: 'trigger',
  functions: 'function',
  policies: 'policy',
  types: 'type',
};

/** Which object a row is: its table and name (a function's arguments too, since names overload). */
function identityOf(item: unknown): { key: string; object: string } {
  if (typeof item === 'string') return { key: item, object: item };
  const row = item as Record<string, unknown>;
  const object = [row.table, row.name].filter((part): part is string => typeof part === 'string').join('.');
  return { key: JSON.stringify([row.schema, row.table, row.name, row.arguments]), object };
}

/** A value for a line: short, on one line. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? 'null';
  const line = text.replace(/\\n\s*/g, ' ');
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}

/**
 * The differences between two snapshots, one per object: in `expected` only (missing), in
 * `actual` only (not in schema.sql), or in both with fields that differ (each field named, with
 * both values). Empty when they are equal.
 */
export function catalogDifferences(expected: CatalogSnapshot, actual: CatalogSnapshot): CatalogDifference[] {
  const differences: CatalogDifference[] = [];
  for (const category of Object.keys(QUERIES) as (keyof CatalogSnapshot)[]) {
    const label = LABELS[category];
    const byKey = (items: unknown[]) => new Map(items.map((item) => [identityOf(item).key, item]));
    const want = byKey(expected[category] as unknown[]);
    const have = byKey(actual[category] as unknown[]);
    for (const [key, item] of want) {
      const { object } = identityOf(item);
      const found = have.get(key);
      if (found === undefined) {
        differences.push({ object, line: `${label} ${object} is missing (schema.sql has it)` });
        continue;
      }
      if (JSON.stringify(found) === JSON.stringify(item)) continue;
      const fields = Object.keys(item as object).filter(
        (field) => JSON.stringify((item as Record<string, unknown>)[field]) !== JSON.stringify((found as Record<string, unknown>)[field]),
      );
      const changes = fields.map(
        (field) =>
          `${field} is ${shown((found as Record<string, unknown>)[field])} (schema.sql: ${shown((item as Record<string, unknown>)[field])})`,
      );
      differences.push({ object, line: `${label} ${object} differs: ${changes.join('; ')}` });
    }
    for (const [key, item] of have) {
      if (want.has(key)) continue;
      const { object } = identityOf(item);
      const row = typeof item === 'object' && item !== null ? (item as Record<string, unknown>) : {};
      const what = row.definition ?? row.type;
      differences.push({ object, line: `${label} ${object} is not in schema.sql${what === undefined ? '' : `: ${shown(what)}`}` });
    }
  }
  return differences;
}

/** The differences between two snapshots, one readable line each; empty when they are equal. */
export function diffCatalogs(expected: CatalogSnapshot, actual: CatalogSnapshot): string[] {
  return catalogDifferences(expected, actual).map((difference) => difference.line);
}
