/**
 * openStore(): the store's front door. Opens PostgreSQL or the embedded database, checks that
 * the schema is current and that the database enforces tenant isolation, and hands out the
 * operator API (organizations) and the tenant API (withOrg).
 */
import { openDatabase, type Database, type OpenOptions } from './db.ts';
import { StoreError } from './errors.ts';
import { migrateUp, migrationStatus } from './migrate.ts';
import { OrganizationsRepository } from './organizations.ts';
import { assertTenantIsolation } from './tenant-safety.ts';
import { readOrg, withOrg, type TenantReads, type TenantScope } from './tenancy.ts';
import { verifyApiKey, type Verification } from './verify.ts';

export interface StoreOptions extends OpenOptions {
  /** Apply pending migrations first instead of refusing to start (default false). */
  migrate?: boolean;
}

export interface Store {
  /** The underlying connection, for operator tooling; tenant code uses withOrg. */
  readonly db: Database;
  /** Operator actions across organizations. */
  readonly organizations: OrganizationsRepository;
  /** One transaction scoped to one organization; see tenancy.ts. */
  withOrg<T>(orgId: string, work: (scope: TenantScope) => Promise<T>): Promise<T>;
  /** Single reads of one organization, one round trip each; see tenancy.ts. */
  readOrg(orgId: string): TenantReads;
  /** Verifies an API key in one round trip; see verify.ts. */
  verifyApiKey(key: unknown, options?: { now?: Date }): Promise<Verification>;
  close(): Promise<void>;
}

/**
 * @example
 * const store = await openStore({ url: process.env.DATABASE_URL });
 * const org = await store.organizations.create({ name: 'Acme' });
 * await store.withOrg(org.id, (tx) => tx.users.create({ email: 'ada@acme.example', role: 'admin' }));
 * await store.close();
 */
export async function openStore(options: StoreOptions = {}): Promise<Store> {
  const db = await openDatabase(options);
  try {
    return await storeOver(db, options);
  } catch (error) {
    await db.close();
    throw error;
  }
}

/** A store over an already open database (which the store then owns and closes). */
export async function storeOver(db: Database, options: { migrate?: boolean } = {}): Promise<Store> {
  if (options.migrate) await migrateUp(db);
  const status = await migrationStatus(db);
  if (!status.upToDate) {
    const pending = status.migrations.filter((entry) => entry.state !== 'applied').map((entry) => `${entry.name} (${entry.state})`);
    throw new StoreError('SCHEMA_OUT_OF_DATE', `the database schema is not current: ${pending.join(', ')}; run engine-store migrate up`, {
      reason: 'pending_migrations',
    });
  }
  await assertTenantIsolation(db);
  return {
    db,
    organizations: new OrganizationsRepository(db),
    withOrg: (orgId, work) => withOrg(db, orgId, work),
    readOrg: readersOf(db),
    verifyApiKey: (key, verifyOptions) => verifyApiKey(db, key, verifyOptions),
    close: () => db.close(),
  };
}

/**
 * readOrg() for one store: a reader holds nothing but the database and the organization's id,
 * so each organization's is made once (a hot path: building it costs about as much as a
 * policy's InitPlan). The bound only keeps a store that sees very many organizations small.
 */
function readersOf(db: Database): (orgId: string) => TenantReads {
  const readers = new Map<string, TenantReads>();
  return (orgId) => {
    let reader = readers.get(orgId);
    if (reader === undefined) {
      reader = readOrg(db, orgId);
      if (readers.size >= 10_000) readers.clear();
      readers.set(orgId, reader);
    }
    return reader;
  };
}
