/**
 * Where the tests and the benchmarks find a PostgreSQL server, in one place: the URL they were
 * given, else TEST_DATABASE_URL, DATABASE_URL, then this machine's default.
 */
import { nonEmpty } from '../../engine/infra/store/connection/database.ts';

export { withDatabaseName } from '../../engine/infra/store/connection/database.ts';

/** The server this project's machines run (user postgres, trust authentication, database test). */
export const DEFAULT_SERVER_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** `given` (a --url flag), else the environment's server, else DEFAULT_SERVER_URL. */
export function serverUrlOr(given: string | undefined): string {
  return given ?? nonEmpty(process.env.TEST_DATABASE_URL) ?? nonEmpty(process.env.DATABASE_URL) ?? DEFAULT_SERVER_URL;
}
