/**
 * Regenerates engine/infra/store/schema.sql: migrates a scratch database on a PostgreSQL server
 * to the latest migration and dumps it with pg_dump. Needs pg_dump on the PATH and a server:
 * TEST_DATABASE_URL, DATABASE_URL, or postgres://postgres@127.0.0.1:5432/test.
 *
 *   npm run schema:dump
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { openDatabase } from '../engine/infra/store/connection/database.ts';
import { MIGRATIONS_TABLE, MIGRATIONS_TABLE_DDL, migrateUp } from '../engine/infra/store/migrator/runner.ts';
import { readMigrationFiles } from '../engine/infra/store/migrator/migration-files.ts';
import { SCHEMA_CATALOG_FILE, SCHEMA_FILE } from '../engine/infra/store/migrator/schema-file.ts';
import { readCatalog } from '../engine/infra/store/diagnostics/catalog.ts';

/**
 * pg_dump leaves out roles, which belong to the cluster; the schema's grants and policies name
 * them. Created only if missing, as the migration that introduces them does.
 */
const ROLES_PRELUDE = `-- Cluster-wide roles the schema grants to (pg_dump does not dump roles).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_tenant') THEN
    CREATE ROLE app_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_key_verifier') THEN
    CREATE ROLE app_key_verifier NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT app_tenant TO %I', current_user);
    EXECUTE format('GRANT app_key_verifier TO %I', current_user);
    GRANT CREATE ON SCHEMA public TO app_key_verifier;
  END IF;
END
$$;
`;

/** Global tables whose rows are part of the schema: seeded by migrations, read by everyone. */
const SEED_TABLES = ['permissions', 'role_permissions'];

const adminUrl = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';
const scratch = `engine_store_schema_dump_${process.pid}`;
const scratchUrl = Object.assign(new URL(adminUrl), { pathname: `/${scratch}` }).toString();

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  await client.query(sql).finally(() => client.end());
}

function pgDump(args: string[]): string {
  const output = execFileSync('pg_dump', [...args, '--dbname', scratchUrl], { encoding: 'utf8', maxBuffer: 64 << 20 });
  // Drop what changes from run to run or only psql understands: version banners and the
  // \restrict guard lines with their random keys.
  return output
    .split('\n')
    .filter((line) => !/^-- Dumped (from|by)/.test(line) && !/^\\(un)?restrict /.test(line))
    .join('\n')
    .replace(/\n{3,}/g, '\n\n');
}

await admin(`create database ${scratch}`);
try {
  const db = await openDatabase({ url: scratchUrl });
  try {
    await migrateUp(db);
    const { rows: organizations } = await db.query<{ id: string; name: string; temporal_namespace: string; status: string }>(
      'select id, name, temporal_namespace, status from organizations order by id',
    );
    // --no-owner leaves every object to whoever loads the file, which is right except for
    // functions deliberately owned by a narrow role (SECURITY DEFINER): hand those over again.
    const { rows: handedOver } = await db.query<{ statement: string }>(
      `select format('ALTER FUNCTION public.%I(%s) OWNER TO %I;', p.proname, pg_get_function_identity_arguments(p.oid), pg_get_userbyid(p.proowner)) as statement
       from pg_proc p where p.pronamespace = 'public'::regnamespace and p.proowner <> (select oid from pg_roles where rolname = current_user)
       order by 1`,
    );
    const literal = (value: string) => `'${value.replace(/'/g, "''")}'`;
    const migrations = readMigrationFiles();
    const parts = [
      '-- The whole engine-store schema, generated from the migrations by `npm run schema:dump`.',
      '-- Do not edit: change the schema with a new migration, then regenerate this file.',
      '-- A test builds one database from this file and one from the migrations and requires the same catalog.',
      '',
      ROLES_PRELUDE,
      // The audit trail's monthly partitions depend on the date, not the schema (catalog.ts).
      pgDump(['--schema-only', '--no-owner', `--exclude-table=${MIGRATIONS_TABLE}`, '--exclude-table=public.audit_events_y*']).trim(),
      '',
      '-- Functions owned by a role of their own (pg_dump --no-owner leaves them out).',
      ...handedOver.map((row) => row.statement),
      // The prelude let a non-superuser hand them over; taken back at once, as the migration does.
      'REVOKE CREATE ON SCHEMA public FROM app_key_verifier;',
      '',
      '-- Seed rows written by the migrations.',
      pgDump(['--data-only', '--column-inserts', '--no-owner', ...SEED_TABLES.map((table) => `--table=${table}`)])
        .split('\n')
        .filter((line) => line.startsWith('INSERT INTO'))
        .join('\n'),
      ...organizations.map(
        (org) =>
          `INSERT INTO public.organizations (id, name, temporal_namespace, status) VALUES (${[org.id, org.name, org.temporal_namespace, org.status].map(literal).join(', ')});`,
      ),
      '',
      '-- The migrations this schema is made of, so that `migrate up` continues from here.',
      `${MIGRATIONS_TABLE_DDL};`,
      ...migrations.map(
        (file) =>
          `INSERT INTO public.${MIGRATIONS_TABLE} (name, checksum, duration_ms) VALUES (${literal(file.name)}, ${literal(file.checksum)}, 0);`,
      ),
      '',
    ];
    writeFileSync(SCHEMA_FILE, parts.join('\n'));
    console.log(`wrote ${SCHEMA_FILE} (${migrations.length} migrations)`);
    // The catalog the migrations build, for doctor's drift check without a scratch database.
    const { rows: version } = await db.query<{ major: number }>(`select current_setting('server_version_num')::int / 10000 as major`);
    const shipped = { serverMajor: version[0]!.major, catalog: await readCatalog(db) };
    writeFileSync(SCHEMA_CATALOG_FILE, `${JSON.stringify(shipped, null, 1)}\n`);
    console.log(`wrote ${SCHEMA_CATALOG_FILE} (PostgreSQL ${shipped.serverMajor})`);
  } finally {
    await db.close();
  }
} finally {
  await admin(`drop database if exists ${scratch} with (force)`);
}
