/**
 * The backends every store test runs against: the embedded PGlite database always, and the
 * PostgreSQL server named by TEST_DATABASE_URL when it is set. Each test file gets databases of
 * its own: an in-memory PGlite, or a new database on the server, dropped afterwards. Both come
 * empty or migrated, from the snapshots and the template that global-setup.ts made for the run.
 *
 * The tests of the tenant boundary, API keys and isolation also run on a Citus cluster when
 * TEST_CITUS_URL names its coordinator (`withCitus(backends)`, see citus.ts).
 */
import { randomBytes } from 'node:crypto';
import { openAsBlob } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { openDatabase, withDatabaseName, type Database } from '../../engine/infra/store/connection/database.ts';
import { openStore, storeOver, type Store } from '../../engine/infra/store/store.ts';

export interface TestDatabase {
  db: Database;
  /** The URL of the server database (PostgreSQL only), for a second connection or the CLI. */
  url?: string;
  dispose(): Promise<void>;
}

export interface TestBackend {
  name: 'pglite' | 'postgres' | 'citus';
  /** A new, empty database (on Citus: migrated and distributed, since that is done once). */
  create(): Promise<TestDatabase>;
  /** A new database with every migration applied: a copy of the run's migrated one. */
  createMigrated(): Promise<TestDatabase>;
}

export const serverUrl = process.env.TEST_DATABASE_URL?.trim() || undefined;

async function pgliteFrom(snapshot: string): Promise<TestDatabase> {
  const db = await openDatabase({ dataDir: 'memory://', snapshot: await openAsBlob(snapshot) });
  return { db, dispose: () => db.close() };
}

const pglite: TestBackend = {
  name: 'pglite',
  create: () => pgliteFrom(inject('fixtures').emptySnapshot),
  createMigrated: () => pgliteFrom(inject('fixtures').migratedSnapshot),
};

/** Runs each statement in turn on the server's maintenance connection (the TEST_DATABASE_URL database). */
async function onServer(...statements: string[]): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    for (const sql of statements) await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * A new database on the TEST_DATABASE_URL server: empty, or with `migrated` a copy of the run's
 * migrated template.
 */
export async function createServerDatabase(
  options: { migrated?: boolean } = {},
): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `es_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  if (options.migrated) {
    const template = inject('fixtures').serverTemplate!;
    await onServer(`create database ${name} template ${template}`, copyDatabasePrivileges(template, name));
  } else {
    await onServer(`create database ${name}`);
  }
  return {
    name,
    url: withDatabaseName(serverUrl!, name),
    drop: () => onServer(`drop database if exists ${name} with (force)`),
  };
}

/**
 * CREATE DATABASE copies a template's contents but not its privileges (GRANT ... ON DATABASE),
 * and the migrations revoke TEMPORARY from PUBLIC there: without this the copy would differ from
 * a migrated database, and openStore would refuse it (TENANT_LOGIN_CAN_CREATE_TEMP).
 */
function copyDatabasePrivileges(template: string, copy: string): string {
  return `
    do $$
    declare
      template_acl aclitem[] := (select datacl from pg_database where datname = '${template}');
      granted record;
    begin
      if template_acl is null then return; end if;
      revoke all on database ${copy} from public;
      for granted in
        select a.privilege_type, coalesce(quote_ident(r.rolname), 'public') as grantee
          from aclexplode(template_acl) a left join pg_roles r on r.oid = a.grantee
         where a.grantee <> (select datdba from pg_database where datname = '${template}')
      loop
        execute format('grant %s on database ${copy} to %s', granted.privilege_type, granted.grantee);
      end loop;
    end
    $$`;
}

async function serverBackendDatabase(options: { migrated?: boolean }): Promise<TestDatabase> {
  const server = await createServerDatabase(options);
  const db = await openDatabase({ url: server.url, poolSize: 6 });
  return {
    db,
    url: server.url,
    async dispose() {
      await db.close();
      await server.drop();
    },
  };
}

const postgres: TestBackend = {
  name: 'postgres',
  create: () => serverBackendDatabase({}),
  createMigrated: () => serverBackendDatabase({ migrated: true }),
};

export const backends: TestBackend[] = serverUrl ? [pglite, postgres] : [pglite];

/**
 * A migrated database of `backend` and a store over it, for the tests of the describe block
 * that calls this: made before them (read `store` inside the tests, not at collection), disposed
 * after them.
 */
export function migratedStoreFor(backend: TestBackend): { readonly database: TestDatabase; readonly store: Store } {
  let database: TestDatabase | undefined;
  let store: Store | undefined;
  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
  });
  afterAll(async () => {
    await database?.dispose();
  });
  function made<T>(value: T | undefined): T {
    if (value === undefined) throw new Error('the migrated store is made in beforeAll: use it inside a test');
    return value;
  }
  return {
    get database() {
      return made(database);
    },
    get store() {
      return made(store);
    },
  };
}

/**
 * Runs `work` with a store whose every scope and check meets one connection: a store of one
 * connection on a server database (`database`), or `store` itself on PGlite, which has one.
 */
export async function withOneConnection(store: Store, database: TestDatabase, work: (on: Store) => Promise<void>): Promise<void> {
  if (database.url === undefined) return work(store);
  const single = await openStore({ url: database.url, poolSize: 1 });
  try {
    await work(single);
  } finally {
    await single.close();
  }
}
