/**
 * openStore(): the store's front door. Opens three pools on the database: the owner's, for
 * migrations and operator actions, and two of the tenant login's, one for tenant scopes (withOrg,
 * readOrg) and a small one of its own for verifyApiKey, so that scopes held open cannot starve
 * verification. It checks that the schema is current, that the database enforces
 * tenant isolation and that the tenant login cannot get out of it, then hands out the operator
 * API (organizations) and the tenant API.
 *
 * The embedded database has one user, a superuser: there tenant scopes enter the role
 * app_tenant with SET LOCAL ROLE, and the boundary rests on the scopes taking no SQL text.
 */
import {
  connectionOptions,
  DEFAULT_POOL_SIZE,
  nonEmpty,
  openDatabase,
  type Database,
  type OpenOptions,
  type PoolOptions,
} from './connection/database.ts';
import { StoreError } from './errors.ts';
import type { Permission } from './api-keys/rbac.ts';
import { UUID } from './repositories/validation.ts';
import {
  callOptions,
  verifyOptions,
  withOrgOptions,
  type CallOptions,
  type VerifyOptions,
  type WithOrgOptions,
} from './connection/call-options.ts';
import { actingAs, operatorName } from './audit/actor.ts';
import { AuditOperations } from './audit/operations.ts';
import { observabilityOptions, observed, reportingQueries, type ObservabilityOptions } from './observability.ts';
import { migrateUp, migrationStatus } from './migrator/runner.ts';
import { OrganizationsRepository } from './repositories/organizations.ts';
import { assertTenantIsolation, assertTenantLogin, TENANT_ROLE } from './tenancy/tenant-safety.ts';
import { isCitus } from './citus/detect.ts';
import {
  readOrg,
  scopeEntry,
  scopeSessionLimits,
  scopeTimeoutValues,
  withOrg,
  type ScopeEntry,
  type ScopeTimeouts,
  type TenantReads,
  type TenantScope,
} from './tenancy/scopes.ts';
import { loadScopeSigner } from './tenancy/scope-signer.ts';
import { PrefixOrgs } from './api-keys/prefix-orgs.ts';
import { KeyCache, keyCacheOptions, type KeyCacheOptions, type KeyCacheStats } from './api-keys/key-cache.ts';
import { OrgShare, orgShareOf } from './tenancy/org-share.ts';
import {
  verifyApiKey,
  verifyPoolSizeValue,
  verifyTimeoutValues,
  type Verification,
  type VerifyTimeouts,
} from './api-keys/verify-api-key.ts';

export interface StoreOptions extends OpenOptions, TenantLoginOptions, ObservabilityOptions {
  /** Apply pending migrations first instead of refusing to start (default false). */
  migrate?: boolean;
  /**
   * The directory of the migration files: the package's own by default (found beside its code).
   * A bundle moves the code away from them: copy the package's `dist/infra/store/migrations`
   * next to the bundle and name it here.
   */
  migrationsDir?: string;
  /**
   * The owner's calls (`store.organizations`, `store.db`): how long a round trip may go
   * unanswered before the call fails with TIMEOUT (client_deadline) and its connection is
   * destroyed. Default none: the owner's statements have no statement timeout (purging a large
   * organization takes as long as it takes). Migration runs never have one; a signal stops them.
   * Tenant scopes and verifications have deadlines of their own (scopeTimeouts, verifyTimeouts),
   * and each call may name one (CallOptions).
   */
  deadlineMs?: number;
  /**
   * Answer repeat verifications of hot keys from memory (off by default; PostgreSQL only, not
   * Citus). Revocations and suspensions reach every process within `maxStalenessMs`, and limits
   * stay exact: see api-keys/key-cache.ts and the README's "Key cache".
   */
  keyCache?: KeyCacheOptions;
  /**
   * The operator this store acts for (letters, digits and . _ @ + -): the audit trail records the
   * store's operator actions (store.organizations), and its tenant scopes that name no actor, as
   * done by `operator:<name>`. Without it they are recorded as `system` and the database role.
   */
  operator?: string;
}

export interface TenantLoginOptions {
  /**
   * The tenant login's URL (PostgreSQL). Defaults to `TENANT_DATABASE_URL`; without either,
   * the owner's URL with the user app_tenant and `tenantPassword`.
   */
  tenantUrl?: string;
  /** app_tenant's password, for the derived tenant URL. Defaults to `APP_TENANT_PASSWORD`. */
  tenantPassword?: string;
  /** Connections in the tenant pool (default: as the owner's). */
  tenantPoolSize?: number;
  /** Local limits of every tenant scope; see ScopeTimeouts. */
  scopeTimeouts?: ScopeTimeouts;
  /**
   * The share of the tenant pool one organization may hold at once (default 0.5, at least one
   * connection): its further scopes wait for one of its own, then fail with POOL_EXHAUSTED
   * (reason org_share), while other organizations go on. PostgreSQL only.
   */
  orgPoolShare?: number;
  /**
   * Connections of the tenant login kept for verifyApiKey alone (default 2, at most 1,000), so
   * that tenant scopes cannot starve verification. PostgreSQL only: the embedded database is one
   * connection.
   */
  verifyPoolSize?: number;
  /** Limits of every verification (PostgreSQL only); see VerifyTimeouts. */
  verifyTimeouts?: VerifyTimeouts;
}

export interface Store {
  /** The owner's connection, for operator tooling: trusted code only. Tenant code uses withOrg. */
  readonly db: Database;
  /** The tenant login's connection (on the embedded database, the same as `db`). */
  readonly tenantDb: Database;
  /** Operator actions across organizations. */
  readonly organizations: OrganizationsRepository;
  /** One transaction scoped to one organization; see tenancy/scopes.ts. `options.deadlineMs`: see CallOptions. */
  withOrg<T>(orgId: string, work: (scope: TenantScope) => Promise<T>, options?: WithOrgOptions): Promise<T>;
  /** Single reads of one organization, one round trip each; see tenancy/scopes.ts. */
  readOrg(orgId: string, options?: CallOptions): TenantReads;
  /** Verifies an API key in one round trip; see api-keys/verify-api-key.ts, and VerifyOptions. */
  verifyApiKey(key: unknown, options?: VerifyOptions): Promise<Verification>;
  /** The audit trail, for operators: verify the chains, read any organization's, prune; see audit/. */
  readonly audit: AuditOperations;
  /** The key cache, when `keyCache` was given: what it holds and whether it answers. */
  readonly keyCache: { stats(): KeyCacheStats } | undefined;
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
  // Checked before the database opens; storeOver parses them (again) for its own callers.
  keyCacheOptions(options.keyCache);
  if (options.operator !== undefined) operatorName(options.operator);
  const db = await openDatabase(options);
  try {
    return await storeOver(db, options);
  } catch (error) {
    await db.close();
    throw error;
  }
}

/**
 * How long the store waits for an answer from the server on a pool whose statements end after
 * `statementMs` (the server's own timeout, which fires first while the server answers): the
 * margin covers the round trip and the cancellation, so that only a server that does not answer
 * at all (frozen, partitioned) meets the client's deadline.
 */
function clientDeadline(statementMs: number): number {
  return statementMs + Math.max(1_000, Math.round(statementMs / 2));
}

/** The tenant login's database: its own URL, or the owner's with app_tenant's name. */
async function openTenantDatabase(owner: Database, options: TenantLoginOptions, pool: PoolOptions): Promise<Database> {
  if (owner.kind === 'pglite') return owner;
  const url = options.tenantUrl ?? nonEmpty(process.env.TENANT_DATABASE_URL);
  if (url) return openDatabase({ url, ...pool });
  return owner.loginAs(TENANT_ROLE, options.tenantPassword ?? nonEmpty(process.env.APP_TENANT_PASSWORD), pool)!;
}

/** A store over an already open owner database (which the store then owns and closes). */
export async function storeOver(db: Database, options: Omit<StoreOptions, 'url' | 'dataDir'> = {}): Promise<Store> {
  const hooks = observabilityOptions(options);
  const operator = options.operator === undefined ? undefined : `operator:${operatorName(options.operator)}`;
  const cacheOptions = keyCacheOptions(options.keyCache);
  const dir = options.migrationsDir === undefined ? {} : { dir: options.migrationsDir };
  if (options.migrate) await migrateUp(db, { ...dir, ...(hooks.tracer ? { tracer: hooks.tracer } : {}) });
  const status = await migrationStatus(db, dir);
  if (!status.upToDate) {
    const pending = status.migrations.filter((entry) => entry.state !== 'applied').map((entry) => `${entry.name} (${entry.state})`);
    throw new StoreError('SCHEMA_OUT_OF_DATE', `the database schema is not current: ${pending.join(', ')}; run engine-store migrate up`, {
      reason: 'pending_migrations',
    });
  }
  await assertTenantIsolation(db);
  // Read through the owner's connection: the tenant login cannot read the scope key.
  const signer = await loadScopeSigner(db);
  const citus = await isCitus(db);
  if (cacheOptions && (db.kind === 'pglite' || citus)) {
    throw new StoreError(
      'INVALID_INPUT',
      db.kind === 'pglite'
        ? 'keyCache needs a PostgreSQL server: the embedded database verifies in this process already'
        : 'keyCache does not run on Citus: its change notifications cannot be sent from the two-phase commits Citus writes with',
      { field: 'keyCache', reason: db.kind === 'pglite' ? 'embedded' : 'citus' },
    );
  }
  const verifyTimeouts = verifyTimeoutValues(options.verifyTimeouts);
  // The owner's connection options (timeouts, TLS) hold for the tenant login's pools too.
  const shared = connectionOptions(options);
  const verifyPool: PoolOptions = {
    ...shared,
    poolSize: verifyPoolSizeValue(options.verifyPoolSize),
    sessionTimeouts: verifyTimeouts,
    deadlineMs: clientDeadline(verifyTimeouts.statementMs),
    pinSettings: true,
    // Connects on the first verification: the same login was just checked for tenantDb.
    lazy: true,
  };
  const tenantPoolSize = options.tenantPoolSize ?? options.poolSize;
  // Checked before any pool opens, like the other options.
  const perOrg = db.kind === 'pglite' ? undefined : orgShareOf(tenantPoolSize ?? DEFAULT_POOL_SIZE, options.orgPoolShare);
  // One server: the scopes' limits start with each connection instead of travelling with each scope.
  const limitsPinned = db.kind !== 'pglite' && !citus;
  const scopeTimeouts = scopeTimeoutValues(options.scopeTimeouts);
  const tenantDeadlineMs = clientDeadline(scopeTimeouts.statementMs);
  const tenantDb = await openTenantDatabase(db, options, {
    ...shared,
    pinSettings: true,
    deadlineMs: tenantDeadlineMs,
    ...(limitsPinned ? { sessionTimeouts: scopeSessionLimits(scopeTimeouts) } : {}),
    ...(tenantPoolSize ? { poolSize: tenantPoolSize } : {}),
  });
  let verifyDb: Database;
  let entry: ScopeEntry;
  try {
    // The role is entered only where the login is not app_tenant itself (the embedded
    // database's superuser, or a login that is a member of it): a role lookup saved per scope.
    const login = tenantDb !== db ? await assertTenantLogin(tenantDb) : undefined;
    entry = scopeEntry({
      ...scopeTimeouts,
      citus,
      signer,
      enterRole: login?.login !== TENANT_ROLE,
      limitsPinned,
      ...(operator ? { operator } : {}),
      ...(perOrg ? { share: new OrgShare(perOrg, tenantDeadlineMs) } : {}),
    });
    verifyDb = await openTenantDatabase(db, options, verifyPool);
  } catch (error) {
    if (tenantDb !== db) await tenantDb.close();
    throw error;
  }
  // Each pool's statements reported to onQuery (the same databases where there is no hook).
  const [ownerDb, tenantQueries, verifyQueries] = [
    reportingQueries(db, 'owner', hooks.onQuery),
    reportingQueries(tenantDb, 'tenant', hooks.onQuery),
    reportingQueries(verifyDb, 'verify', hooks.onQuery),
  ];
  // Spans and onError only where asked for: the hot paths pay nothing otherwise.
  const observe = hooks.tracer || hooks.onError ? observed : <T>(_h: unknown, _o: string, _a: unknown, work: () => Promise<T>) => work();
  const prefixOrgs = new PrefixOrgs();
  // A refusal the audit trail could not record: the verification's answer stands, onError hears of it.
  const onRecordError = hooks.onError ? (error: StoreError) => hooks.onError!(error, { operation: 'recordRefusal' }) : undefined;
  let keyCache: KeyCache | undefined;
  try {
    keyCache =
      cacheOptions &&
      (await KeyCache.open(verifyQueries, verifyDb, (org) => signer.keyCacheTag(org), prefixOrgs, cacheOptions, onRecordError));
  } catch (error) {
    await verifyDb.close();
    if (tenantDb !== db) await tenantDb.close();
    throw error;
  }
  const verify = keyCache
    ? (key: unknown, call: CallOptions, permission?: Permission) => keyCache.verify(key, call, permission)
    : (key: unknown, call: CallOptions, permission?: Permission) =>
        verifyApiKey(verifyQueries, key, call, permission, prefixOrgs, onRecordError);
  const store: Store = {
    db: ownerDb,
    tenantDb: tenantQueries,
    organizations: new OrganizationsRepository(operator ? actingAs(ownerDb, operator, { citus }) : ownerDb),
    audit: new AuditOperations(operator ? actingAs(ownerDb, operator, { citus }) : ownerDb),
    withOrg: async (orgId, work, options) =>
      observe(hooks, 'withOrg', orgAttributes(orgId), () => {
        const { call, ...audit } = withOrgOptions(options);
        return withOrg(tenantQueries, orgId, work, entry, call, audit);
      }),
    readOrg: readersOf(tenantQueries, entry, hooks.tracer || hooks.onError ? hooks : undefined),
    verifyApiKey: async (key, options) => {
      const { call, permission } = verifyOptions(options);
      return observe(
        hooks,
        'verifyApiKey',
        {},
        () => verify(key, call, permission),
        (result, span) => {
          span.setAttribute('engine_store.verification', result.ok ? 'accepted' : result.reason);
          if (result.ok) span.setAttribute('engine_store.org_id', result.principal.orgId);
        },
      );
    },
    keyCache: keyCache && { stats: () => keyCache.stats() },
    close: async () => {
      // First: its unspent units go back through the verification pool.
      await keyCache?.close();
      if (verifyDb !== db) await verifyDb.close();
      if (tenantDb !== db) await tenantDb.close();
      await db.close();
    },
  };
  scopeEntries.set(store, entry);
  return store;
}

/** A span's organization attribute: only an organization id as the store spells them, never raw input. */
function orgAttributes(orgId: unknown): Record<string, string> {
  return typeof orgId === 'string' && UUID.test(orgId) ? { 'engine_store.org_id': orgId.toLowerCase() } : {};
}

/** Each store's scope entry, for trusted code of this package (tests' SQL-text scopes): not exported by index.ts. */
const scopeEntries = new WeakMap<Store, ScopeEntry>();

/** The scope entry of `store`: its signer, timeouts and kind of database. Internal. */
export function scopeEntryOf(store: Store): ScopeEntry {
  const entry = scopeEntries.get(store);
  if (!entry) throw new StoreError('INVALID_INPUT', 'not a store opened by openStore or storeOver', { field: 'store' });
  return entry;
}

/**
 * readOrg() for one store: a reader holds nothing but the database and the organization's id,
 * so each organization's is made once (a hot path: building it costs about as much as the
 * read's own JavaScript). The bound only keeps a store that sees very many organizations small.
 */
function readersOf(
  db: Database,
  entry: ScopeEntry,
  hooks: ObservabilityOptions | undefined,
): (orgId: string, options?: CallOptions) => TenantReads {
  const readers = new Map<string, TenantReads>();
  return (orgId, options) => {
    const call = callOptions(options);
    // A reader with a deadline of its own is made for the call, not kept.
    if (call.deadlineMs !== undefined) return readOrg(db, orgId, entry, call, hooks);
    let reader = readers.get(orgId);
    if (reader === undefined) {
      reader = readOrg(db, orgId, entry, {}, hooks);
      if (readers.size >= 10_000) readers.clear();
      readers.set(orgId, reader);
    }
    return reader;
  };
}
