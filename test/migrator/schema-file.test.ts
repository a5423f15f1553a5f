/**
 * schema.sql builds exactly what the migrations build: the same catalog (tables, columns,
 * types, defaults, constraints, indexes, triggers, functions, policies, grants, comments), the
 * same seed rows, and a migration record that `migrate up` continues from.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { diffCatalogs, readCatalog, type CatalogSnapshot } from '../../engine/infra/store/diagnostics/catalog.ts';
import { migrateUp, migrationStatus } from '../../engine/infra/store/migrator/runner.ts';
import { loadSchemaFile, SCHEMA_CATALOG_FILE } from '../../engine/infra/store/migrator/schema-file.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

const SEED_QUERIES = [
  'select key, description from permissions order by key',
  'select role, permission from role_permissions order by role, permission',
  'select id, name, temporal_namespace, status from organizations order by id',
];

describe.each(backends)('schema.sql on $name', (backend) => {
  let fromMigrations: TestDatabase;
  let fromSchemaFile: TestDatabase;

  beforeAll(async () => {
    [fromMigrations, fromSchemaFile] = await Promise.all([backend.create(), backend.create()]);
    await migrateUp(fromMigrations.db);
    await loadSchemaFile(fromSchemaFile.db);
  });
  afterAll(async () => {
    await Promise.all([fromMigrations.dispose(), fromSchemaFile.dispose()]);
  });

  it('builds the same catalog as the migrations (regenerate with npm run schema:dump)', async () => {
    const expected = await readCatalog(fromMigrations.db);
    expect(expected.tables.length).toBeGreaterThanOrEqual(8);
    expect(diffCatalogs(expected, await readCatalog(fromSchemaFile.db))).toEqual([]);
  });

  it.runIf(backend.name === 'postgres')(
    'ships the catalog the migrations build on this major version, for doctor (regenerate with npm run schema:dump)',
    async () => {
      const shipped = JSON.parse(readFileSync(SCHEMA_CATALOG_FILE, 'utf8')) as { serverMajor: number; catalog: CatalogSnapshot };
      const { rows } = await fromMigrations.db.query<{ major: number }>(
        `select current_setting('server_version_num')::int / 10000 as major`,
      );
      expect(shipped.serverMajor).toBe(rows[0]!.major);
      expect(diffCatalogs(shipped.catalog, await readCatalog(fromMigrations.db))).toEqual([]);
    },
  );

  it('holds the same seed rows', async () => {
    for (const sql of SEED_QUERIES) {
      const { rows } = await fromMigrations.db.query(sql);
      expect(rows.length).toBeGreaterThan(0);
      expect((await fromSchemaFile.db.query(sql)).rows).toEqual(rows);
    }
  });

  it('records every migration as applied with its current checksum, so migrate up has nothing to do', async () => {
    const status = await migrationStatus(fromSchemaFile.db);
    expect(status.migrations.filter((entry) => entry.state !== 'applied')).toEqual([]);
    expect(await migrateUp(fromSchemaFile.db)).toEqual([]);
  });
});
