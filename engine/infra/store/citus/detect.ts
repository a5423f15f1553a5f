/** Whether a database is a Citus coordinator: the store, the migration runner and the distribute command ask. */
import type { Queryable } from '../connection/database.ts';

export async function isCitus(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ present: boolean }>(
    `select exists (select from pg_catalog.pg_extension where extname = 'citus') as present`,
  );
  return rows[0]!.present;
}
