/**
 * doctor on Citus (#21 item 4). A correctly distributed database used to show 51 drift errors:
 * the citus extension's own schemas, views and functions, and the policies as distribution
 * rewrites them. Now those are known, the layout is checked against the metadata, and a
 * planted drift is still found.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../engine/infra/store/connection/database.ts';
import { diagnose, type Finding } from '../../engine/infra/store/diagnostics/doctor.ts';
import { migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { citusUrl, createCitusDatabase, withCitus } from '../support/citus.ts';
import type { TestDatabase } from '../support/backends.ts';

const errorsOf = (findings: Finding[]) => findings.filter((finding) => finding.severity === 'error').map((finding) => finding.code);

describe.runIf(citusUrl)('doctor on a Citus coordinator', () => {
  let distributed: TestDatabase;

  beforeAll(async () => {
    distributed = await withCitus([])
      .find((backend) => backend.name === 'citus')!
      .create();
  }, 300_000);
  afterAll(async () => {
    await distributed?.dispose();
  });

  it('finds nothing wrong with a distributed store, and finds a planted index', async () => {
    expect(errorsOf((await diagnose(distributed.db, { url: distributed.url })).findings)).toEqual([]);
    await distributed.db.exec('create index planted_idx on users (email)');
    try {
      const { findings } = await diagnose(distributed.db, { url: distributed.url });
      expect(findings.filter((finding) => finding.severity === 'error').map((finding) => `${finding.code} ${finding.object}`)).toEqual([
        'SCHEMA_DRIFT users.planted_idx',
      ]);
    } finally {
      await distributed.db.exec('drop index planted_idx');
    }
  });

  it('says so when the store was migrated on Citus but not distributed', async () => {
    const cluster = await createCitusDatabase();
    let db: Database | undefined;
    try {
      db = await openDatabase({ url: cluster.url, poolSize: 2 });
      await migrateUp(db);
      const { findings } = await diagnose(db, { url: cluster.url });
      expect(findings.find((finding) => finding.code === 'CITUS_NOT_DISTRIBUTED')?.message).toMatch(/run engine-store citus distribute/);
    } finally {
      await db?.close();
      await cluster.drop();
    }
  }, 300_000);
});
