/** Small helpers every repository uses to talk to the database. */
import type { QueryOptions, QueryResult, Queryable } from './database.ts';
import { toStoreError } from './database-errors.ts';

/**
 * Runs one statement; any failure comes out as a StoreError (see database-errors.ts). The
 * store's statements are prepared once per connection unless `prepare: false` (one-off SQL).
 */
export async function run<Row>(
  db: Queryable,
  sql: string,
  params: readonly unknown[] = [],
  options: QueryOptions = { prepare: true },
): Promise<QueryResult<Row>> {
  try {
    return await db.query<Row>(sql, params, options);
  } catch (error) {
    throw toStoreError(error);
  }
}

/** An identifier quoted for SQL text, for the statements that cannot take it as a parameter (DDL). */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * A JSON value as a query parameter for a `$n::jsonb` placeholder. Serialized here because the
 * drivers would turn a JavaScript array into a PostgreSQL array, not JSON. `undefined` and
 * `null` both become SQL NULL.
 */
export function jsonParam(value: unknown): string | null {
  return value === undefined || value === null ? null : JSON.stringify(value);
}
