/**
 * The backends every store test runs against: the embedded PGlite database always, and the
 * PostgreSQL server named by TEST_DATABASE_URL when it is set. Each test file gets databases of
 * its own: a fresh in-memory PGlite, or a new database on the server, dropped afterwards.
 *
 * The tests of the tenant boundary, API keys and isolation also run on a Citus cluster when
 * TEST_CITUS_URL names its coordinator (`withCitus(backends)`, see citus.ts).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openDatabase, withDatabaseName, type Database } from '../../engine/infra/store/connection/database.ts';

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
}

export const serverUrl = process.env.TEST_DATABASE_URL?.trim() || undefined;

const pglite: TestBackend = {
  name: 'pglite',
  async create() {
    const db = await openDatabase({ dataDir: 'memory://' });
    return { db, dispose: () => db.close() };
  },
};

/** Runs `sql` on the server's maintenance connection (the TEST_DATABASE_URL database). */
async function onServer(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export async function createServerDatabase(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `es_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  await onServer(`create database ${name}`);
  return {
    name,
    url: withDatabaseName(serverUrl!, name),
    drop: () => onServer(`drop database if exists ${name} with (force)`),
  };
}

const postgres: TestBackend = {
  name: 'postgres',
  async create() {
    const server = await createServerDatabase();
    const db = await openDatabase({ url: server.url, poolSize: 6 });
    return {
      db,
      url: server.url,
      async dispose() {
        await db.close();
        await server.drop();
      },
    };
  },
};

export const backends: TestBackend[] = serverUrl ? [pglite, postgres] : [pglite];
