/** Which database a command works on: --database-url, DATABASE_URL, or the embedded default. */
import type { Command } from 'commander';
import { openDatabase, type Database } from '../infra/store/db.ts';
import { storeOver, type Store } from '../infra/store/store.ts';

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

/**
 * Opens the store for an admin command. The embedded database is the user's own, so it is
 * brought up to date on the way; a server's schema is the operator's to migrate
 * (`engine-store migrate up`), and a store on an out-of-date server refuses to open.
 */
export async function withStore<T>(command: Command, work: (store: Store) => Promise<T>): Promise<T> {
  const options = command.optsWithGlobals<GlobalOptions>();
  return withDatabase(options, async (db) => {
    const store = await storeOver(db, { migrate: db.kind === 'pglite' });
    try {
      return await work(store);
    } finally {
      // Also the tenant login's pool, which would keep the process alive until it idles out.
      await store.close();
    }
  });
}
