/**
 * Bad input, case by case, on every backend: each case is one call of the public API with one
 * unacceptable value, the StoreError code it must fail with and the field that error must name.
 * Bad input must be refused before SQL: every case records the statements the store sends and
 * expects none (inside withOrg, nothing but the transaction's own begin and rollback), and the
 * database (row counts and a digest of every row of every table) must be the same before and
 * after each case and after all of them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database, Queryable, Session } from '../../engine/infra/store/connection/database.ts';
import { StoreError, storeOver, type ErrorCode, type Store, type TenantScope } from 'engine-store';
import { MAX_PAYLOAD_BYTES } from '../../engine/infra/store/repositories/validation.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

// ---------------------------------------------------------------------------------------------
// Fixtures: one organization with one row of every kind, so that calls naming an id would
// change a real row if their bad input got through.

interface Fixtures {
  store: Store;
  orgId: string;
  userId: string;
  workflowExecId: string;
  taskExecId: string;
  scheduleId: string;
}

const WORKFLOW_EXEC_ID = '018f0000-0000-7000-8000-00000000a001';
const TASK_EXEC_ID = '018f0000-0000-7000-8000-00000000b001';
/** A well-formed UUID that names no row. */
const OTHER_UUID = '018f0000-0000-7000-8000-00000000ffff';

// ---------------------------------------------------------------------------------------------
// Recording what the store sends to the database

/** Statements a withOrg transaction sends by itself, whatever the callback does. */
const TRANSACTION_CONTROL = /^\s*(begin\b|select set_config\('role', 'app_tenant', true\)|commit\b|rollback\b)/i;

/** Wraps a database so that every statement sent through it, sessions included, is recorded. */
function recording(db: Database, statements: string[] = []): { db: Database; statements: string[] } {
  const wrap = (session: Queryable): Queryable => ({
    query: (sql, params, options) => {
      statements.push(sql);
      return session.query(sql, params, options);
    },
    exec: (sql) => {
      statements.push(sql);
      return session.exec(sql);
    },
  });
  const wrapSession = (session: Session): Session => ({
    ...wrap(session),
    pipeline: (pipelined) => {
      statements.push(...pipelined.map((statement) => statement.sql));
      return session.pipeline(pipelined);
    },
  });
  const recorded: Database = {
    kind: db.kind,
    location: db.location,
    // The tenant login's pool (on a server) records into the same list.
    loginAs: (user, password, pool) => db.loginAs(user, password, pool)?.then((tenant) => recording(tenant, statements).db),
    snapshot: () => db.snapshot(),
    listen: (channel, handlers) => db.listen(channel, handlers),
    ...wrap(db),
    withSession: (work) => db.withSession((session) => work(wrapSession(session))),
    close: () => db.close(),
  };
  return { db: recorded, statements };
}

// ---------------------------------------------------------------------------------------------
// The database's state, as the owner (who is not subject to row-level security)

type Snapshot = Record<string, { rows: number; md5: string }>;

async function snapshot(db: Database): Promise<Snapshot> {
  const { rows: tables } = await db.query<{ name: string }>(
    `select tablename as name from pg_tables where schemaname = current_schema() order by tablename`,
  );
  const result: Snapshot = {};
  for (const { name } of tables) {
    const { rows } = await db.query<{ rows: number; md5: string }>(
      `select count(*)::int as rows, md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) as md5 from "${name}" t`,
    );
    result[name] = rows[0]!;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// The cases

interface BadInput {
  name: string;
  call: (f: Fixtures) => Promise<unknown>;
  code: ErrorCode;
  field: string;
  /** Runs inside withOrg: the transaction's own begin and rollback are expected. */
  inScope: boolean;
}

/** An operator call (no tenant scope): it must send no statement at all. */
const operator = (name: string, call: (f: Fixtures) => Promise<unknown>, field: string, code: ErrorCode = 'INVALID_INPUT'): BadInput => ({
  name,
  call,
  field,
  code,
  inScope: false,
});

/** A call inside the fixture organization's scope. */
const tenant = (
  name: string,
  work: (tx: TenantScope, f: Fixtures) => Promise<unknown>,
  field: string,
  code: ErrorCode = 'INVALID_INPUT',
): BadInput => ({
  name,
  call: (f) => f.store.withOrg(f.orgId, (tx) => work(tx, f)),
  field,
  code,
  inScope: true,
});

/** A value of the wrong type, passed where the API's types would not allow it. */
const bad = <T>(value: unknown): T => value as T;

const cyclic = (): unknown => {
  const node: Record<string, unknown> = { name: 'loop' };
  node.self = node;
  return node;
};

const overLimitAscii = () => ({ blob: 'x'.repeat(MAX_PAYLOAD_BYTES) });
/** Under the limit in characters, over it in UTF-8 bytes (two bytes per 'é'). */
const overLimitUtf8 = () => 'é'.repeat(MAX_PAYLOAD_BYTES / 2 + 1);
const cursorOf = (text: string) => Buffer.from(text).toString('base64url');

const name101 = 'n'.repeat(101);
const email255 = `${'a'.repeat(64)}@${'b'.repeat(186)}.com`; // 255 characters
const id201 = 'w'.repeat(201);
const DROP_USERS = "'; drop table users; --";
const OR_TRUE = "' or 1=1 --";

const workflowInput = (f: Fixtures, overrides: Record<string, unknown>) =>
  bad<Parameters<TenantScope['workflows']['upsert']>[0]>({
    workflowExecId: f.workflowExecId,
    workflowId: 'onboarding',
    status: 'running',
    ...overrides,
  });

const taskInput = (f: Fixtures, overrides: Record<string, unknown>) =>
  bad<Parameters<TenantScope['tasks']['upsert']>[0]>({
    taskExecId: f.taskExecId,
    taskId: 'send-email',
    workflowExecId: f.workflowExecId,
    workflowId: 'onboarding',
    component: 'tool',
    status: 'running',
    ...overrides,
  });

const scheduleInput = (overrides: Record<string, unknown>) =>
  bad<Parameters<TenantScope['schedules']['create']>[0]>({ workflowId: 'nightly-report', cronExpression: '0 2 * * *', ...overrides });

const CASES: BadInput[] = [
  // organizations.create
  operator('organizations.create: empty name', (f) => f.store.organizations.create({ name: '' }), 'name'),
  operator('organizations.create: name of only spaces', (f) => f.store.organizations.create({ name: '   ' }), 'name'),
  operator(
    'organizations.create: 101-character name',
    (f) => f.store.organizations.create({ name: name101, temporalNamespace: 'long-name' }),
    'name',
  ),
  operator('organizations.create: number as name', (f) => f.store.organizations.create({ name: bad(42) }), 'name'),
  operator('organizations.create: null as name', (f) => f.store.organizations.create({ name: bad(null) }), 'name'),
  operator('organizations.create: array as name', (f) => f.store.organizations.create({ name: bad(['Acme']) }), 'name'),
  operator('organizations.create: object as name', (f) => f.store.organizations.create({ name: bad({ toString: () => 'Acme' }) }), 'name'),
  operator('organizations.create: missing name', (f) => f.store.organizations.create(bad({ temporalNamespace: 'nameless' })), 'name'),
  operator('organizations.create: zero-width space in name', (f) => f.store.organizations.create({ name: 'Ac\u200bme' }), 'name'),
  operator(
    'organizations.create: right-to-left override in name',
    (f) => f.store.organizations.create({ name: 'invoice\u202Efdp.exe' }),
    'name',
  ),
  operator('organizations.create: NUL character in name', (f) => f.store.organizations.create({ name: 'Ac\u0000me' }), 'name'),
  operator('organizations.create: newline in name', (f) => f.store.organizations.create({ name: 'Acme\nCorp' }), 'name'),
  operator('organizations.create: line separator in name', (f) => f.store.organizations.create({ name: 'Acme\u2028Corp' }), 'name'),
  operator(
    'organizations.create: name of SQL punctuation only (no namespace derivable)',
    (f) => f.store.organizations.create({ name: "';--" }),
    'temporalNamespace',
  ),
  operator(
    'organizations.create: non-Latin name without namespace',
    (f) => f.store.organizations.create({ name: '東京' }),
    'temporalNamespace',
  ),
  operator(
    'organizations.create: SQL fragment as namespace',
    (f) => f.store.organizations.create({ name: 'Injected', temporalNamespace: DROP_USERS }),
    'temporalNamespace',
  ),
  operator(
    'organizations.create: namespace with capitals and spaces',
    (f) => f.store.organizations.create({ name: 'Capitals', temporalNamespace: 'Acme Corp' }),
    'temporalNamespace',
  ),
  operator(
    'organizations.create: 64-character namespace',
    (f) => f.store.organizations.create({ name: 'Long Namespace', temporalNamespace: 'a'.repeat(64) }),
    'temporalNamespace',
  ),
  operator(
    'organizations.create: null as namespace',
    (f) => f.store.organizations.create({ name: 'Null Namespace', temporalNamespace: bad(null) }),
    'temporalNamespace',
  ),
  operator(
    'organizations.create: unknown option key',
    (f) => f.store.organizations.create(bad({ name: 'Extra', status: 'active' })),
    'status',
  ),
  operator('organizations.create: null instead of an object', (f) => f.store.organizations.create(bad(null)), 'organization'),
  operator('organizations.create: string instead of an object', (f) => f.store.organizations.create(bad('Acme')), 'organization'),
  operator(
    'organizations.create: array instead of an object',
    (f) => f.store.organizations.create(bad([{ name: 'Acme' }])),
    'organization',
  ),

  // organizations.get
  operator('organizations.get: not-a-uuid', (f) => f.store.organizations.get('not-a-uuid'), 'id'),
  operator('organizations.get: UUID with a g', (f) => f.store.organizations.get('00000000-0000-0000-0000-00000000000g'), 'id'),
  operator('organizations.get: UUID in braces', (f) => f.store.organizations.get(`{${f.orgId}}`), 'id'),
  operator('organizations.get: UUID without dashes', (f) => f.store.organizations.get(f.orgId.replaceAll('-', '')), 'id'),
  operator('organizations.get: UUID with a trailing newline', (f) => f.store.organizations.get(`${f.orgId}\n`), 'id'),
  operator('organizations.get: SQL fragment as id', (f) => f.store.organizations.get(OR_TRUE), 'id'),
  operator('organizations.get: empty id', (f) => f.store.organizations.get(''), 'id'),
  operator('organizations.get: number as id', (f) => f.store.organizations.get(bad(7)), 'id'),
  operator('organizations.get: object as id', (f) => f.store.organizations.get(bad({ id: f.orgId })), 'id'),

  // organizations.list
  operator('organizations.list: page size 0', (f) => f.store.organizations.list({ limit: 0 }), 'limit'),
  operator('organizations.list: page size 501', (f) => f.store.organizations.list({ limit: 501 }), 'limit'),
  operator('organizations.list: page size 1.5', (f) => f.store.organizations.list({ limit: 1.5 }), 'limit'),
  operator("organizations.list: page size '10'", (f) => f.store.organizations.list({ limit: bad('10') }), 'limit'),
  operator('organizations.list: page size NaN', (f) => f.store.organizations.list({ limit: Number.NaN }), 'limit'),
  operator('organizations.list: negative page size', (f) => f.store.organizations.list({ limit: -1 }), 'limit'),
  operator('organizations.list: garbage cursor', (f) => f.store.organizations.list({ after: 'garbage!!' }), 'after'),
  operator(
    'organizations.list: cursor with a bad id',
    (f) => f.store.organizations.list({ after: cursorOf('1700000000000000.not-a-uuid') }),
    'after',
  ),
  operator(
    'organizations.list: cursor with a bad timestamp',
    (f) => f.store.organizations.list({ after: cursorOf(`yesterday.${OTHER_UUID}`) }),
    'after',
  ),
  operator(
    'organizations.list: cursor carrying SQL',
    (f) => f.store.organizations.list({ after: cursorOf(`1${OR_TRUE}.${OTHER_UUID}`) }),
    'after',
  ),
  operator('organizations.list: 201-character cursor', (f) => f.store.organizations.list({ after: 'A'.repeat(201) }), 'after'),
  operator('organizations.list: number as cursor', (f) => f.store.organizations.list({ after: bad(42) }), 'after'),
  operator("organizations.list: status 'deleted'", (f) => f.store.organizations.list({ status: bad('deleted') }), 'status'),
  operator(
    "organizations.list: includeDeleted 'true'",
    (f) => f.store.organizations.list({ includeDeleted: bad('true') }),
    'includeDeleted',
  ),
  operator('organizations.list: unknown option key', (f) => f.store.organizations.list(bad({ orderBy: 'name' })), 'orderBy'),
  operator('organizations.list: null instead of options', (f) => f.store.organizations.list(bad(null)), 'list options'),

  // organizations.rename
  operator('organizations.rename: empty name', (f) => f.store.organizations.rename(f.orgId, ''), 'name'),
  operator('organizations.rename: 101-character name', (f) => f.store.organizations.rename(f.orgId, name101), 'name'),
  operator('organizations.rename: zero-width space only', (f) => f.store.organizations.rename(f.orgId, '\u200b'), 'name'),
  operator('organizations.rename: number as name', (f) => f.store.organizations.rename(f.orgId, bad(123)), 'name'),
  operator('organizations.rename: not-a-uuid', (f) => f.store.organizations.rename('not-a-uuid', 'Renamed'), 'id'),
  operator('organizations.rename: SQL fragment as id', (f) => f.store.organizations.rename(DROP_USERS, 'Renamed'), 'id'),

  // users.create
  tenant('users.create: empty email', (tx) => tx.users.create({ email: '', role: 'admin' }), 'email'),
  tenant('users.create: 255-character email', (tx) => tx.users.create({ email: email255, role: 'admin' }), 'email'),
  tenant('users.create: email without @', (tx) => tx.users.create({ email: 'ada.example.com', role: 'admin' }), 'email'),
  tenant('users.create: email with two @', (tx) => tx.users.create({ email: 'ada@@example.com', role: 'admin' }), 'email'),
  tenant('users.create: email with a space', (tx) => tx.users.create({ email: 'ada lovelace@example.com', role: 'admin' }), 'email'),
  tenant('users.create: email without a domain dot', (tx) => tx.users.create({ email: 'ada@localhost', role: 'admin' }), 'email'),
  tenant('users.create: SQL fragment as email', (tx) => tx.users.create({ email: DROP_USERS, role: 'admin' }), 'email'),
  tenant('users.create: SQL tautology in email', (tx) => tx.users.create({ email: `${OR_TRUE}@example.com`, role: 'admin' }), 'email'),
  tenant('users.create: zero-width space in email', (tx) => tx.users.create({ email: 'ada\u200b@example.com', role: 'admin' }), 'email'),
  tenant(
    'users.create: right-to-left override in email',
    (tx) => tx.users.create({ email: 'ada\u202E@example.com', role: 'admin' }),
    'email',
  ),
  tenant('users.create: NUL character in email', (tx) => tx.users.create({ email: 'ada\u0000@example.com', role: 'admin' }), 'email'),
  tenant('users.create: number as email', (tx) => tx.users.create({ email: bad(42), role: 'admin' }), 'email'),
  tenant('users.create: array as email', (tx) => tx.users.create({ email: bad(['ada@example.com']), role: 'admin' }), 'email'),
  tenant("users.create: role 'owner'", (tx) => tx.users.create({ email: 'ada@example.com', role: bad('owner') }), 'role'),
  tenant("users.create: role 'ADMIN' (case matters)", (tx) => tx.users.create({ email: 'ada@example.com', role: bad('ADMIN') }), 'role'),
  tenant('users.create: null role', (tx) => tx.users.create({ email: 'ada@example.com', role: bad(null) }), 'role'),
  tenant('users.create: missing role', (tx) => tx.users.create(bad({ email: 'ada@example.com' })), 'role'),
  tenant(
    'users.create: orgId given by the caller',
    (tx, f) => tx.users.create(bad({ email: 'ada@example.com', role: 'admin', orgId: f.orgId })),
    'orgId',
  ),
  tenant(
    'users.create: status given by the caller',
    (tx) => tx.users.create(bad({ email: 'ada@example.com', role: 'admin', status: 'active' })),
    'status',
  ),

  // users.get / getByEmail / list / changeRole
  tenant('users.get: not-a-uuid', (tx) => tx.users.get('not-a-uuid'), 'id'),
  tenant('users.get: SQL tautology as id', (tx) => tx.users.get(OR_TRUE), 'id'),
  tenant('users.getByEmail: empty email', (tx) => tx.users.getByEmail(''), 'email'),
  tenant('users.getByEmail: SQL tautology', (tx) => tx.users.getByEmail(OR_TRUE), 'email'),
  tenant('users.getByEmail: LIKE wildcard', (tx) => tx.users.getByEmail('%'), 'email'),
  tenant('users.getByEmail: null', (tx) => tx.users.getByEmail(bad(null)), 'email'),
  tenant("users.list: role 'owner'", (tx) => tx.users.list({ role: bad('owner') }), 'role'),
  tenant('users.list: role carrying SQL', (tx) => tx.users.list({ role: bad(`admin${OR_TRUE}`) }), 'role'),
  tenant("users.list: status 'deleted'", (tx) => tx.users.list({ status: bad('deleted') }), 'status'),
  tenant('users.list: page size 0', (tx) => tx.users.list({ limit: 0 }), 'limit'),
  tenant('users.list: page size 501', (tx) => tx.users.list({ limit: 501 }), 'limit'),
  tenant('users.list: includeDeleted 1', (tx) => tx.users.list({ includeDeleted: bad(1) }), 'includeDeleted'),
  tenant('users.list: unknown option key', (tx) => tx.users.list(bad({ email: 'ada@example.com' })), 'email'),
  tenant("users.changeRole: role 'owner'", (tx, f) => tx.users.changeRole(f.userId, bad('owner')), 'role'),
  tenant('users.changeRole: undefined role', (tx, f) => tx.users.changeRole(f.userId, bad(undefined)), 'role'),
  tenant('users.changeRole: not-a-uuid', (tx) => tx.users.changeRole('not-a-uuid', 'manager'), 'id'),
  tenant('users.changeRole: UUID in braces', (tx, f) => tx.users.changeRole(`{${f.userId}}`, 'manager'), 'id'),

  // workflows.upsert
  tenant(
    'workflows.upsert: not-a-uuid execution id',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowExecId: 'not-a-uuid' })),
    'workflowExecId',
  ),
  tenant(
    'workflows.upsert: execution id with a g',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowExecId: '00000000-0000-0000-0000-00000000000g' })),
    'workflowExecId',
  ),
  tenant(
    'workflows.upsert: SQL fragment as execution id',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowExecId: DROP_USERS })),
    'workflowExecId',
  ),
  tenant('workflows.upsert: empty workflow id', (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowId: '' })), 'workflowId'),
  tenant(
    'workflows.upsert: 201-character workflow id',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowId: id201 })),
    'workflowId',
  ),
  tenant(
    'workflows.upsert: NUL character in workflow id',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowId: 'on\u0000boarding' })),
    'workflowId',
  ),
  tenant(
    'workflows.upsert: zero-width space in workflow id',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowId: 'onboarding\u200b' })),
    'workflowId',
  ),
  tenant('workflows.upsert: number as workflow id', (tx, f) => tx.workflows.upsert(workflowInput(f, { workflowId: 12 })), 'workflowId'),
  tenant("workflows.upsert: status 'deleted'", (tx, f) => tx.workflows.upsert(workflowInput(f, { status: 'deleted' })), 'status'),
  tenant("workflows.upsert: status 'RUNNING'", (tx, f) => tx.workflows.upsert(workflowInput(f, { status: 'RUNNING' })), 'status'),
  tenant(
    'workflows.upsert: NUL character in a JSON payload',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { input: { note: 'a\u0000b' } })),
    'input',
  ),
  tenant(
    'workflows.upsert: NUL character in a JSON key',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { output: { ['k\u0000']: 1 } })),
    'output',
  ),
  tenant(
    'workflows.upsert: lone surrogate in a JSON payload',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { input: { note: 'a\ud800b' } })),
    'input',
  ),
  tenant(
    'workflows.upsert: lone surrogate in a JSON key',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { usage: { ['k\udfff']: 1 } })),
    'usage',
  ),
  tenant('workflows.upsert: payload over 256 KiB', (tx, f) => tx.workflows.upsert(workflowInput(f, { input: overLimitAscii() })), 'input'),
  tenant(
    'workflows.upsert: payload over 256 KiB in UTF-8 bytes',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { usage: overLimitUtf8() })),
    'usage',
  ),
  tenant('workflows.upsert: cyclic payload', (tx, f) => tx.workflows.upsert(workflowInput(f, { input: cyclic() })), 'input'),
  tenant('workflows.upsert: BigInt in a payload', (tx, f) => tx.workflows.upsert(workflowInput(f, { error: { code: 10n } })), 'error'),
  tenant('workflows.upsert: function as a payload', (tx, f) => tx.workflows.upsert(workflowInput(f, { input: () => 1 })), 'input'),
  // JSON.stringify would have written each of these as null, without a word.
  tenant('workflows.upsert: NaN in a payload', (tx, f) => tx.workflows.upsert(workflowInput(f, { input: { n: Number.NaN } })), 'input'),
  tenant('workflows.upsert: Infinity in a payload', (tx, f) => tx.workflows.upsert(workflowInput(f, { output: [1, Infinity] })), 'output'),
  tenant('workflows.upsert: -Infinity as a payload', (tx, f) => tx.workflows.upsert(workflowInput(f, { usage: -Infinity })), 'usage'),
  tenant(
    'workflows.upsert: invalid Date in a payload',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { error: { at: new Date('not a date') } })),
    'error',
  ),
  tenant('tasks.upsert: NaN in a payload', (tx, f) => tx.tasks.upsert(taskInput(f, { input: { deep: [{ n: Number.NaN }] } })), 'input'),
  tenant(
    'tasks.upsertMany: Infinity in a payload',
    (tx, f) => tx.tasks.upsertMany([taskInput(f, { usage: { tokens: Infinity } })]),
    '0.usage',
  ),
  tenant(
    'schedules.create: invalid Date as a payload',
    (tx) => tx.schedules.create(scheduleInput({ input: new Date(Number.NaN) })),
    'input',
  ),
  tenant('workflows.upsert: orgId given by the caller', (tx, f) => tx.workflows.upsert(workflowInput(f, { orgId: f.orgId })), 'orgId'),
  tenant(
    'workflows.upsert: updatedAt given by the caller',
    (tx, f) => tx.workflows.upsert(workflowInput(f, { updatedAt: new Date(0) })),
    'updatedAt',
  ),
  tenant('workflows.upsert: null instead of an object', (tx) => tx.workflows.upsert(bad(null)), 'workflow state'),

  // workflows.get / list / updateStatus
  tenant('workflows.get: not-a-uuid', (tx) => tx.workflows.get('not-a-uuid'), 'workflowExecId'),
  tenant('workflows.get: UUID in braces', (tx, f) => tx.workflows.get(`{${f.workflowExecId}}`), 'workflowExecId'),
  tenant("workflows.list: status 'deleted'", (tx) => tx.workflows.list({ status: bad('deleted') }), 'status'),
  tenant('workflows.list: status carrying SQL', (tx) => tx.workflows.list({ status: bad(`running${OR_TRUE}`) }), 'status'),
  tenant('workflows.list: empty workflow id', (tx) => tx.workflows.list({ workflowId: '' }), 'workflowId'),
  tenant('workflows.list: 201-character workflow id', (tx) => tx.workflows.list({ workflowId: id201 }), 'workflowId'),
  tenant('workflows.list: page size 1.5', (tx) => tx.workflows.list({ limit: 1.5 }), 'limit'),
  tenant('workflows.list: garbage cursor', (tx) => tx.workflows.list({ after: '%%%not a cursor%%%' }), 'after'),
  tenant(
    "workflows.updateStatus: status 'deleted'",
    (tx, f) => tx.workflows.updateStatus(f.workflowExecId, { status: bad('deleted') }),
    'status',
  ),
  tenant('workflows.updateStatus: missing status', (tx, f) => tx.workflows.updateStatus(f.workflowExecId, bad({ output: 1 })), 'status'),
  tenant('workflows.updateStatus: not-a-uuid', (tx) => tx.workflows.updateStatus('not-a-uuid', { status: 'success' }), 'workflowExecId'),
  tenant(
    'workflows.updateStatus: cyclic output',
    (tx, f) => tx.workflows.updateStatus(f.workflowExecId, { status: 'success', output: cyclic() }),
    'output',
  ),
  tenant(
    'workflows.updateStatus: updatedAt given by the caller',
    (tx, f) => tx.workflows.updateStatus(f.workflowExecId, bad({ status: 'success', updatedAt: new Date(0) })),
    'updatedAt',
  ),
  tenant(
    'workflows.updateStatus: string instead of an object',
    (tx, f) => tx.workflows.updateStatus(f.workflowExecId, bad('success')),
    'update',
  ),

  // tasks.upsert / list
  tenant("tasks.upsert: component 'robot'", (tx, f) => tx.tasks.upsert(taskInput(f, { component: 'robot' })), 'component'),
  tenant('tasks.upsert: not-a-uuid task id', (tx, f) => tx.tasks.upsert(taskInput(f, { taskExecId: 'not-a-uuid' })), 'taskExecId'),
  tenant(
    'tasks.upsert: not-a-uuid workflow execution',
    (tx, f) => tx.tasks.upsert(taskInput(f, { workflowExecId: 'not-a-uuid' })),
    'workflowExecId',
  ),
  tenant('tasks.upsert: empty task id', (tx, f) => tx.tasks.upsert(taskInput(f, { taskId: '' })), 'taskId'),
  tenant('tasks.upsert: 201-character workflow id', (tx, f) => tx.tasks.upsert(taskInput(f, { workflowId: id201 })), 'workflowId'),
  tenant('tasks.upsert: 201-character agent id', (tx, f) => tx.tasks.upsert(taskInput(f, { agentId: id201 })), 'agentId'),
  tenant('tasks.upsert: right-to-left override in tool id', (tx, f) => tx.tasks.upsert(taskInput(f, { toolId: 'mail\u202Eer' })), 'toolId'),
  tenant('tasks.upsert: number as action id', (tx, f) => tx.tasks.upsert(taskInput(f, { actionId: 5 })), 'actionId'),
  tenant(
    'tasks.upsert: execution type with spaces',
    (tx, f) => tx.tasks.upsert(taskInput(f, { executionType: 'Basic Type' })),
    'executionType',
  ),
  tenant(
    'tasks.upsert: SQL fragment as execution type',
    (tx, f) => tx.tasks.upsert(taskInput(f, { executionType: DROP_USERS })),
    'executionType',
  ),
  tenant(
    'tasks.upsert: parent with a g',
    (tx, f) => tx.tasks.upsert(taskInput(f, { parentStateId: '00000000-0000-0000-0000-00000000000g' })),
    'parentStateId',
  ),
  tenant(
    'tasks.upsert: a task as its own parent (other case)',
    (tx, f) => tx.tasks.upsert(taskInput(f, { parentStateId: f.taskExecId.toUpperCase() })),
    'parentStateId',
  ),
  tenant('tasks.upsert: BigInt in usage', (tx, f) => tx.tasks.upsert(taskInput(f, { usage: { tokens: 12n } })), 'usage'),
  tenant('tasks.upsert: payload over 256 KiB', (tx, f) => tx.tasks.upsert(taskInput(f, { output: overLimitAscii() })), 'output'),
  tenant("tasks.upsert: status 'deleted'", (tx, f) => tx.tasks.upsert(taskInput(f, { status: 'deleted' })), 'status'),
  tenant('tasks.upsert: unknown option key', (tx, f) => tx.tasks.upsert(taskInput(f, { priority: 1 })), 'priority'),
  tenant('tasks.list: not-a-uuid workflow execution', (tx) => tx.tasks.list({ workflowExecId: 'not-a-uuid' }), 'workflowExecId'),
  tenant('tasks.list: parent in braces', (tx, f) => tx.tasks.list({ parentStateId: `{${f.taskExecId}}` }), 'parentStateId'),
  tenant('tasks.list: page size 501', (tx) => tx.tasks.list({ limit: 501 }), 'limit'),
  tenant(
    'tasks.list: cursor with a bad id',
    (tx) => tx.tasks.list({ after: cursorOf('1700000000000000.00000000-0000-0000-0000-00000000000g') }),
    'after',
  ),
  tenant("tasks.list: status 'deleted'", (tx) => tx.tasks.list({ status: bad('deleted') }), 'status'),

  // schedules.create / update / list
  tenant(
    'schedules.create: cron expression in words',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: 'every day at noon' })),
    'cronExpression',
  ),
  tenant(
    'schedules.create: cron expression of three fields',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: '* * *' })),
    'cronExpression',
  ),
  tenant('schedules.create: empty cron expression', (tx) => tx.schedules.create(scheduleInput({ cronExpression: '' })), 'cronExpression'),
  tenant(
    'schedules.create: unknown cron macro',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: '@fortnightly' })),
    'cronExpression',
  ),
  tenant(
    'schedules.create: cron minute out of range',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: '60 2 * * *' })),
    'cronExpression',
  ),
  tenant(
    'schedules.create: cron month out of range',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: '0 2 1 13 *' })),
    'cronExpression',
  ),
  tenant(
    'schedules.create: cron weekday range backwards',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: '0 2 * * FRI-MON' })),
    'cronExpression',
  ),
  tenant(
    'schedules.create: SQL after a cron expression',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: `0 2 * * *${DROP_USERS}` })),
    'cronExpression',
  ),
  tenant(
    'schedules.create: number as cron expression',
    (tx) => tx.schedules.create(scheduleInput({ cronExpression: 5 })),
    'cronExpression',
  ),
  tenant('schedules.create: unknown time zone', (tx) => tx.schedules.create(scheduleInput({ timezone: 'Mars/Olympus_Mons' })), 'timezone'),
  tenant('schedules.create: empty time zone', (tx) => tx.schedules.create(scheduleInput({ timezone: '' })), 'timezone'),
  tenant('schedules.create: SQL fragment as time zone', (tx) => tx.schedules.create(scheduleInput({ timezone: DROP_USERS })), 'timezone'),
  tenant("schedules.create: enabled 'true'", (tx) => tx.schedules.create(scheduleInput({ enabled: 'true' })), 'enabled'),
  tenant('schedules.create: enabled 1', (tx) => tx.schedules.create(scheduleInput({ enabled: 1 })), 'enabled'),
  tenant('schedules.create: 201-character workflow id', (tx) => tx.schedules.create(scheduleInput({ workflowId: id201 })), 'workflowId'),
  tenant('schedules.create: payload over 256 KiB', (tx) => tx.schedules.create(scheduleInput({ input: overLimitAscii() })), 'input'),
  tenant('schedules.create: NUL character in input', (tx) => tx.schedules.create(scheduleInput({ input: ['\u0000'] })), 'input'),
  tenant('schedules.create: id given by the caller', (tx) => tx.schedules.create(scheduleInput({ id: OTHER_UUID })), 'id'),
  tenant(
    'schedules.update: bad cron expression',
    (tx, f) => tx.schedules.update(f.scheduleId, { cronExpression: 'nope' }),
    'cronExpression',
  ),
  tenant(
    'schedules.update: cron hour out of range',
    (tx, f) => tx.schedules.update(f.scheduleId, { cronExpression: '0 24 * * *' }),
    'cronExpression',
  ),
  tenant('schedules.update: unknown time zone', (tx, f) => tx.schedules.update(f.scheduleId, { timezone: 'Europe/Atlantis' }), 'timezone'),
  tenant("schedules.update: enabled 'false'", (tx, f) => tx.schedules.update(f.scheduleId, { enabled: bad('false') }), 'enabled'),
  tenant(
    'schedules.update: workflow id is not changeable',
    (tx, f) => tx.schedules.update(f.scheduleId, bad({ workflowId: 'other' })),
    'workflowId',
  ),
  tenant(
    'schedules.update: updatedAt given by the caller',
    (tx, f) => tx.schedules.update(f.scheduleId, bad({ updatedAt: new Date(0) })),
    'updatedAt',
  ),
  tenant('schedules.update: BigInt in input', (tx, f) => tx.schedules.update(f.scheduleId, { input: 1n }), 'input'),
  tenant('schedules.update: not-a-uuid', (tx) => tx.schedules.update('not-a-uuid', { enabled: false }), 'id'),
  tenant("schedules.list: enabled 'yes'", (tx) => tx.schedules.list({ enabled: bad('yes') }), 'enabled'),
  tenant('schedules.list: page size 0', (tx) => tx.schedules.list({ limit: 0 }), 'limit'),
  tenant("schedules.list: page size '10'", (tx) => tx.schedules.list({ limit: bad('10') }), 'limit'),
  tenant('schedules.list: unknown option key', (tx) => tx.schedules.list(bad({ cronExpression: '* * * * *' })), 'cronExpression'),

  // withOrg itself
  operator("withOrg: ''", (f) => f.store.withOrg('', async () => 'ran'), 'orgId', 'INVALID_INPUT'),
  operator('withOrg: undefined', (f) => f.store.withOrg(bad(undefined), async () => 'ran'), 'orgId', 'TENANT_SCOPE_REQUIRED'),
  operator('withOrg: null', (f) => f.store.withOrg(bad(null), async () => 'ran'), 'orgId', 'TENANT_SCOPE_REQUIRED'),
  operator('withOrg: not-a-uuid', (f) => f.store.withOrg('not-a-uuid', async () => 'ran'), 'orgId'),
  operator('withOrg: UUID with a g', (f) => f.store.withOrg('00000000-0000-0000-0000-00000000000g', async () => 'ran'), 'orgId'),
  operator('withOrg: UUID in braces', (f) => f.store.withOrg(`{${f.orgId}}`, async () => 'ran'), 'orgId'),
  operator('withOrg: UUID with surrounding spaces', (f) => f.store.withOrg(` ${f.orgId} `, async () => 'ran'), 'orgId'),
  operator('withOrg: SQL fragment', (f) => f.store.withOrg(DROP_USERS, async () => 'ran'), 'orgId'),
  operator(
    'withOrg: UUID followed by a statement',
    (f) => f.store.withOrg(`${f.orgId}', true); reset role; select ('`, async () => 'ran'),
    'orgId',
  ),
  operator('withOrg: number', (f) => f.store.withOrg(bad(42), async () => 'ran'), 'orgId'),
  operator('withOrg: object', (f) => f.store.withOrg(bad({ id: f.orgId }), async () => 'ran'), 'orgId'),
];

/** Text that only a database driver would write: validation errors must not carry any of it. */
const DRIVER_TEXT = /violates|syntax error|SQLSTATE|invalid input|duplicate key|constraint|relation "|column "|pglite|postgres/i;

describe.each(backends)('bad input is refused before SQL on $name', (backend) => {
  let t: TestDatabase;
  let fixtures: Fixtures;
  let statements: string[];
  let before: Snapshot;

  beforeAll(async () => {
    t = await backend.createMigrated();
    const recorded = recording(t.db);
    statements = recorded.statements;
    const store = await storeOver(recorded.db);
    const org = await store.organizations.create({ name: 'Bad Input Fixtures' });
    const ids = await store.withOrg(org.id, async (tx) => {
      const user = await tx.users.create({ email: 'fixture@example.com', role: 'customer' });
      await tx.workflows.upsert({ workflowExecId: WORKFLOW_EXEC_ID, workflowId: 'onboarding', status: 'running', input: { step: 1 } });
      await tx.tasks.upsert({
        taskExecId: TASK_EXEC_ID,
        taskId: 'send-email',
        workflowExecId: WORKFLOW_EXEC_ID,
        workflowId: 'onboarding',
        component: 'tool',
        status: 'running',
      });
      const schedule = await tx.schedules.create({ workflowId: 'nightly-report', cronExpression: '0 2 * * *' });
      return { userId: user.id, scheduleId: schedule.id };
    });
    fixtures = { store, orgId: org.id, workflowExecId: WORKFLOW_EXEC_ID, taskExecId: TASK_EXEC_ID, ...ids };
    before = await snapshot(t.db);
  });

  afterAll(async () => {
    // store.close() closes t.db; closing again (in dispose) is harmless, and dispose also drops
    // the server database.
    await fixtures?.store.close();
    await t?.dispose();
  });

  it('has a table of at least 45 cases with distinct names', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(45);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
  });

  it('starts from fixtures that the cases could damage', () => {
    expect(before.organizations?.rows).toBe(2); // the default organization and the fixture one
    for (const table of ['users', 'workflow_states', 'task_states', 'schedules']) expect(before[table]?.rows, table).toBe(1);
  });

  it.each(CASES)('$name -> $code on $field', async ({ call, code, field, inScope }) => {
    statements.length = 0;
    const error = await call(fixtures).then(
      (value) => {
        throw new Error(`expected ${code}, but the call succeeded with ${JSON.stringify(value)?.slice(0, 200)}`);
      },
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(StoreError);
    const storeError = error as StoreError;
    expect({ code: storeError.code, field: storeError.details.field }).toEqual({ code, field });
    expect(storeError.message).not.toMatch(DRIVER_TEXT);
    // Refused by validation, not translated from a database error.
    expect(storeError.cause).toBeUndefined();
    const sent = inScope ? statements.filter((sql) => !TRANSACTION_CONTROL.test(sql)) : statements;
    expect(sent, 'statements sent to the database').toEqual([]);
    expect(await snapshot(t.db)).toEqual(before);
  });

  it('leaves every table as it was after all the cases', async () => {
    expect(await snapshot(t.db)).toEqual(before);
    // The fixtures still read back as they were written.
    const org = await fixtures.store.organizations.get(fixtures.orgId);
    expect(org.name).toBe('Bad Input Fixtures');
    await fixtures.store.withOrg(fixtures.orgId, async (tx) => {
      expect((await tx.users.get(fixtures.userId)).role).toBe('customer');
      expect((await tx.workflows.get(fixtures.workflowExecId)).input).toEqual({ step: 1 });
      expect((await tx.schedules.get(fixtures.scheduleId)).cronExpression).toBe('0 2 * * *');
    });
  });
});
