/** Which database a command works on: --database-url, DATABASE_URL, or the embedded default. */
import { openDatabase, type Database } from '../infra/store/db.ts';

export interface GlobalOptions {
  databaseUrl?: string;
  dataDir?: string;
}

/** Opens the database the options name, runs `work`, and always closes it. */
export async function withDatabase<T>(options: GlobalOptions, work: (db: Database) => Promise<T>): Promise<T> {
  const db = await openDatabase({ url: options.databaseUrl, dataDir: options.dataDir, poolSize: 2 });
  try {
    return await work(db);
  } finally {
    await db.close();
  }
}
