/**
 * Which database a command works on (--database-url, DATABASE_URL, --data-dir,
 * ENGINE_STORE_DATA_DIR, or ./.engine-store), and whether there is one: only `migrate up` makes
 * an embedded database, and only in a new or empty directory, so that a mistyped --data-dir is
 * an error, not a new empty database that seems to have lost everything.
 */
import { readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { databaseNamedBy } from '../infra/store/connection/database.ts';
import { StoreError } from '../infra/store/errors.ts';

export interface GlobalOptions {
  databaseUrl?: string;
  dataDir?: string;
}

/** A server URL (and whether it came from --database-url), or the embedded database's directory. */
export type Target = { url: string; flag: boolean } | { dataDir: string };

/** The database the flags name, by the store's one rule (databaseNamedBy): a flag beats the environment. */
export function targetOf(options: GlobalOptions): Target {
  const named = databaseNamedBy({ url: options.databaseUrl, dataDir: options.dataDir });
  return 'url' in named ? { url: named.url, flag: !named.fromEnvironment } : named;
}

/**
 * The command line that runs `subcommand` on this database, for messages that say what to run.
 * A server's URL is shown without its password.
 */
export function commandLine(target: Target, location: string, subcommand: string): string {
  if ('dataDir' in target) return `engine-store --data-dir ${shellWord(location)} ${subcommand}`;
  return target.flag ? `engine-store --database-url ${shellWord(location)} ${subcommand}` : `engine-store ${subcommand}`;
}

function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * Refuses, before anything is opened or created, an embedded data directory that holds no
 * database: missing or empty (unless `creates`: `migrate up`), or holding other files. Any other
 * trouble with the directory (not one, not writable) is worded when it is opened.
 */
export function assertDatabaseIn(dataDir: string, creates: boolean): void {
  if (dataDir.startsWith('memory://')) return;
  const path = resolve(dataDir);
  let entries: string[];
  try {
    entries = readdirSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return;
    entries = [];
  }
  if (entries.includes('PG_VERSION')) return;
  if (entries.length > 0) {
    throw new StoreError(
      'NO_DATABASE',
      `no database at ${path}: it holds other files, and migrate up makes a database only in a new or empty directory`,
      {
        field: 'dataDir',
        reason: 'not_a_database',
      },
    );
  }
  if (!creates) {
    throw new StoreError('NO_DATABASE', `no database at ${path} (run: ${commandLine({ dataDir }, path, 'migrate up')})`, {
      field: 'dataDir',
      reason: 'no_database',
    });
  }
}
