/**
 * schema.sql builds exactly what the migrations build: the same catalog (tables, columns,
 * types, defaults, constraints, indexes, triggers, functions, policies, grants, comments), the
 * same seed rows, and a migration record that `migrate up` continues from.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffCatalogs, readCatalog } from '../../engine/infra/store/diagnostics/catalog.ts';
import { migrateUp, migrationStatus } from '../../engine/infra/store/migrator/runner.ts';
import { loadSchemaFile } from '../../engine/infra/store/migrator/schema-file.ts';
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
