/** The statements a repository call sends, recorded instead of run (every one answers no rows). */
import type { QueryResult, Queryable } from '../../engine/infra/store/connection/database.ts';

export interface RecordedStatement {
  sql: string;
  params: unknown[];
}

export async function recordStatements(call: (db: Queryable) => Promise<unknown>): Promise<RecordedStatement[]> {
  const statements: RecordedStatement[] = [];
  const recorder: Queryable = {
    async query<Row>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<Row>> {
      statements.push({ sql, params: [...params] });
      return { rows: [], rowCount: 0 };
    },
    async exec(sql: string) {
      statements.push({ sql, params: [] });
    },
  };
  // A call that finds nothing ("not found") is expected: only its statements matter.
  await call(recorder).catch(() => undefined);
  return statements;
}
