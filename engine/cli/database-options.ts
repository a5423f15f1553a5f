/** Which database a command works on: --database-url, DATABASE_URL, or the embedded default. */
import type { Command } from 'commander';
import { openDatabase, type Database } from '../infra/store/db.ts';
import { storeOver, type Store } from '../infra/store/store.ts';
import type { TenantScope } from '../infra/store/tenancy.ts';
import { inFlagTerms } from './flags.ts';
import type { Output } from './output.ts';

export interface GlobalOptions {
  databaseUrl?: string;
  dataDir?: string;
}

/**
 * Opens the database the options name, names it (`output.using`), runs `work`, and always
 * closes it. Its errors are worded in the command's flags.
 */
export async function withDatabase<T>(command: Command, output: Output, work: (db: Database) => Promise<T>): Promise<T> {
  const options = command.optsWithGlobals<GlobalOptions>();
  const db = await openDatabase({ url: options.databaseUrl, dataDir: options.dataDir, poolSize: 2 });
  output.using(db.location);
  try {
    return await work(db);
  } catch (error) {
    throw inFlagTerms(error, command);
  } finally {
    await db.close();
  }
}

/**
 * Opens the store for an admin command. The embedded database is the user's own, so it is
 * brought up to date on the way; a server's schema is the operator's to migrate
 * (`engine-store migrate up`), and a store on an out-of-date server refuses to open.
 */
export async function withStore<T>(command: Command, output: Output, work: (store: Store) => Promise<T>): Promise<T> {
  return withDatabase(command, output, async (db) => {
    const store = await storeOver(db, { migrate: db.kind === 'pglite' });
    try {
      return await work(store);
    } finally {
      // Also the tenant login's pool, which would keep the process alive until it idles out.
      await store.close();
    }
  });
}

/** Runs `work` in the scope of the command's --org. */
export async function withOrgOf<T>(command: Command, output: Output, work: (tx: TenantScope) => Promise<T>): Promise<T> {
  const { org } = command.opts<{ org: string }>();
  return withStore(command, output, (store) => store.withOrg(org, work));
}
