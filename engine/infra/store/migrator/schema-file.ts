/**
 * schema.sql: the whole schema as one script, generated from the migrations by
 * `npm run schema:dump` (pg_dump of a freshly migrated database) and never edited by hand.
 * A database built from it is recorded as fully migrated, so `migrate up` continues from there.
 */
import { readFileSync } from 'node:fs';
import type { Database } from '../connection/database.ts';
import { besideTheStore } from './migration-files.ts';

export const SCHEMA_FILE = besideTheStore('schema.sql') ?? '';

/**
 * The catalog the migrations build on a PostgreSQL server of one major version (as
 * diagnostics/catalog.ts reads it), written with schema.sql: what doctor compares a live server
 * database with when it cannot make a scratch database (no CREATEDB) or need not.
 */
export const SCHEMA_CATALOG_FILE = besideTheStore('schema.catalog.json') ?? '';

/** Builds the schema in an empty database from schema.sql. */
export async function loadSchemaFile(db: Database, path: string = SCHEMA_FILE): Promise<void> {
  const script = readFileSync(path, 'utf8');
  await db.withSession(async (session) => {
    try {
      await session.exec(script);
    } finally {
      // pg_dump's preamble empties search_path for the session; give the connection back clean.
      await session.exec('reset all');
    }
  });
}
