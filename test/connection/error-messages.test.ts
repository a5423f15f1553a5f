/**
 * No driver text in any error (issue #13, item 6). PostgreSQL's message and detail quote values:
 * the conflicting row's key (`Key (temporal_namespace)=(probe) already exists`), the whole failing
 * row of a check, the input that did not parse. For an operator call those are other
 * organizations' values; database-errors.ts therefore passes on neither, not even as `cause`.
 *
 * Every SQLSTATE that toStoreError maps is provoked here on a real database, with values that
 * carry a random tag: through the store's API where one reaches it, else through run() (the
 * query path of every repository). The StoreError must have the expected code, and nothing it
 * shows (message, toJSON(), cause, util.inspect of the whole error) may name a probe value or
 * use PostgreSQL's own wording. Where PostgreSQL's text names a probe, the test checks that it
 * did (else the case would prove nothing): the database is watched, not replaced.
 *
 * In a tenant scope PostgreSQL itself leaves the key and the failing row out of a violation
 * (row-level security is on for the table); the owner's connection, which operator calls use, gets
 * them. So each kind of violation is provoked there too, where the values are really at stake.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database, type Queryable, type Session } from '../../engine/infra/store/connection/database.ts';
import { SQLSTATE, databaseErrorFields } from '../../engine/infra/store/connection/database-errors.ts';
import { storeOver, type ErrorCode, type StoreError, type Store, type TenantScope } from 'engine-store';
import { run } from '../../engine/infra/store/connection/run.ts';
import type { ScopeTimeouts } from '../../engine/infra/store/tenancy/scopes.ts';
import { expectStoreError } from '../support/assertions.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withOrgSql } from '../support/trusted-sql.ts';
import { loadScopeSigner } from '../../engine/infra/store/tenancy/scope-signer.ts';

// ---------------------------------------------------------------------------------------------
// What an error may not show

/**
 * PostgreSQL's wording around the values it quotes. The store's own "the row already exists" is
 * not PostgreSQL's "Key (...)=(...) already exists", hence the parenthesis.
 */
const DRIVER_WORDING = [
  /Key \(/,
  /\) already exists/,
  /\bviolates\b/,
  /DETAIL/,
  /duplicate key/,
  /Failing row contains/,
  /is not present in table/,
  /is still referenced/,
  /invalid input syntax/,
  /out of range for type/,
  /not recognized for type/,
  /Process \d+/,
];

const tag = () => randomBytes(4).toString('hex');

/** The values of one case: its tag, and the values it marks that do not contain the tag. */
class Probe {
  readonly tag = tag();
  readonly marked: string[] = [];

  /** `value`, remembered as one no error may show. */
  mark<T extends string>(value: T): T {
    this.marked.push(value);
    return value;
  }

  /** The tag as lowercase letters only (for values that allow nothing else). */
  get letters(): string {
    return [...this.tag].map((digit) => String.fromCharCode(97 + Number.parseInt(digit, 16))).join('');
  }
}

/** Everything a StoreError shows of itself, part by part. */
function shown(error: StoreError): Record<string, string> {
  return {
    message: error.message,
    json: JSON.stringify(error.toJSON()),
    cause: String(error.cause ?? ''),
    causeJson: JSON.stringify(error.cause ?? null) ?? '',
    inspected: inspect(error, { depth: 10 }),
  };
}

/** Expects `error` to show none of `forbidden` and none of PostgreSQL's wording. */
function expectNoDriverText(error: StoreError, forbidden: readonly string[]): void {
  for (const [part, text] of Object.entries(shown(error))) {
    for (const value of forbidden) expect(text, `${part} names ${value}`).not.toContain(value);
    for (const wording of DRIVER_WORDING) expect(text, `${part} has PostgreSQL's wording`).not.toMatch(wording);
  }
}

// ---------------------------------------------------------------------------------------------
// Watching the database: every error a statement of the store throws, as the driver threw it

function witnessing(db: Database, seen: unknown[]): Database {
  const watch = <T>(work: Promise<T>): Promise<T> =>
    work.catch((error: unknown) => {
      seen.push(error);
      throw error;
    });
  const watched = (on: Queryable): Queryable => ({
    query: (sql, params, options) => watch(on.query(sql, params, options)),
    exec: (sql) => watch(on.exec(sql)),
  });
  const watchedSession = (session: Session): Session => ({
    ...watched(session),
    pipeline: (statements) => watch(session.pipeline(statements)),
  });
  return {
    ...db,
    ...watched(db),
    withSession: (work) => db.withSession((session) => work(watchedSession(session))),
    // The tenant login's pool (on a server) is watched as well.
    loginAs: (user, password, pool) => db.loginAs(user, password, pool)?.then((tenant) => witnessing(tenant, seen)),
  };
}

/** The driver's text of a database error: what must not come through. */
function driverText(error: unknown): string {
  const fields = databaseErrorFields(error);
  return fields ? `${fields.message}\n${fields.detail ?? ''}` : String(error);
}

// ---------------------------------------------------------------------------------------------
// The cases

interface Fixture {
  backend: TestDatabase;
  store: Store;
  serverVersion: number;
  /** A live organization with one user; its values are forbidden in every case. */
  orgId: string;
  userId: string;
  email: string;
  tag: string;
  /** `db`, its errors seen as the fixture's store's are. */
  watch(db: Database): Database;
}

interface Case {
  /** The SQLSTATE PostgreSQL reports (or `none`: not an error of the server). */
  sqlstate: string;
  /** Completes "<sqlstate> <what>". */
  what: string;
  code: ErrorCode | ((f: Fixture) => ErrorCode);
  /** The SQLSTATE this server reports, when not `sqlstate` (it changed between versions). */
  reports?(f: Fixture): string;
  /** Whether PostgreSQL's own text names a probe value: checked, so that the case means something. */
  named: boolean;
  /** Needs a second connection at the same time: PostgreSQL only (PGlite is one connection). */
  server?: boolean;
  provoke(f: Fixture, p: Probe): Promise<unknown>;
}

/** A new organization of the case's own. */
const newOrg = (f: Fixture, p: Probe, suffix = '') =>
  f.store.organizations.create({ name: `Probe ${p.tag}${suffix}`, temporalNamespace: `probe-${p.tag}${suffix}` });

/** `work` in the fixture organization's scope. */
const inOrg = <T>(f: Fixture, work: (tx: TenantScope) => Promise<T>) => f.store.withOrg(f.orgId, work);

/** A new user, as a tenant call gives it. */
const probeUser = (p: Probe) => ({ email: `probe-${p.tag}@x.test`, role: 'admin' }) as const;

/** A write in a new organization of the case's own, after `change` (a suspension, a soft delete). */
async function writeAfter(f: Fixture, p: Probe, change: (orgId: string) => Promise<unknown>) {
  const org = await newOrg(f, p);
  await change(org.id);
  return f.store.withOrg(org.id, (tx) => tx.users.create(probeUser(p)));
}

/** A user of the fixture organization, for cases that need a row of their own. */
const newUser = (f: Fixture, p: Probe) => inOrg(f, (tx) => tx.users.create({ ...probeUser(p), role: 'customer' }));

/** `work` in an owner session whose transaction never commits. */
const rolledBack = <T>(f: Fixture, work: (session: Session) => Promise<T>) =>
  f.store.db.withSession(async (session) => {
    await session.query('begin');
    try {
      return await work(session);
    } finally {
      await session.query('rollback').catch(() => undefined);
    }
  });

/**
 * Holds the fixture user's row locked (FOR UPDATE in a scope of its own) while `work` runs: the
 * lock a second scope cannot get.
 */
async function whileLocked<T>(f: Fixture, work: () => Promise<T>): Promise<T> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => (locked = resolve));
  const holder = inOrg(f, async (tx) => {
    await lockUser(tx, f.userId).execute();
    locked();
    await released;
  });
  await Promise.race([isLocked, holder]);
  try {
    return await work();
  } finally {
    release();
    await holder;
  }
}

/** A task state whose workflow execution does not exist. */
const probeTask = (p: Probe) =>
  ({
    taskExecId: p.mark(`${p.tag}-0000-7000-8000-000000000001`),
    taskId: 'probe',
    workflowExecId: p.mark(`${p.tag}-0000-7000-8000-000000000002`),
    workflowId: 'probe',
    component: 'task',
    status: 'running',
  }) as const;

/**
 * `work` with a second store over the fixture's server database that gives up after 100 ms: in
 * its scopes (`scopeTimeouts`), or on every owner statement (`lockTimeout`, a lock_timeout of the
 * owner's connections, which the store itself never sets).
 */
async function withImpatientStore<T>(
  f: Fixture,
  options: { lockTimeout?: boolean; scopeTimeouts?: ScopeTimeouts },
  work: (impatient: Store) => Promise<T>,
): Promise<T> {
  const url = new URL(f.backend.url!);
  if (options.lockTimeout) url.searchParams.set('options', '-c lock_timeout=100');
  const impatient = await storeOver(f.watch(await openDatabase({ url: url.toString(), poolSize: 1 })), {
    scopeTimeouts: options.scopeTimeouts,
  });
  try {
    return await work(impatient);
  } finally {
    await impatient.close();
  }
}

/** Resolves once backend `pid` waits for a lock. */
async function waitingForLock(f: Fixture, pid: number): Promise<void> {
  for (let attempt = 0; attempt < 1_000; attempt++) {
    const { rows } = await f.store.db.query<{ waiting: boolean }>(
      "select wait_event_type = 'Lock' as waiting from pg_stat_activity where pid = $1",
      [pid],
    );
    if (rows[0]?.waiting) return;
    await sleep(5);
  }
  throw new Error(`backend ${pid} never waited for a lock`);
}

const lockUser = (tx: TenantScope, userId: string) => tx.kysely.selectFrom('users').select('id').where('id', '=', userId).forUpdate();

const cases: Case[] = [
  // --- 23505 unique_violation -> CONFLICT ----------------------------------------------------
  {
    sqlstate: SQLSTATE.uniqueViolation,
    what: "a second organization with another's namespace (operator call): the other's namespace is not named",
    code: 'CONFLICT',
    named: true,
    async provoke(f, p) {
      await newOrg(f, p);
      return f.store.organizations.create({ name: `Other ${p.tag}`, temporalNamespace: `probe-${p.tag}` });
    },
  },
  {
    sqlstate: SQLSTATE.uniqueViolation,
    what: "renaming an organization to another's name (operator call)",
    code: 'CONFLICT',
    named: true,
    async provoke(f, p) {
      await newOrg(f, p);
      const renamed = await newOrg(f, p, '-2');
      return f.store.organizations.rename(renamed.id, `PROBE ${p.tag}`);
    },
  },
  {
    sqlstate: SQLSTATE.uniqueViolation,
    what: 'restoring an organization whose name a live one has taken (operator call)',
    code: 'CONFLICT',
    named: true,
    async provoke(f, p) {
      const original = await newOrg(f, p);
      await f.store.organizations.softDelete(original.id);
      await f.store.organizations.create({ name: `probe ${p.tag}`, temporalNamespace: `probe-${p.tag}-new` });
      return f.store.organizations.restore(original.id);
    },
  },
  {
    sqlstate: SQLSTATE.uniqueViolation,
    what: "a user with another user's email (withOrg)",
    code: 'CONFLICT',
    named: false, // under row-level security PostgreSQL itself leaves the key out
    async provoke(f, p) {
      await newUser(f, p);
      return inOrg(f, (tx) => tx.users.create({ email: `PROBE-${p.tag}@x.test`, role: 'admin' }));
    },
  },
  {
    sqlstate: SQLSTATE.uniqueViolation,
    what: 'a duplicate key of a constraint the store has no field for (run)',
    code: 'CONFLICT',
    named: true,
    provoke: (f, p) =>
      rolledBack(f, async (session) => {
        const key = p.mark(`probe${p.letters}:read`);
        await run(session, 'insert into permissions (key, description) values ($1, $2)', [key, `probe ${p.tag}`]);
        return run(session, 'insert into permissions (key, description) values ($1, $2)', [key, `probe ${p.tag} again`]);
      }),
  },

  // --- 23503 foreign_key_violation -> NOT_FOUND ----------------------------------------------
  {
    sqlstate: SQLSTATE.foreignKeyViolation,
    what: 'a task state of a workflow execution that does not exist (withOrg)',
    code: 'NOT_FOUND',
    named: false, // under row-level security PostgreSQL itself leaves the key out
    provoke: (f, p) => inOrg(f, (tx) => tx.tasks.upsert(probeTask(p))),
  },
  {
    sqlstate: SQLSTATE.foreignKeyViolation,
    what: 'a task state of a workflow execution that does not exist, as the owner (run): the key is not named',
    code: 'NOT_FOUND',
    named: true,
    provoke(f, p) {
      const task = probeTask(p);
      return run(
        f.store.db,
        `insert into task_states (org_id, task_exec_id, task_id, workflow_exec_id, workflow_id, component, status)
         values ($1, $2, $3, $4, $5, $6, $7)`,
        [f.orgId, task.taskExecId, task.taskId, task.workflowExecId, task.workflowId, task.component, task.status],
      );
    },
  },
  {
    sqlstate: SQLSTATE.foreignKeyViolation,
    what: "deleting a row still referred to (an API key's prefix, run): the referring key's values are not named",
    code: 'NOT_FOUND',
    named: true,
    async provoke(f, p) {
      const { apiKey } = await inOrg(f, (tx) => tx.apiKeys.issue({ userId: f.userId, name: `probe ${p.tag}` }));
      p.mark(apiKey.prefix);
      return run(f.store.db, 'delete from api_key_prefixes where org_id = $1 and prefix = $2', [f.orgId, apiKey.prefix]);
    },
  },

  // --- 23001 restrict_violation -> CONFLICT (PostgreSQL 18; 23503 before) ----------------------
  {
    sqlstate: SQLSTATE.restrictViolation,
    what: 'deleting a permission a role still grants (run; PostgreSQL before 18 reports 23503)',
    reports: (f) => (f.serverVersion >= 180000 ? SQLSTATE.restrictViolation : SQLSTATE.foreignKeyViolation),
    code: (f) => (f.serverVersion >= 180000 ? 'CONFLICT' : 'NOT_FOUND'),
    named: true,
    provoke: (f, p) =>
      rolledBack(f, async (session) => {
        const key = p.mark(`probe${p.letters}:grant`);
        await run(session, 'insert into permissions (key, description) values ($1, $2)', [key, `probe ${p.tag}`]);
        await run(session, "insert into role_permissions (role, permission) values ('customer', $1)", [key]);
        return run(session, 'delete from permissions where key = $1', [key]);
      }),
  },

  // --- 23514 check_violation -> INVALID_INPUT ------------------------------------------------
  {
    sqlstate: SQLSTATE.checkViolation,
    what: 'a role the check refuses (tx.kysely)',
    code: 'INVALID_INPUT',
    named: false, // under row-level security PostgreSQL itself leaves the failing row out
    async provoke(f, p) {
      const user = await newUser(f, p);
      return inOrg(f, (tx) =>
        tx.kysely
          .updateTable('users')
          .set({ role: `probe-${p.tag}` })
          .where('id', '=', user.id)
          .execute(),
      );
    },
  },
  {
    sqlstate: SQLSTATE.checkViolation,
    what: "a role the check refuses, as the owner (run): the failing row's values are not named",
    code: 'INVALID_INPUT',
    named: true,
    async provoke(f, p) {
      const user = await newUser(f, p);
      return run(f.store.db, 'update users set role = $3 where org_id = $1 and id = $2', [f.orgId, user.id, `probe-${p.tag}`]);
    },
  },

  // --- 23502 not_null_violation -> INVALID_INPUT, or TENANT_SCOPE_REQUIRED for org_id ----------
  {
    sqlstate: SQLSTATE.notNullViolation,
    what: "a user's role set to null (tx.kysely)",
    code: 'INVALID_INPUT',
    named: false, // under row-level security PostgreSQL itself leaves the failing row out
    async provoke(f, p) {
      const user = await newUser(f, p);
      return inOrg(f, (tx) =>
        tx.kysely
          .updateTable('users')
          .set({ role: null as unknown as string })
          .where('id', '=', user.id)
          .execute(),
      );
    },
  },
  {
    sqlstate: SQLSTATE.notNullViolation,
    what: "a user's role set to null, as the owner (run): the failing row's values are not named",
    code: 'INVALID_INPUT',
    named: true,
    async provoke(f, p) {
      const user = await newUser(f, p);
      return run(f.store.db, 'update users set role = null where org_id = $1 and id = $2', [f.orgId, user.id]);
    },
  },
  {
    sqlstate: SQLSTATE.notNullViolation,
    what: 'a tenant row written outside any scope (run, org_id null)',
    code: 'TENANT_SCOPE_REQUIRED',
    named: true,
    provoke: (f, p) => run(f.store.db, "insert into users (email, role) values ($1, 'admin')", [`probe-${p.tag}@x.test`]),
  },

  // --- 22xxx: a value PostgreSQL could not take -> INVALID_INPUT -------------------------------
  {
    sqlstate: SQLSTATE.invalidTextRepresentation,
    what: 'a uuid column compared with text that is no uuid (tx.kysely)',
    code: 'INVALID_INPUT',
    named: true,
    provoke: (f, p) =>
      inOrg(f, (tx) => tx.kysely.selectFrom('workflow_states').selectAll().where('workflow_exec_id', '=', `probe-${p.tag}`).execute()),
  },
  {
    sqlstate: '22007',
    what: 'a timestamp that does not parse (tx.kysely)',
    code: 'INVALID_INPUT',
    named: true,
    provoke: (f, p) =>
      inOrg(f, (tx) =>
        tx.kysely
          .selectFrom('users')
          .select('id')
          .where('created_at', '>', `probe-${p.tag}` as unknown as Date)
          .execute(),
      ),
  },
  {
    sqlstate: '22008',
    what: 'a date that does not exist (tx.kysely)',
    code: 'INVALID_INPUT',
    named: true,
    provoke: (f, p) => {
      const seconds = String(Number.parseInt(p.tag, 16) % 60).padStart(2, '0');
      const date = p.mark(`2024-02-30 13:57:${seconds}`);
      return inOrg(f, (tx) =>
        tx.kysely
          .selectFrom('users')
          .select('id')
          .where('created_at', '>', date as unknown as Date)
          .execute(),
      );
    },
  },
  {
    sqlstate: '22003',
    what: 'a number beyond an integer column (tx.kysely)',
    code: 'INVALID_INPUT',
    named: true,
    provoke: (f, p) => {
      const number = p.mark(`9${String(Number.parseInt(p.tag, 16)).padStart(10, '0')}`);
      return inOrg(f, (tx) => tx.kysely.selectFrom('api_keys').select('id').where('rate_limit_per_hour', '=', Number(number)).execute());
    },
  },
  {
    sqlstate: '22023',
    what: 'a date_trunc unit that does not exist (tx.kysely)',
    code: 'INVALID_INPUT',
    named: true,
    provoke: (f, p) =>
      inOrg(f, (tx) =>
        tx.kysely
          .selectFrom('users')
          .select((eb) => eb.fn('date_trunc', [eb.val(`probe${p.tag}`), eb.ref('created_at')]).as('truncated'))
          .execute(),
      ),
  },
  {
    sqlstate: '22021',
    what: 'a NUL byte in text (tx.kysely)',
    code: 'INVALID_INPUT',
    named: false, // PostgreSQL names the byte (0x00), not the text
    provoke: (f, p) =>
      inOrg(f, (tx) => tx.kysely.selectFrom('users').select('id').where('email', '=', `probe-${p.tag}\u0000@x.test`).execute()),
  },
  {
    sqlstate: '22P05',
    what: 'a character LATIN1 has no equivalent for (run)',
    code: 'INVALID_INPUT',
    named: false, // PostgreSQL names the bytes, not the text
    // PostgreSQL only: PGlite 0.5 hangs on the next statement after an encoding conversion.
    server: true,
    provoke: (f, p) => run(f.store.db, "select convert_to($1, 'LATIN1')", [`€probe-${p.tag}`]),
  },
  {
    sqlstate: '22001',
    what: 'a value longer than its varchar (run)',
    code: 'INVALID_INPUT',
    named: false, // PostgreSQL names the type, not the value
    provoke: (f, p) => run(f.store.db, `do $$ declare short varchar(3); begin short := 'probe-${p.tag}'; end $$`, [], { prepare: false }),
  },

  // --- 42501 insufficient_privilege -> FORBIDDEN -----------------------------------------------
  {
    sqlstate: SQLSTATE.insufficientPrivilege,
    what: 'a row written into another organization (trusted SQL in a scope): row-level security',
    code: 'FORBIDDEN',
    named: false, // PostgreSQL names the table
    async provoke(f, p) {
      const other = await newOrg(f, p);
      return withOrgSql(f.store, f.orgId, (tx) =>
        tx.query("insert into users (org_id, email, role) values ($1, $2, 'admin')", [other.id, `probe-${p.tag}@x.test`]),
      );
    },
  },
  {
    sqlstate: SQLSTATE.insufficientPrivilege,
    what: 'a write to a table the tenant role may only read (tx.kysely)',
    code: 'FORBIDDEN',
    named: false,
    provoke: (f, p) =>
      inOrg(f, (tx) =>
        tx.kysely
          .insertInto('permissions')
          .values({ key: `probe${p.letters}:read`, description: `probe ${p.tag}` } as never)
          .execute(),
      ),
  },

  // --- 25006 read_only_sql_transaction -> FORBIDDEN --------------------------------------------
  {
    sqlstate: SQLSTATE.readOnlyTransaction,
    what: 'a write through readOrg',
    code: 'FORBIDDEN',
    named: false,
    provoke: (f, p) => (f.store.readOrg(f.orgId) as unknown as TenantScope).users.create(probeUser(p)),
  },

  // --- ES001 / ES002: the store's own SQLSTATEs ------------------------------------------------
  {
    sqlstate: SQLSTATE.orgSuspended,
    what: 'a write in a suspended organization',
    code: 'ORG_SUSPENDED',
    named: false,
    provoke: (f, p) => writeAfter(f, p, (id) => f.store.organizations.suspend(id)),
  },
  {
    sqlstate: SQLSTATE.orgInactive,
    what: 'a write in a soft-deleted organization',
    code: 'ORG_INACTIVE',
    named: false,
    provoke: (f, p) => writeAfter(f, p, (id) => f.store.organizations.softDelete(id)),
  },

  // --- ES003 / ES004: a tenant scope the store did not sign, or whose signature expired ------------
  {
    sqlstate: SQLSTATE.scopeNotSigned,
    what: 'enter_org_scope with a proof the store did not make (trusted SQL in a scope)',
    code: 'FORBIDDEN',
    named: false,
    provoke: (f, p) =>
      withOrgSql(f.store, f.orgId, (tx) =>
        tx.query('select public.enter_org_scope($1::uuid, 4000000000, $2::bytea)', [f.orgId, Buffer.from(`probe-${p.tag}`)]),
      ),
  },
  {
    sqlstate: SQLSTATE.scopeSignatureExpired,
    what: "enter_org_scope with the store's own signature, expired (trusted SQL in a scope)",
    code: 'FORBIDDEN',
    named: false,
    async provoke(f) {
      const stale = (await loadScopeSigner(f.store.db)).sign(f.orgId, Date.now() - 3_600_000);
      return withOrgSql(f.store, f.orgId, (tx) =>
        tx.query('select public.enter_org_scope($1::uuid, $2::bigint, $3::bytea)', [f.orgId, stale.expiresAt, stale.proof]),
      );
    },
  },

  // --- ES005 / ES006: an audit event changed, an actor the store did not sign ---------------------
  {
    sqlstate: SQLSTATE.auditAppendOnly,
    what: "the owner's UPDATE of an audit event",
    code: 'FORBIDDEN',
    named: false,
    provoke: (f, p) => run(f.store.db, `update audit_events set actor_id = $1`, [`probe-${p.tag}`], { prepare: false }),
  },
  {
    sqlstate: SQLSTATE.actorNotSigned,
    what: 'an actor named by SQL in a scope, without the store signature (trusted SQL in a scope)',
    code: 'FORBIDDEN',
    named: false,
    provoke: (f, p) =>
      withOrgSql(f.store, f.orgId, async (tx) => {
        await tx.query(`select set_config('app.actor', $1, true)`, [`operator:probe-${p.tag}`]);
        return tx.users.create(probeUser(p));
      }),
  },

  // --- 25P02 in_failed_sql_transaction -> TRANSACTION_ABORTED ----------------------------------
  {
    sqlstate: SQLSTATE.inFailedTransaction,
    what: 'a statement after a failed one in the same withOrg',
    code: 'TRANSACTION_ABORTED',
    named: false,
    provoke: (f, p) =>
      inOrg(f, async (tx) => {
        await tx.users.create({ email: f.email, role: 'admin' }).catch(() => undefined);
        return tx.users.create(probeUser(p));
      }),
  },

  // --- 55P03 lock_not_available -> LOCK_TIMEOUT; 57014 query_canceled -> TIMEOUT ---------------
  {
    sqlstate: SQLSTATE.lockNotAvailable,
    what: 'a row another scope holds, locked NOWAIT (tx.kysely)',
    code: 'LOCK_TIMEOUT',
    named: false,
    server: true,
    provoke: (f) => whileLocked(f, () => inOrg(f, (tx) => lockUser(tx, f.userId).noWait().execute())),
  },
  {
    sqlstate: SQLSTATE.lockNotAvailable,
    what: 'purging an organization whose row another transaction holds, with a lock timeout on the owner connection (operator call)',
    code: 'LOCK_TIMEOUT',
    named: false,
    server: true,
    async provoke(f, p) {
      const org = await newOrg(f, p);
      await f.store.organizations.softDelete(org.id);
      return withImpatientStore(f, { lockTimeout: true }, (impatient) =>
        rolledBack(f, async (holder) => {
          await holder.query('select from organizations where id = $1 for update', [org.id]);
          return impatient.organizations.purge(org.id);
        }),
      );
    },
  },
  {
    sqlstate: SQLSTATE.queryCanceled,
    what: "a row another scope holds, waited for past the scope's statement timeout",
    code: 'TIMEOUT',
    named: false,
    server: true,
    async provoke(f) {
      return withImpatientStore(f, { scopeTimeouts: { statementMs: 100 } }, (impatient) =>
        whileLocked(f, () => impatient.withOrg(f.orgId, (tx) => lockUser(tx, f.userId).execute())),
      );
    },
  },

  // --- 40001 serialization_failure, 40P01 deadlock_detected -> SERIALIZATION_FAILURE -----------
  {
    sqlstate: SQLSTATE.serializationFailure,
    what: 'a repeatable-read transaction updating a row changed since its snapshot (run)',
    code: 'SERIALIZATION_FAILURE',
    named: false,
    server: true,
    async provoke(f, p) {
      const user = await newUser(f, p);
      const where = 'where org_id = $1 and id = $2';
      return f.store.db.withSession(async (session) => {
        await session.query('begin isolation level repeatable read');
        await session.query(`select role from users ${where}`, [f.orgId, user.id]);
        await f.store.db.query(`update users set role = 'manager' ${where}`, [f.orgId, user.id]);
        return run(session, `update users set role = 'admin' ${where}`, [f.orgId, user.id]);
      });
    },
  },
  {
    sqlstate: SQLSTATE.deadlockDetected,
    what: 'two transactions each waiting for the row the other updated (run)',
    code: 'SERIALIZATION_FAILURE',
    named: false, // the detail names processes; the queries go to the server log only
    server: true,
    async provoke(f, p) {
      const [first, second] = [await newOrg(f, p), await newOrg(f, p, '-2')];
      const rename = 'update organizations set name = $2 where id = $1';
      let holdsFirst!: (pid: number) => void;
      const patientPid = new Promise<number>((resolve) => (holdsFirst = resolve));
      // The victim holds the second row; the patient the first, and then waits for the second.
      return f.store.db.withSession(async (victim) => {
        await victim.query('begin');
        await victim.query("set local deadlock_timeout = '20ms'");
        await victim.query(rename, [second.id, `Probe ${p.tag} b`]);
        const patient = f.store.db.withSession(async (session) => {
          await session.query('begin');
          await session.query("set local deadlock_timeout = '10s'");
          const { rows } = await session.query<{ pid: number }>('select pg_backend_pid() as pid');
          await session.query(rename, [first.id, `Probe ${p.tag} a`]);
          holdsFirst(rows[0]!.pid);
          await session.query(rename, [second.id, `Probe ${p.tag} a2`]);
          await session.query('rollback');
        });
        try {
          await waitingForLock(f, await patientPid);
          // The victim closes the cycle while the patient waits: its own check, 20 ms on, finds it.
          return await run(victim, rename, [first.id, `Probe ${p.tag} b2`]);
        } finally {
          await victim.query('rollback').catch(() => undefined);
          await patient;
        }
      });
    },
  },

  // --- 0A000 feature_not_supported (not Citus's partition value) -> DATABASE_ERROR -------------
  {
    sqlstate: '0A000',
    what: 'FOR UPDATE over an aggregate (tx.kysely): unmapped',
    code: 'DATABASE_ERROR',
    named: false,
    provoke: (f, p) =>
      inOrg(f, (tx) =>
        tx.kysely
          .selectFrom('users')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('email', '=', `probe-${p.tag}@x.test`)
          .forUpdate()
          .execute(),
      ),
  },

  // --- anything else -> DATABASE_ERROR ---------------------------------------------------------
  {
    sqlstate: '42P01',
    what: 'a relation that does not exist, named by a value (run): unmapped',
    code: 'DATABASE_ERROR',
    named: true,
    provoke: (f, p) => run(f.store.db, 'select $1::regclass', [`probe_${p.tag}`]),
  },
  {
    sqlstate: 'none',
    what: 'a statement on a closed database (run): STORE_CLOSED, with no value of the statement',
    code: 'STORE_CLOSED',
    named: false,
    async provoke(f, p) {
      const closed = f.backend.url ? await openDatabase({ url: f.backend.url, poolSize: 1 }) : await openDatabase({ dataDir: 'memory://' });
      await closed.close();
      return run(closed, 'select $1::text', [`probe-${p.tag}`]);
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Every SQLSTATE toStoreError maps, raised by the database with PostgreSQL's wording and probe
// values in its message and detail: the branches that only Citus reaches (22004, 0A000's
// partition value), and Citus's relayed violations (no constraint field: the name is read from
// the message), as well as those the cases above reach for real.

interface Raised {
  sqlstate: string;
  code: ErrorCode;
  message: string;
  constraint?: string;
  column?: string;
}

/** Messages in PostgreSQL's words, with `value` added to those that quote none (the detail quotes it too). */
const RAISED = (value: string): Raised[] => [
  {
    sqlstate: '23505',
    code: 'CONFLICT',
    message: 'duplicate key value violates unique constraint "organizations_temporal_namespace_key"',
    constraint: 'organizations_temporal_namespace_key',
  },
  // As Citus relays a worker's violation: the shard's constraint, named in the message only.
  {
    sqlstate: '23505',
    code: 'CONFLICT',
    message: 'duplicate key value violates unique constraint "organizations_temporal_namespace_key_102008"',
  },
  { sqlstate: '23505', code: 'CONFLICT', message: 'duplicate key value violates unique constraint "permissions_pkey"' },
  {
    sqlstate: '23503',
    code: 'NOT_FOUND',
    message: 'insert or update on table "task_states" violates foreign key constraint "task_states_workflow_fkey"',
    constraint: 'task_states_workflow_fkey',
  },
  {
    sqlstate: '23503',
    code: 'NOT_FOUND',
    message: 'insert or update on table "api_keys_102040" violates foreign key constraint "api_keys_user_fkey_102040"',
  },
  {
    sqlstate: '23001',
    code: 'CONFLICT',
    message:
      'update or delete on table "permissions" violates RESTRICT setting of foreign key constraint "role_permissions_permission_fkey"',
    constraint: 'role_permissions_permission_fkey',
  },
  {
    sqlstate: '23514',
    code: 'INVALID_INPUT',
    message: 'new row for relation "users" violates check constraint "users_role_check"',
    constraint: 'users_role_check',
  },
  {
    sqlstate: '23502',
    code: 'INVALID_INPUT',
    message: 'null value in column "role" of relation "users" violates not-null constraint',
    column: 'role',
  },
  {
    sqlstate: '23502',
    code: 'TENANT_SCOPE_REQUIRED',
    message: 'null value in column "org_id" of relation "users" violates not-null constraint',
    column: 'org_id',
  },
  ...['22P02', '22007', '22008', '22003', '22001', '22023', '22P05', '22021'].map((sqlstate): Raised => ({
    sqlstate,
    code: 'INVALID_INPUT',
    message: `invalid input syntax for type uuid: "probe-${value}"`,
  })),
  { sqlstate: '22004', code: 'FORBIDDEN', message: `cannot perform an INSERT with NULL in the partition column (probe-${value})` },
  { sqlstate: '0A000', code: 'FORBIDDEN', message: `modifying the partition value of rows is not allowed (probe-${value})` },
  { sqlstate: '0A000', code: 'DATABASE_ERROR', message: `FOR UPDATE is not allowed with aggregate functions (probe-${value})` },
  { sqlstate: '42501', code: 'FORBIDDEN', message: `new row violates row-level security policy for table "users" (probe-${value})` },
  { sqlstate: '25006', code: 'FORBIDDEN', message: `cannot execute INSERT in a read-only transaction (probe-${value})` },
  { sqlstate: 'ES001', code: 'ORG_SUSPENDED', message: `the organization is suspended (probe-${value})` },
  { sqlstate: 'ES002', code: 'ORG_INACTIVE', message: `the organization does not exist (probe-${value})` },
  { sqlstate: 'ES003', code: 'FORBIDDEN', message: `the tenant scope was not signed by this store (probe-${value})` },
  { sqlstate: 'ES004', code: 'FORBIDDEN', message: `the tenant scope's signature has expired (probe-${value})` },
  { sqlstate: 'ES005', code: 'FORBIDDEN', message: `audit events are append-only: UPDATE refused (probe-${value})` },
  { sqlstate: 'ES006', code: 'FORBIDDEN', message: `the actor of this tenant scope was not signed by this store (probe-${value})` },
  { sqlstate: '55P03', code: 'LOCK_TIMEOUT', message: `could not obtain lock on row in relation "users" (probe-${value})` },
  { sqlstate: '57014', code: 'TIMEOUT', message: `canceling statement due to statement timeout (probe-${value})` },
  { sqlstate: '25P02', code: 'TRANSACTION_ABORTED', message: `current transaction is aborted (probe-${value})` },
  { sqlstate: '40001', code: 'SERIALIZATION_FAILURE', message: `could not serialize access due to concurrent update (probe-${value})` },
  { sqlstate: '40P01', code: 'SERIALIZATION_FAILURE', message: `deadlock detected (probe-${value})` },
  { sqlstate: '22012', code: 'DATABASE_ERROR', message: `division by zero (probe-${value})` },
];

/** A DO block that raises `raised` with a detail in PostgreSQL's words, naming `value`. */
function raising(raised: Raised, value: string): string {
  const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;
  const options = [
    `errcode = ${literal(raised.sqlstate)}`,
    `message = ${literal(raised.message)}`,
    `detail = ${literal(`Key (temporal_namespace)=(probe-${value}) already exists. Failing row contains (probe-${value}@x.test).`)}`,
    `hint = ${literal(`probe-${value}`)}`,
    ...(raised.constraint ? [`constraint = ${literal(raised.constraint)}`] : []),
    ...(raised.column ? [`column = ${literal(raised.column)}`] : []),
  ];
  return `do $$ begin raise exception using ${options.join(', ')}; end $$`;
}

/** The SQLSTATEs database-errors.ts has a case for, read from its source. */
function mappedSqlstates(): Set<string> {
  const source = readFileSync(new URL('../../engine/infra/store/connection/database-errors.ts', import.meta.url), 'utf8');
  const named = [...source.matchAll(/case SQLSTATE\.(\w+):/g)].map(([, name]) => SQLSTATE[name as keyof typeof SQLSTATE]);
  const literal = [...source.matchAll(/case '([0-9A-Z]{5})':/g)].map(([, code]) => code!);
  return new Set([...named, ...literal]);
}

// ---------------------------------------------------------------------------------------------
// Tests

for (const backend of backends)
  describe(`no driver text in the errors on ${backend.name}`, () => {
    let f: Fixture;
    const seen: unknown[] = [];

    beforeAll(async () => {
      const database = await backend.createMigrated();
      const store = await storeOver(witnessing(database.db, seen));
      const fixtureTag = tag();
      const org = await store.organizations.create({ name: `Fixture ${fixtureTag}`, temporalNamespace: `fixture-${fixtureTag}` });
      const email = `fixture-${fixtureTag}@x.test`;
      const user = await store.withOrg(org.id, (tx) => tx.users.create({ email, role: 'admin' }));
      const { rows } = await store.db.query<{ version: number }>("select current_setting('server_version_num')::int as version");
      const watch = (db: Database) => witnessing(db, seen);
      f = { backend: database, store, serverVersion: rows[0]!.version, orgId: org.id, userId: user.id, email, tag: fixtureTag, watch };
    });

    afterAll(async () => {
      await f?.store.close();
      await f?.backend.dispose();
    });

    for (const c of cases) {
      it.skipIf(c.server && backend.name === 'pglite')(`${c.sqlstate} ${c.what}`, async () => {
        const p = new Probe();
        seen.length = 0;
        const code = typeof c.code === 'function' ? c.code(f) : c.code;
        const error = await expectStoreError(c.provoke(f, p), code);
        const forbidden = [p.tag, ...p.marked, f.tag, f.orgId, f.userId];
        if (c.named) {
          const driver = seen.map(driverText).join('\n');
          expect(
            forbidden.some((value) => driver.includes(value)),
            `PostgreSQL's text names no probe value, so the case proves nothing:\n${driver}`,
          ).toBe(true);
        }
        if (c.sqlstate !== 'none') {
          const reported = seen.map((raw) => databaseErrorFields(raw)?.code);
          expect(reported, 'the SQLSTATEs the database reported').toContain(c.reports?.(f) ?? c.sqlstate);
        }
        expectNoDriverText(error, forbidden);
      });
    }

    it('every SQLSTATE toStoreError maps, raised with values in its message, detail and hint, comes out without them', async () => {
      const p = new Probe();
      const raised = RAISED(p.tag);
      const codes = new Set(raised.map((entry) => entry.sqlstate));
      for (const sqlstate of mappedSqlstates()) expect(codes, `no raised case for ${sqlstate}`).toContain(sqlstate);
      for (const entry of raised) {
        const error = await run(f.store.db, raising(entry, p.tag), [], { prepare: false }).then(
          () => undefined,
          (caught: unknown) => caught,
        );
        expect(error, `${entry.sqlstate} ${entry.message}`).toBeInstanceOf(Error);
        const storeError = error as StoreError;
        expect({ sqlstate: entry.sqlstate, code: storeError.code }).toEqual({ sqlstate: entry.sqlstate, code: entry.code });
        expectNoDriverText(storeError, [p.tag]);
      }
    });

    it('the cases cover every SQLSTATE toStoreError maps that PostgreSQL itself raises here', () => {
      const provoked = new Set(cases.map((c) => c.sqlstate));
      // Only Citus raises these (see the raised cases above).
      const citusOnly = new Set(['22004']);
      for (const sqlstate of mappedSqlstates())
        if (!citusOnly.has(sqlstate)) expect(provoked, `no case provokes ${sqlstate}`).toContain(sqlstate);
    });
  });
