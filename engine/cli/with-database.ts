/**
 * Opening the database a command names, for the time of the command: it is named to the
 * operator, checked (there is one, its schema is current, the organization exists), always
 * closed, and its errors are worded in the command's flags.
 */
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { openDatabase, type Database } from '../infra/store/connection/database.ts';
import { createDatabaseNamedBy } from '../infra/store/connection/create-database.ts';
import { StoreError, isStoreError } from '../infra/store/errors.ts';
import { migrationStatus } from '../infra/store/migrator/runner.ts';
import { storeOver, type Store } from '../infra/store/store.ts';
import type { TenantScope } from '../infra/store/tenancy/scopes.ts';
import { assertDatabaseIn, commandLine, targetOf, type GlobalOptions, type Target } from './database-target.ts';
import { inFlagTerms } from './flags.ts';
import type { Output } from './output.ts';

/**
 * Opens the command's database, names it (`output.using`), runs `work`, and always closes it.
 * Only `creates` (`migrate up`) may make an embedded database where there is none, and only
 * `createsOnServer` (`migrate up --create-database`) a server database the URL names.
 */
export async function withDatabase<T>(
  command: Command,
  output: Output,
  work: (db: Database, target: Target) => Promise<T>,
  { creates = false, createsOnServer = false } = {},
): Promise<T> {
  const target = targetOf(command.optsWithGlobals<GlobalOptions>());
  if ('dataDir' in target) assertDatabaseIn(target.dataDir, creates);
  const db = await open(target).catch(async (error: unknown) => {
    if (
      !('url' in target) ||
      !createsOnServer ||
      !isStoreError(error, 'CONNECTION_FAILED') ||
      error.details.reason !== 'database_missing'
    ) {
      throw error;
    }
    output.progress(`creating database ${await createDatabaseNamedBy(target.url)}`);
    return open(target);
  });
  output.using(db.location);
  try {
    return await work(db, target);
  } catch (error) {
    throw inFlagTerms(error, command);
  } finally {
    await db.close();
  }
}

async function open(target: Target): Promise<Database> {
  try {
    return await openDatabase({ ...('url' in target ? { url: target.url } : { dataDir: target.dataDir }), poolSize: 2 });
  } catch (error) {
    if (!('dataDir' in target) || error instanceof StoreError) throw error;
    // PGlite failed to start on files that are there: damaged, or not its own.
    const reason = error instanceof Error ? error.message : String(error);
    throw new StoreError(
      'CONNECTION_FAILED',
      `the embedded database in ${resolve(target.dataDir)} cannot be started (${reason}): its files may be damaged or written by another version. ` +
        'Restore the directory from a backup, or move it aside and make a new database with migrate up',
      { field: 'dataDir', reason: 'unusable' },
      { cause: error },
    );
  }
}

/**
 * Opens the store for an admin command. Nothing is migrated on the way: on a database whose
 * schema is not current the command refuses, saying what to run.
 */
export async function withStore<T>(command: Command, output: Output, work: (store: Store) => Promise<T>): Promise<T> {
  return withDatabase(command, output, async (db, target) => {
    const status = await migrationStatus(db);
    if (!status.upToDate) {
      const unapplied = status.migrations.filter((entry) => entry.state !== 'applied');
      const pendingOnly = unapplied.every((entry) => entry.state === 'pending');
      throw new StoreError(
        'SCHEMA_OUT_OF_DATE',
        `the database schema is not current (${unapplied.length} migration(s) ${pendingOnly ? 'pending' : 'pending, edited or missing'}); ` +
          `run: ${commandLine(target, db.location, pendingOnly ? 'migrate up' : 'migrate status')}`,
        { reason: 'pending_migrations' },
      );
    }
    const store = await storeOver(db, { operator: operatorOf(command) });
    try {
      return await work(store);
    } finally {
      // Also the tenant login's pool, which would keep the process alive until it idles out.
      await store.close();
    }
  });
}

/**
 * Who runs the command, for the audit trail: --actor, else the OS user (its name made to fit an
 * operator's name: letters, digits and . _ @ + -).
 */
function operatorOf(command: Command): string {
  const { actor } = command.optsWithGlobals<{ actor?: string }>();
  if (actor !== undefined) return actor;
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    user = process.env.USER ?? '';
  }
  const name = user.replace(/[^A-Za-z0-9._@+-]/g, '-').slice(0, 200);
  return name === '' ? 'unknown' : name;
}

/**
 * Runs `work` in the scope of the command's --org, after checking that the organization exists:
 * row-level security makes an unknown or deleted organization look empty, which would read as
 * "no users" rather than as the mistyped id it is.
 */
export async function withOrgOf<T>(command: Command, output: Output, work: (tx: TenantScope) => Promise<T>): Promise<T> {
  const { org } = command.opts<{ org: string }>();
  return withStore(command, output, async (store) => {
    const found = await store.organizations.get(org, { includeDeleted: true }).catch((error: unknown) => {
      throw isStoreError(error, 'NOT_FOUND') ? new StoreError('NOT_FOUND', 'no such organization', { field: 'orgId' }) : error;
    });
    if (found.deletedAt !== null) {
      throw new StoreError('ORG_INACTIVE', `the organization was deleted (engine-store org restore ${found.id} brings it back)`, {
        field: 'orgId',
      });
    }
    return store.withOrg(org, work);
  });
}
