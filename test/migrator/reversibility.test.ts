/**
 * Every migration undoes exactly what it does: for each one, the catalog before `up` equals the
 * catalog after `down`, and `up` again rebuilds the same catalog. All the way down leaves no
 * object of the project behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffCatalogs, readCatalog, type CatalogSnapshot } from '../../engine/infra/store/diagnostics/catalog.ts';
import { migrateDown, migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { readMigrationFiles } from '../../engine/infra/store/migrator/migration-files.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

const names = readMigrationFiles().map((file) => file.name);

describe.each(backends)('migrations on $name', (backend) => {
  let t: TestDatabase;
  let empty: CatalogSnapshot;
  const after = new Map<string, CatalogSnapshot>();

  beforeAll(async () => {
    t = await backend.create();
    empty = await readCatalog(t.db);
  });
  afterAll(async () => {
    await t.dispose();
  });

  it('starts from a database without project objects', () => {
    expect(empty.tables).toEqual([]);
    expect(empty.functions).toEqual([]);
  });

  // Sequential by design: each case starts where the previous one left the database.
  for (const [index, name] of names.entries()) {
    it(`reverts ${name} exactly, and re-applies it identically`, async () => {
      const before = index === 0 ? empty : after.get(names[index - 1]!)!;
      expect(diffCatalogs(before, await readCatalog(t.db))).toEqual([]);
      await migrateUp(t.db, { to: name });
      const applied = await readCatalog(t.db);
      expect(diffCatalogs(before, applied)).not.toEqual([]);
      await migrateDown(t.db, { count: 1 });
      expect(diffCatalogs(before, await readCatalog(t.db))).toEqual([]);
      await migrateUp(t.db, { to: name });
      expect(diffCatalogs(applied, await readCatalog(t.db))).toEqual([]);
      after.set(name, applied);
    });
  }

  it('leaves no project object behind all the way down, and comes all the way up again', async () => {
    const top = await readCatalog(t.db);
    const reverted = await migrateDown(t.db, { count: names.length });
    expect(reverted.map((step) => step.name)).toEqual([...names].reverse());
    expect(diffCatalogs(empty, await readCatalog(t.db))).toEqual([]);
    await migrateUp(t.db);
    expect(diffCatalogs(top, await readCatalog(t.db))).toEqual([]);
  });
});
