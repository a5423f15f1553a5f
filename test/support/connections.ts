/** What the pooled connections carry between uses: the tenancy tests require none of it. */
import type { Database } from '../../engine/infra/store/connection/database.ts';

export interface ConnectionState {
  pid: number;
  user: string;
  role: string;
  org: string | null;
  readOnly: string;
}

/**
 * The state of the pooled connections: as many statements at once as the test pool has
 * connections (6), each holding its connection for a moment, so that on the server every
 * connection answers once. PGlite has one connection and answers them in turn.
 */
export async function pooledConnections(db: Database): Promise<ConnectionState[]> {
  const hold = db.kind === 'postgres' ? 0.05 : 0;
  const results = await Promise.all(
    Array.from({ length: 6 }, () =>
      db.query<ConnectionState>(
        `select pg_backend_pid() as pid, current_user::text as "user", current_setting('role') as role,
                current_setting('app.org_id', true) as org, current_setting('transaction_read_only') as "readOnly"
           from pg_sleep($1)`,
        [hold],
      ),
    ),
  );
  return results.map((result) => result.rows[0]!);
}
