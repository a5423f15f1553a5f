/**
 * Which database a command works on (--database-url, DATABASE_URL, --data-dir,
 * ENGINE_STORE_DATA_DIR, or ./.engine-store), and whether there is one: only `migrate up` makes
 * an embedded database, and only in a new or empty directory, so that a mistyped --data-dir is
 * an error, not a new empty database that seems to have lost everything.
 */
import { readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { DEFAULT_DATA_DIR, nonEmpty } from '../infra/store/connection/database.ts';
import { StoreError } from '../infra/store/errors.ts';

export interface GlobalOptions {
  databaseUrl?: string;
  dataDir?: string;
}

/** A server URL (and whether it came from --database-url), or the embedded database's directory. */
export type Target = { url: string; flag: boolean } | { dataDir: string };

/**
 * A flag beats the environment: `--data-dir` works on that directory even where DATABASE_URL is
 * set (an operator's shell often has one, and an admin command meant for a local directory must
 * not run on that server). Both flags at once is a mistake, not a choice to make silently.
 */
export function targetOf(options: GlobalOptions): Target {
  if (options.databaseUrl !== undefined && options.dataDir !== undefined) {
    throw new StoreError('INVALID_INPUT', '--database-url and --data-dir name two databases: give one', {
      field: 'databaseUrl',
      reason: 'two_databases',
    });
  }
  if (options.databaseUrl !== undefined) return { url: options.databaseUrl, flag: true };
  if (options.dataDir !== undefined) return { dataDir: options.dataDir };
  const url = nonEmpty(process.env.DATABASE_URL);
  if (url !== undefined) return { url, flag: false };
  return { dataDir: nonEmpty(process.env.ENGINE_STORE_DATA_DIR) ?? DEFAULT_DATA_DIR };
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
