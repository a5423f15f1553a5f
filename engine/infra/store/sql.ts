/** Small helpers every repository uses to talk to the database. */
import type { QueryResult, Queryable } from './db.ts';
import { toStoreError } from './database-errors.ts';

/** Runs one statement; any failure comes out as a StoreError (see database-errors.ts). */
export async function run<Row>(db: Queryable, sql: string, params: readonly unknown[] = []): Promise<QueryResult<Row>> {
  try {
    return await db.query<Row>(sql, params);
  } catch (error) {
    throw toStoreError(error);
  }
}

/**
 * A JSON value as a query parameter for a `$n::jsonb` placeholder. Serialized here because the
 * drivers would turn a JavaScript array into a PostgreSQL array, not JSON. `undefined` and
 * `null` both become SQL NULL.
 */
export function jsonParam(value: unknown): string | null {
  return value === undefined || value === null ? null : JSON.stringify(value);
}
