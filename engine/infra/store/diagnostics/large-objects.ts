/**
 * Large objects (`lo_create`, `lo_from_bytea`, …): the store makes none. They belong to no
 * organization and no table, so row-level security does not reach them, and PostgreSQL grants
 * EXECUTE on the functions that make them to PUBLIC: a leaked tenant login can store data there.
 */
import type { Queryable } from '../connection/database.ts';

export interface LargeObjectOwner {
  /** The owner's role name (its oid, as text, if the role is gone). */
  owner: string;
  count: number;
}

/**
 * How many large objects the database holds, by owner.
 *
 * @example
 * await largeObjectOwners(db); // [{ owner: 'app_tenant', count: 2 }]
 */
export async function largeObjectOwners(db: Queryable): Promise<LargeObjectOwner[]> {
  const { rows } = await db.query<LargeObjectOwner>(
    `select coalesce(r.rolname::text, m.lomowner::text) as owner, count(*)::int as count
       from pg_largeobject_metadata m
       left join pg_roles r on r.oid = m.lomowner
      group by 1
      order by 1`,
  );
  return rows;
}
