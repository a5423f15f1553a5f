/**
 * A lint over the catalog that keeps the schema shardable by org_id (DESIGN.md "Data model";
 * engine/infra/store/citus/layout.ts, which the distribute command follows; docs/scaling-out.md). On every backend, after all
 * migrations:
 *
 * - every tenant table (one with an org_id column) leads its primary key with org_id;
 * - every unique constraint and unique index on a tenant table has org_id among its key columns,
 *   except the documented allow-list below;
 * - every foreign key between two tenant tables has org_id in both column lists, paired with
 *   each other (org_id references org_id);
 * - the global tables (no org_id) are exactly organizations, permissions, role_permissions and
 *   role_grants (and the scope key);
 *   none of them has a foreign key to a tenant table, and the tenant role can only read them.
 *
 * On Citus, tenant tables are distributed by org_id and global ones become reference tables:
 * a unique constraint without the distribution column cannot be enforced across shards, a foreign
 * key between distributed tables must include the distribution column, and a reference table
 * cannot refer to a distributed one. The lint catches each of these while the schema is still on
 * one server. The last test proves the lint can fail: it adds a violating object of every kind
 * in a transaction that is rolled back, and requires a finding naming each one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../../engine/infra/store/connection/database.ts';
import { MIGRATIONS_TABLE } from '../../engine/infra/store/migrator/runner.ts';
import { NODE_LOCAL_TABLES, REFERENCE_TABLES, TENANT_INSERTABLE_REFERENCE_TABLES } from '../../engine/infra/store/citus/layout.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

/**
 * Unique constraints on tenant tables that do not include org_id, each with the reason. None
 * today: the API key prefix, which must be unique over every organization, is kept unique by
 * api_key_prefixes, a reference table.
 */
export const GLOBAL_UNIQUE_ALLOW_LIST: Readonly<Record<string, string>> = {};

/** Tables that are one copy on every node once sharded: Citus reference tables, and the scope key. */
export const EXPECTED_GLOBAL_TABLES: readonly string[] = [...REFERENCE_TABLES, ...NODE_LOCAL_TABLES];

/** Tables the lint does not look at: the migration runner's bookkeeping, not part of the data model. */
const BOOKKEEPING_TABLES: readonly string[] = [MIGRATIONS_TABLE];

export interface LintOptions {
  schema?: string;
  allowList?: Readonly<Record<string, string>>;
  expectedGlobalTables?: readonly string[];
}

/**
 * Lints the catalog of `schema` (default public). Returns one readable line per finding, each
 * starting with the rule and naming the offending table, constraint or index; [] when clean.
 */
export async function lintTenancy(db: Queryable, options: LintOptions = {}): Promise<string[]> {
  const schema = options.schema ?? 'public';
  const allowList = options.allowList ?? GLOBAL_UNIQUE_ALLOW_LIST;
  const expectedGlobal = options.expectedGlobalTables ?? EXPECTED_GLOBAL_TABLES;
  const findings: string[] = [];

  const { rows: tables } = await db.query<{ table: string; tenant: boolean }>(
    `select c.relname as table,
            exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped) as tenant
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and c.relkind in ('r', 'p') and not c.relispartition
      order by c.relname`,
    [schema],
  );
  const considered = tables.filter((t) => !BOOKKEEPING_TABLES.includes(t.table));
  // An expected global table may carry org_id (api_key_prefixes): it is still one copy on every node.
  const tenant = new Set(considered.filter((t) => t.tenant && !expectedGlobal.includes(t.table)).map((t) => t.table));
  const global = considered.filter((t) => !tenant.has(t.table)).map((t) => t.table);

  // 1. Primary keys lead with org_id.
  const { rows: primaryKeys } = await db.query<{ table: string; name: string; def: string; first_column: string | null }>(
    `select c.relname as table, con.conname as name, pg_get_constraintdef(con.oid) as def,
            (select a.attname from pg_attribute a where a.attrelid = con.conrelid and a.attnum = con.conkey[1]) as first_column
       from pg_constraint con
       join pg_class c on c.oid = con.conrelid
       join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and con.contype = 'p'`,
    [schema],
  );
  for (const table of [...tenant].sort()) {
    const pk = primaryKeys.find((p) => p.table === table);
    if (!pk) findings.push(`primary-key: tenant table ${table} has no primary key (it must be PRIMARY KEY (org_id, ...))`);
    else if (pk.first_column !== 'org_id') {
      findings.push(`primary-key: tenant table ${table}: ${pk.name} ${pk.def} does not lead with org_id`);
    }
  }

  // 2. Unique constraints and unique indexes include org_id among their key columns.
  const { rows: uniques } = await db.query<{ table: string; name: string; def: string; has_org_id: boolean }>(
    `select t.relname as table, i.relname as name, pg_get_indexdef(i.oid) as def,
            exists (select 1
                      from unnest(x.indkey::int2[]) with ordinality as k(attnum, position)
                      join pg_attribute a on a.attrelid = t.oid and a.attnum = k.attnum
                     where k.position <= x.indnkeyatts and a.attname = 'org_id') as has_org_id
       from pg_index x
       join pg_class i on i.oid = x.indexrelid
       join pg_class t on t.oid = x.indrelid
       join pg_namespace n on n.oid = t.relnamespace
      where n.nspname = $1 and x.indisunique
      order by t.relname, i.relname`,
    [schema],
  );
  const allowedSeen = new Set<string>();
  for (const unique of uniques) {
    if (!tenant.has(unique.table) || unique.has_org_id) continue;
    if (unique.name in allowList) {
      allowedSeen.add(unique.name);
      continue;
    }
    findings.push(
      `unique-includes-org_id: ${unique.name} on tenant table ${unique.table} does not include org_id (${unique.def}); Citus cannot enforce it across shards`,
    );
  }
  for (const name of Object.keys(allowList)) {
    if (!allowedSeen.has(name))
      findings.push(`unique-includes-org_id: allow-list entry ${name} matches no global unique index on a tenant table: remove it`);
  }

  // 3. Foreign keys between tenant tables pair org_id with org_id; 4b. global tables refer to no tenant table.
  const { rows: foreignKeys } = await db.query<{
    table: string;
    name: string;
    referenced: string;
    def: string;
    local_position: number | null;
    referenced_position: number | null;
  }>(
    `select c.relname as table, con.conname as name, f.relname as referenced, pg_get_constraintdef(con.oid) as def,
            (select array_position(con.conkey, a.attnum) from pg_attribute a where a.attrelid = con.conrelid and a.attname = 'org_id') as local_position,
            (select array_position(con.confkey, a.attnum) from pg_attribute a where a.attrelid = con.confrelid and a.attname = 'org_id') as referenced_position
       from pg_constraint con
       join pg_class c on c.oid = con.conrelid
       join pg_class f on f.oid = con.confrelid
       join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and con.contype = 'f'
      order by c.relname, con.conname`,
    [schema],
  );
  for (const fk of foreignKeys) {
    const fromTenant = tenant.has(fk.table);
    const toTenant = tenant.has(fk.referenced);
    if (fromTenant && toTenant) {
      if (fk.local_position === null || fk.referenced_position === null) {
        findings.push(
          `foreign-key-includes-org_id: ${fk.name} on ${fk.table} -> ${fk.referenced} does not include org_id in both column lists (${fk.def})`,
        );
      } else if (fk.local_position !== fk.referenced_position) {
        findings.push(
          `foreign-key-includes-org_id: ${fk.name} on ${fk.table} -> ${fk.referenced} does not pair org_id with org_id (${fk.def})`,
        );
      }
    } else if (!fromTenant && toTenant && !BOOKKEEPING_TABLES.includes(fk.table)) {
      findings.push(
        `global-table: ${fk.name} on global table ${fk.table} refers to tenant table ${fk.referenced} (${fk.def}); a Citus reference table cannot refer to a distributed one`,
      );
    }
  }

  // 4. The global tables are exactly the expected ones, and tenants can only read them.
  for (const table of global) {
    if (!expectedGlobal.includes(table)) {
      findings.push(
        `global-table: ${table} has no org_id column and is not an expected global table (${expectedGlobal.join(', ')}): add org_id or document it`,
      );
    }
  }
  for (const table of expectedGlobal) {
    if (!global.includes(table)) findings.push(`global-table: expected global table ${table} is missing`);
  }
  // Tenants only read global tables, except that they register their own API key prefixes.
  const { rows: tenantWrites } = await db.query<{ table: string }>(
    `select c.relname as table
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = $1 and c.relname = any ($2::text[])
        and exists (select 1 from pg_roles where rolname = 'app_tenant')
        and (has_table_privilege('app_tenant', c.oid, 'UPDATE, DELETE, TRUNCATE')
             or (has_table_privilege('app_tenant', c.oid, 'INSERT') and not c.relname = any ($3::text[])))
      order by 1`,
    [schema, global, TENANT_INSERTABLE_REFERENCE_TABLES],
  );
  for (const { table } of tenantWrites)
    findings.push(`global-table: the tenant role app_tenant may write global table ${table}; it must be read-only to tenants`);

  return findings;
}

describe.each(backends)('tenancy lint on $name', (backend) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await backend.createMigrated();
  });

  afterAll(async () => {
    await database?.dispose();
  });

  it('finds nothing in the migrated schema', async () => {
    const findings = await lintTenancy(database.db);
    expect(findings, `tenancy lint findings:\n${findings.join('\n')}`).toEqual([]);
  });

  it('sees the tenant and global tables it is meant to', async () => {
    const { rows } = await database.db.query<{ table: string; tenant: boolean }>(
      `select c.relname as table, exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped) as tenant
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition and c.relname <> $1 order by 1`,
      [MIGRATIONS_TABLE],
    );
    expect(rows.filter((r) => r.tenant).map((r) => r.table)).toEqual([
      'api_key_auth_failures',
      'api_key_leases',
      'api_key_prefixes',
      'api_key_usage',
      'api_key_usage_saved',
      'api_keys',
      'audit_events',
      'audit_heads',
      'schedules',
      'task_states',
      'users',
      'workflow_states',
    ]);
    expect(rows.filter((r) => !r.tenant).map((r) => r.table)).toEqual([
      'audit_retention',
      'organizations',
      'permissions',
      'role_grants',
      'role_permissions',
      'tenant_scope_key',
    ]);
  });

  it('would refuse api_key_prefixes as a sharded table: it is global because its key is the prefix alone', async () => {
    const findings = await lintTenancy(database.db, {
      expectedGlobalTables: ['organizations', 'permissions', 'role_permissions', 'role_grants', 'tenant_scope_key', 'audit_retention'],
    });
    expect(findings, findings.join('\n')).toEqual([
      expect.stringMatching(
        /^primary-key: tenant table api_key_prefixes: api_key_prefixes_pkey PRIMARY KEY \(prefix\) does not lead with org_id/,
      ),
      expect.stringMatching(/^unique-includes-org_id: api_key_prefixes_pkey on tenant table api_key_prefixes /),
    ]);
  });

  it('reports a missing expected global table and a stale allow-list entry', async () => {
    const findings = await lintTenancy(database.db, {
      expectedGlobalTables: [...EXPECTED_GLOBAL_TABLES, 'feature_flags'],
      allowList: { ...GLOBAL_UNIQUE_ALLOW_LIST, users_email_key: 'gone' },
    });
    expect(findings.sort()).toEqual([
      'global-table: expected global table feature_flags is missing',
      'unique-includes-org_id: allow-list entry users_email_key matches no global unique index on a tenant table: remove it',
    ]);
  });

  it('fails, naming the object, for every rule broken (in a transaction that is rolled back)', async () => {
    const findings = await database.db.withSession(async (session) => {
      await session.exec('begin');
      try {
        await session.exec(`
          -- primary key not led by org_id, and a tenant table without a primary key
          create table lint_bad_pk (org_id uuid not null, id uuid not null, constraint lint_bad_pk_pkey primary key (id, org_id));
          create table lint_no_pk (org_id uuid not null, id uuid not null);
          -- a unique constraint and a unique expression index without org_id; org_id only in INCLUDE does not count
          create table lint_bad_unique (org_id uuid not null, id uuid not null, code text not null,
            constraint lint_bad_unique_pkey primary key (org_id, id),
            constraint lint_bad_unique_code_key unique (code));
          create unique index lint_bad_unique_lower_code_idx on lint_bad_unique (lower(code));
          create unique index lint_bad_unique_id_include_idx on lint_bad_unique (id) include (org_id);
          -- foreign keys between tenant tables: one without org_id, one pairing org_id with another column
          create table lint_bad_fk (org_id uuid not null, id uuid not null, code text, user_id uuid,
            constraint lint_bad_fk_pkey primary key (org_id, id),
            constraint lint_bad_fk_code_fkey foreign key (code) references lint_bad_unique (code),
            constraint lint_bad_fk_user_fkey foreign key (user_id, org_id) references users (org_id, id));
          -- an unexpected global table, referring to a tenant table
          create table lint_stray_global (id integer primary key, workflow_code text,
            constraint lint_stray_global_code_fkey foreign key (workflow_code) references lint_bad_unique (code));
          -- an expected global table gaining a foreign key to a tenant table
          alter table role_permissions add column lint_code text
            constraint role_permissions_lint_code_fkey references lint_bad_unique (code);
          -- a global table the tenant role may write
          grant insert on permissions to app_tenant;
        `);
        return await lintTenancy(session);
      } finally {
        await session.exec('rollback');
      }
    });

    const expected: Array<[rule: string, object: string]> = [
      ['primary-key', 'lint_bad_pk_pkey'],
      ['primary-key', 'tenant table lint_no_pk has no primary key'],
      ['unique-includes-org_id', 'lint_bad_unique_code_key on tenant table lint_bad_unique'],
      ['unique-includes-org_id', 'lint_bad_unique_lower_code_idx on tenant table lint_bad_unique'],
      ['unique-includes-org_id', 'lint_bad_unique_id_include_idx on tenant table lint_bad_unique'],
      ['foreign-key-includes-org_id', 'lint_bad_fk_code_fkey on lint_bad_fk -> lint_bad_unique does not include org_id'],
      ['foreign-key-includes-org_id', 'lint_bad_fk_user_fkey on lint_bad_fk -> users does not pair org_id with org_id'],
      ['global-table', 'lint_stray_global has no org_id column'],
      ['global-table', 'lint_stray_global_code_fkey on global table lint_stray_global refers to tenant table lint_bad_unique'],
      ['global-table', 'role_permissions_lint_code_fkey on global table role_permissions refers to tenant table lint_bad_unique'],
      ['global-table', 'app_tenant may write global table permissions'],
    ];
    const report = `lint findings:\n${findings.join('\n')}`;
    for (const [rule, object] of expected) {
      expect(
        findings.filter((f) => f.startsWith(`${rule}: `) && f.includes(object)),
        `${rule} naming "${object}"\n${report}`,
      ).toHaveLength(1);
    }
    expect(findings, report).toHaveLength(expected.length);

    // Rolled back: the schema is clean again.
    expect(await lintTenancy(database.db)).toEqual([]);
  });
});
