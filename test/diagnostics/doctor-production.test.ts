/**
 * doctor in the README's production setup (#21 item 4), on the PostgreSQL server: the database
 * is owned and migrated by a login that is not a superuser and may not create databases.
 *
 * - Drift is checked there too, against the catalog shipped with schema.sql (it used to say
 *   DRIFT_NOT_CHECKED), and a planted drift is one readable line.
 * - A superuser's doctor finds no drift in it either: grants compare by meaning, not by the
 *   names of who migrated and who granted (it used to report 38 drift errors).
 * - schema.sql loaded by such a login builds the catalog its migrations build (it used to leave
 *   CREATE on the schema to app_key_verifier).
 */
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from 'engine-store';
import { openDatabase, type Database } from '../../engine/infra/store/connection/database.ts';
import { diagnose, type Finding } from '../../engine/infra/store/diagnostics/doctor.ts';
import { diffCatalogs, readCatalog } from '../../engine/infra/store/diagnostics/catalog.ts';
import { loadSchemaFile } from '../../engine/infra/store/migrator/schema-file.ts';
import { serverUrl } from '../support/backends.ts';
import { withDatabaseName } from '../support/servers.ts';

const errorsOf = (findings: Finding[]) => findings.filter((finding) => finding.severity === 'error');

describe.runIf(serverUrl)('doctor for an owner that is not a superuser and has no CREATEDB', () => {
  const tag = randomBytes(4).toString('hex');
  const role = `es_prod_owner_${tag}`;
  const [migrated, loaded] = [`es_test_prod_${tag}`, `es_test_prod_schema_${tag}`];
  const asOwner = (database: string) => {
    const url = new URL(withDatabaseName(serverUrl!, database));
    url.username = role;
    return url.toString();
  };
  let admin: pg.Client;
  let db: Database;

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`create role ${role} login createrole nocreatedb nosuperuser`);
    for (const database of [migrated, loaded]) await admin.query(`create database ${database} owner ${role}`);
    const store = await openStore({ url: asOwner(migrated), migrate: true });
    await store.close();
    db = await openDatabase({ url: asOwner(migrated), poolSize: 2 });
  }, 120_000);

  afterAll(async () => {
    await db?.close();
    for (const database of [migrated, loaded]) await admin.query(`drop database if exists ${database} with (force)`);
    await admin.query(`drop owned by ${role}`).catch(() => undefined);
    await admin.query(`drop role if exists ${role}`);
    await admin.end();
  });

  it('checks drift without a scratch database, finds none, and reports a planted index in one line', async () => {
    const { findings } = await diagnose(db, { url: asOwner(migrated) });
    expect(findings.map((finding) => finding.code)).not.toContain('DRIFT_NOT_CHECKED');
    expect(errorsOf(findings)).toEqual([]);

    await db.exec('create index planted_idx on users (email)');
    try {
      const drift = (await diagnose(db, { url: asOwner(migrated) })).findings.filter((finding) => finding.code === 'SCHEMA_DRIFT');
      expect(drift.map((finding) => finding.object)).toEqual(['users.planted_idx']);
      expect(drift[0]!.message).toBe(
        'schema drift: index users.planted_idx is not in schema.sql: "CREATE INDEX planted_idx ON public.users USING btree (email)"',
      );
    } finally {
      await db.exec('drop index planted_idx');
    }
  });

  it('finds no drift when a superuser runs it: grants compare by meaning, not by the names of who migrated and granted', async () => {
    const superuser = await openDatabase({ url: withDatabaseName(serverUrl!, migrated), poolSize: 2 });
    try {
      const { findings } = await diagnose(superuser, { url: withDatabaseName(serverUrl!, migrated) });
      expect(findings.filter((finding) => finding.code === 'SCHEMA_DRIFT')).toEqual([]);
    } finally {
      await superuser.close();
    }
  });

  it('schema.sql loaded by that owner builds the catalog its migrations build', async () => {
    const fromSchema = await openDatabase({ url: asOwner(loaded), poolSize: 1 });
    try {
      await loadSchemaFile(fromSchema);
      expect(diffCatalogs(await readCatalog(db), await readCatalog(fromSchema))).toEqual([]);
    } finally {
      await fromSchema.close();
    }
  });
});
