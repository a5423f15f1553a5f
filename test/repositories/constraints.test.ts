/**
 * The schema's constraints, case by case, on every backend: each case is a statement the database
 * must refuse (with the expected SQLSTATE and constraint name) and its legitimate twin, which it
 * must accept. Every statement runs in a transaction that is rolled back, so the cases share the
 * fixtures set up in beforeAll and nothing else.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database, Session } from '../../engine/infra/store/connection/database.ts';
import { SQLSTATE, databaseErrorFields } from '../../engine/infra/store/connection/database-errors.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { DEFAULT_ORG_ID } from 'engine-store';

// ---------------------------------------------------------------------------------------------
// Fixtures: fixed ids, committed in beforeAll.

/** Live organization "Acme", namespace acme. */
const ORG_A = '11111111-1111-7111-8111-111111111111';
/** Live organization "Globex", namespace globex. */
const ORG_B = '22222222-2222-7222-8222-222222222222';
/** Soft-deleted organization "Initech", namespace initech. */
const ORG_GONE = '33333333-3333-7333-8333-333333333333';
/** An organization that never existed. */
const ORG_MISSING = '99999999-9999-7999-8999-999999999999';

const USER_A = 'aaaaaaaa-0000-7000-8000-000000000001'; // alice@acme.example, live
const USER_A_GONE = 'aaaaaaaa-0000-7000-8000-000000000002'; // old@acme.example, soft-deleted
const USER_B = 'bbbbbbbb-0000-7000-8000-000000000001'; // bob@globex.example, in ORG_B

const KEY_A = 'aaaaaaaa-1111-7000-8000-000000000001'; // prefix acmeKey01, live
const KEY_A_REVOKED = 'aaaaaaaa-1111-7000-8000-000000000002'; // prefix acmeOld01, revoked and soft-deleted

const WF_A = 'aaaaaaaa-2222-7000-8000-000000000001'; // a workflow execution of ORG_A
const WF_B = 'bbbbbbbb-2222-7000-8000-000000000001'; // a workflow execution of ORG_B
const TASK_A = 'aaaaaaaa-3333-7000-8000-000000000001'; // a task of WF_A
const TASK_B = 'bbbbbbbb-3333-7000-8000-000000000001'; // a task of WF_B
const SCHEDULE_A = 'aaaaaaaa-4444-7000-8000-000000000001';

// ---------------------------------------------------------------------------------------------
// Statements

interface Statement {
  sql: string;
  params?: unknown[];
}

/** A piece of SQL to put in a statement as is (an expression such as `now()`), not as a parameter. */
class Raw {
  constructor(readonly sql: string) {}
}
const raw = (sql: string) => new Raw(sql);

function insert(table: string, row: Record<string, unknown>): Statement {
  const columns: string[] = [];
  const values: string[] = [];
  const params: unknown[] = [];
  for (const [column, value] of Object.entries(row)) {
    columns.push(column);
    if (value instanceof Raw) {
      values.push(value.sql);
    } else {
      params.push(value);
      values.push(`$${params.length}`);
    }
  }
  return { sql: `insert into ${table} (${columns.join(', ')}) values (${values.join(', ')})`, params };
}

const sql = (text: string, ...params: unknown[]): Statement => ({ sql: text, params });

/** A bytea literal of `bytes` bytes, different for every seed. */
function digest(seed: string, bytes = 32): Raw {
  let hex = '';
  for (let round = 0; hex.length < bytes * 2; round++) hex += createHash('sha256').update(`${seed}/${round}`).digest('hex');
  return raw(`decode('${hex.slice(0, bytes * 2)}', 'hex')`);
}

const organization = (row: Record<string, unknown>) =>
  insert('organizations', { name: 'Umbrella', temporal_namespace: 'umbrella', ...row });
const user = (row: Record<string, unknown>) => insert('users', { org_id: ORG_A, email: 'carol@acme.example', role: 'customer', ...row });
/** An API key row alone, its prefix not registered (the key's foreign key refuses it). */
const unregisteredApiKey = (row: Record<string, unknown>) =>
  insert('api_keys', { org_id: ORG_A, user_id: USER_A, prefix: 'newKey001', key_hash: digest('new key'), name: 'deploy', ...row });
/** An API key, its prefix registered in api_key_prefixes first, in the same statement, as issuing does. */
function apiKey(row: Record<string, unknown>): Statement {
  const key = unregisteredApiKey(row);
  const { org_id: orgId = ORG_A, prefix = 'newKey001' } = row;
  const next = key.params!.length;
  // The key's row is selected from the registration, so that the registration comes first.
  const [into, values] = key.sql.split(' values ');
  return {
    sql: `with registered as (insert into api_key_prefixes (org_id, prefix) values ($${next + 1}, $${next + 2}) returning prefix)
          ${into} select ${values!.slice(1, -1)} from registered`,
    params: [...key.params!, orgId, prefix],
  };
}
const workflow = (row: Record<string, unknown>) =>
  insert('workflow_states', {
    org_id: ORG_A,
    workflow_exec_id: 'cccccccc-2222-7000-8000-000000000001',
    workflow_id: 'billing',
    status: 'running',
    ...row,
  });
const task = (row: Record<string, unknown>) =>
  insert('task_states', {
    org_id: ORG_A,
    task_exec_id: 'cccccccc-3333-7000-8000-000000000001',
    task_id: 'charge',
    workflow_exec_id: WF_A,
    workflow_id: 'billing',
    component: 'task',
    status: 'running',
    ...row,
  });
const schedule = (row: Record<string, unknown>) =>
  insert('schedules', { org_id: ORG_A, workflow_id: 'billing', cron_expression: '0 * * * *', ...row });

// ---------------------------------------------------------------------------------------------
// The case table

interface ConstraintCase {
  /** What the database refuses, completing "refuses ...". */
  refuses: string;
  violation: Statement;
  /** The expected SQLSTATE, or a function of `server_version_num` when it differs between versions. */
  sqlstate: string | ((serverVersion: number) => string);
  constraint: string;
  /** The legitimate twin, completing "accepts ...". */
  accepts: string;
  twin: Statement;
  /** Statements run first in both transactions (the violation's and the twin's). */
  setup?: Statement[];
  /** Statements run after `setup` in the twin's transaction only. */
  twinSetup?: Statement[];
}

const { uniqueViolation: UNIQUE, checkViolation: CHECK, foreignKeyViolation: FOREIGN_KEY } = SQLSTATE;
/** restrict_violation, which errors.ts has no name for (yet). */
const RESTRICT = '23001';

const cases: ConstraintCase[] = [
  // --- organizations -------------------------------------------------------------------------
  {
    refuses: 'a second live organization with the same name in another case',
    violation: organization({ name: 'ACME', temporal_namespace: 'acme-2' }),
    sqlstate: UNIQUE,
    constraint: 'organizations_name_key',
    accepts: 'the name of a soft-deleted organization for a new one',
    twin: organization({ name: 'INITECH', temporal_namespace: 'initech-2' }),
  },
  {
    refuses: 'an organization named like the default organization',
    violation: organization({ name: 'Default', temporal_namespace: 'default-2' }),
    sqlstate: UNIQUE,
    constraint: 'organizations_name_key',
    accepts: 'an organization whose name only contains the default one',
    twin: organization({ name: 'Default Two', temporal_namespace: 'default-2' }),
  },
  {
    refuses: 'renaming an organization to the name of another live one',
    violation: sql('update organizations set name = $1 where id = $2', 'globex', ORG_A),
    sqlstate: UNIQUE,
    constraint: 'organizations_name_key',
    accepts: 'renaming an organization to its own name in another case',
    twin: sql('update organizations set name = $1 where id = $2', 'ACME', ORG_A),
  },
  {
    refuses: 'restoring a soft-deleted organization whose name a live one has taken since',
    setup: [organization({ name: 'Initech', temporal_namespace: 'initech-new' })],
    violation: sql('update organizations set deleted_at = null where id = $1', ORG_GONE),
    sqlstate: UNIQUE,
    constraint: 'organizations_name_key',
    accepts: 'restoring a soft-deleted organization once its name is free again',
    twinSetup: [sql("update organizations set deleted_at = now() where temporal_namespace = 'initech-new'")],
    twin: sql('update organizations set deleted_at = null where id = $1', ORG_GONE),
  },
  {
    refuses: 'a second organization with the namespace of a live one',
    violation: organization({ temporal_namespace: 'acme' }),
    sqlstate: UNIQUE,
    constraint: 'organizations_temporal_namespace_key',
    accepts: 'a new organization with a namespace of its own',
    twin: organization({ temporal_namespace: 'acme-2' }),
  },
  {
    refuses: 'the namespace of a soft-deleted organization for a new one',
    violation: organization({ temporal_namespace: 'initech' }),
    sqlstate: UNIQUE,
    constraint: 'organizations_temporal_namespace_key',
    accepts: "a namespace that merely starts like a soft-deleted organization's",
    twin: organization({ temporal_namespace: 'initech2' }),
  },
  ...(
    [
      ['an uppercase namespace', 'Umbrella'],
      ['a namespace with a leading hyphen', '-umbrella'],
      ['a namespace with a trailing hyphen', 'umbrella-'],
      ['a namespace of 64 characters', 'a'.repeat(64)],
      ['an empty namespace', ''],
      ['a namespace with a space', 'umbrella corp'],
    ] as const
  ).map(([what, namespace]): ConstraintCase => ({
    refuses: what,
    violation: organization({ temporal_namespace: namespace }),
    sqlstate: CHECK,
    constraint: 'organizations_temporal_namespace_check',
    accepts: `a valid namespace instead of ${what}`,
    twin: organization({ temporal_namespace: namespace.length === 64 ? 'a'.repeat(63) : 'umbrella.prod_1-eu' }),
  })),
  {
    refuses: 'a one-character namespace that is not a letter or digit',
    violation: organization({ temporal_namespace: '.' }),
    sqlstate: CHECK,
    constraint: 'organizations_temporal_namespace_check',
    accepts: 'a one-character namespace',
    twin: organization({ temporal_namespace: 'u' }),
  },
  ...(
    [
      ['an empty organization name', ''],
      ['an organization name of 101 characters', 'x'.repeat(101)],
      ['an organization name with a leading space', ' Umbrella'],
      ['an organization name with a trailing space', 'Umbrella '],
      ['an organization name with a control character', 'Umbrella\u0007Corp'],
      ['an organization name with a newline', 'Umbrella\nCorp'],
    ] as const
  ).map(([what, name]): ConstraintCase => ({
    refuses: what,
    violation: organization({ name }),
    sqlstate: CHECK,
    constraint: 'organizations_name_check',
    accepts: `a valid organization name instead of ${what}`,
    twin: organization({ name: name.length === 101 ? 'x'.repeat(100) : 'Umbrella Corp' }),
  })),
  {
    refuses: "an organization status other than 'active' or 'suspended'",
    violation: organization({ status: 'deleted' }),
    sqlstate: CHECK,
    constraint: 'organizations_status_check',
    accepts: 'a suspended organization',
    twin: organization({ status: 'suspended' }),
  },
  {
    refuses: 'an organization deleted before it was created',
    violation: organization({ deleted_at: raw("now() - interval '1 day'") }),
    sqlstate: CHECK,
    constraint: 'organizations_deleted_at_check',
    accepts: 'an organization deleted when it was created',
    twin: organization({ deleted_at: raw('now()') }),
  },

  // --- users ---------------------------------------------------------------------------------
  {
    refuses: 'a second live user with the same email in another case',
    violation: user({ email: 'ALICE@Acme.Example' }),
    sqlstate: UNIQUE,
    constraint: 'users_org_id_email_key',
    accepts: 'the same email in another organization',
    twin: user({ org_id: ORG_B, email: 'ALICE@Acme.Example' }),
  },
  {
    refuses: 'a second live user with exactly the same email',
    violation: user({ email: 'alice@acme.example' }),
    sqlstate: UNIQUE,
    constraint: 'users_org_id_email_key',
    accepts: 'the email of a soft-deleted user of the same organization',
    twin: user({ email: 'OLD@acme.example' }),
  },
  {
    refuses: 'restoring a soft-deleted user whose email a live user has taken since',
    setup: [user({ email: 'old@acme.example' })],
    violation: sql('update users set deleted_at = null where org_id = $1 and id = $2', ORG_A, USER_A_GONE),
    sqlstate: UNIQUE,
    constraint: 'users_org_id_email_key',
    accepts: 'restoring a soft-deleted user once the email is free again',
    twinSetup: [
      sql("update users set deleted_at = now() where org_id = $1 and email = 'old@acme.example' and id <> $2", ORG_A, USER_A_GONE),
    ],
    twin: sql('update users set deleted_at = null where org_id = $1 and id = $2', ORG_A, USER_A_GONE),
  },
  {
    refuses: "changing a user's email to another live user's",
    setup: [user({ id: 'aaaaaaaa-0000-7000-8000-000000000009', email: 'carol@acme.example' })],
    violation: sql(
      'update users set email = $1 where org_id = $2 and id = $3',
      'Alice@acme.example',
      ORG_A,
      'aaaaaaaa-0000-7000-8000-000000000009',
    ),
    sqlstate: UNIQUE,
    constraint: 'users_org_id_email_key',
    accepts: "changing a user's email to a free one",
    twin: sql(
      'update users set email = $1 where org_id = $2 and id = $3',
      'carol@example.org',
      ORG_A,
      'aaaaaaaa-0000-7000-8000-000000000009',
    ),
  },
  {
    refuses: 'two users with the same id in one organization',
    violation: user({ id: USER_A }),
    sqlstate: UNIQUE,
    constraint: 'users_pkey',
    accepts: 'a user of another organization with the same id (keys are per organization)',
    twin: user({ org_id: ORG_B, id: USER_A }),
  },
  {
    refuses: "the role 'owner'",
    violation: user({ role: 'owner' }),
    sqlstate: CHECK,
    constraint: 'users_role_check',
    accepts: "the role 'manager'",
    twin: user({ role: 'manager' }),
  },
  {
    refuses: "the role 'Admin' (roles are case-sensitive)",
    violation: user({ role: 'Admin' }),
    sqlstate: CHECK,
    constraint: 'users_role_check',
    accepts: "the role 'admin'",
    twin: user({ role: 'admin' }),
  },
  {
    refuses: "a user status other than 'active' or 'suspended'",
    violation: user({ status: 'deleted' }),
    sqlstate: CHECK,
    constraint: 'users_status_check',
    accepts: 'a suspended user',
    twin: user({ status: 'suspended' }),
  },
  ...(
    [
      ['an email without @', 'carol.acme.example'],
      ['an email with a space', 'carol smith@acme.example'],
      ['an email with two @', 'carol@home@acme.example'],
      ['an email without a dot in its domain', 'carol@localhost'],
      ['an email with a control character', 'carol\u0001@acme.example'],
      ['an email of 255 characters', `${'c'.repeat(243)}@example.com`],
    ] as const
  ).map(([what, email]): ConstraintCase => ({
    refuses: what,
    violation: user({ email }),
    sqlstate: CHECK,
    constraint: 'users_email_check',
    accepts: `a valid email instead of ${what}`,
    twin: user({ email: email.length === 255 ? `${'c'.repeat(242)}@example.com` : 'carol.smith+tag@mail.acme.example' }),
  })),
  {
    refuses: 'a user deleted before it was created',
    violation: user({ deleted_at: raw("now() - interval '1 second'") }),
    sqlstate: CHECK,
    constraint: 'users_deleted_at_check',
    accepts: 'a user deleted after it was created',
    twin: user({ deleted_at: raw("now() + interval '1 second'") }),
  },
  {
    refuses: 'a user in an organization that does not exist',
    violation: user({ org_id: ORG_MISSING }),
    sqlstate: FOREIGN_KEY,
    constraint: 'users_org_id_fkey',
    accepts: 'a user in the default organization',
    twin: user({ org_id: DEFAULT_ORG_ID }),
  },

  // --- api_keys ------------------------------------------------------------------------------
  {
    refuses: 'a second live key of the same user with the same name in another case',
    violation: apiKey({ name: 'CI' }),
    sqlstate: UNIQUE,
    constraint: 'api_keys_org_id_user_id_name_key',
    accepts: 'the same name for a key that is revoked',
    twin: apiKey({ name: 'CI', status: 'revoked' }),
  },
  ...([-1, 0, 1_000_001] as const).map((limit): ConstraintCase => ({
    refuses: `a rate limit of ${limit} per hour`,
    violation: apiKey({ rate_limit_per_hour: limit }),
    sqlstate: CHECK,
    constraint: 'api_keys_rate_limit_per_hour_check',
    accepts: `a rate limit of ${limit > 0 ? 1_000_000 : 1} per hour`,
    twin: apiKey({ rate_limit_per_hour: limit > 0 ? 1_000_000 : 1 }),
  })),
  {
    refuses: 'an api key that expires before it was created',
    violation: apiKey({ expires_at: raw("now() - interval '1 hour'") }),
    sqlstate: CHECK,
    constraint: 'api_keys_expires_at_check',
    accepts: 'an api key that expires after it was created',
    twin: apiKey({ expires_at: raw("now() + interval '1 hour'") }),
  },
  {
    refuses: 'an api key that expires the moment it is created',
    violation: apiKey({ expires_at: raw('now()') }),
    sqlstate: CHECK,
    constraint: 'api_keys_expires_at_check',
    accepts: 'an api key that never expires',
    twin: apiKey({ expires_at: null }),
  },
  {
    refuses: 'a key hash of 31 bytes',
    violation: apiKey({ key_hash: digest('short', 31) }),
    sqlstate: CHECK,
    constraint: 'api_keys_key_hash_check',
    accepts: 'a key hash of 32 bytes',
    twin: apiKey({ key_hash: digest('short', 32) }),
  },
  {
    refuses: 'a key hash of 33 bytes',
    violation: apiKey({ key_hash: digest('long', 33) }),
    sqlstate: CHECK,
    constraint: 'api_keys_key_hash_check',
    accepts: 'a SHA-256 digest computed by the database',
    twin: apiKey({ key_hash: raw("sha256('a whole api key'::bytea)") }),
  },
  ...(
    [
      ["a key prefix with '_'", 'acme_key1', 'acmeKey02'],
      ['a key prefix of 7 characters', 'abcdefg', 'abcdefgh'],
      ['a key prefix of 33 characters', 'a'.repeat(33), 'a'.repeat(32)],
      ['a key prefix with a hyphen', 'acme-key-1', 'acmeKey1X'],
    ] as const
  ).map(([what, prefix, good]): ConstraintCase => ({
    refuses: what,
    violation: unregisteredApiKey({ prefix }),
    sqlstate: CHECK,
    constraint: 'api_keys_prefix_check',
    accepts: `the key prefix ${good}`,
    twin: apiKey({ prefix: good }),
  })),
  {
    refuses: "registering a key prefix with '_'",
    violation: insert('api_key_prefixes', { org_id: ORG_A, prefix: 'acme_key1' }),
    sqlstate: CHECK,
    constraint: 'api_key_prefixes_prefix_check',
    accepts: 'registering the key prefix acmeKey02',
    twin: insert('api_key_prefixes', { org_id: ORG_A, prefix: 'acmeKey02' }),
  },
  {
    refuses: 'the prefix of a live api key for a new one',
    violation: apiKey({ prefix: 'acmeKey01' }),
    sqlstate: UNIQUE,
    constraint: 'api_key_prefixes_pkey',
    accepts: "a prefix that differs from a live key's only in case",
    twin: apiKey({ prefix: 'ACMEKEY01' }),
  },
  {
    refuses: 'the prefix of a revoked, soft-deleted api key for a new one',
    violation: apiKey({ prefix: 'acmeOld01' }),
    sqlstate: UNIQUE,
    constraint: 'api_key_prefixes_pkey',
    accepts: 'a fresh prefix for a new key',
    twin: apiKey({ prefix: 'acmeNew01' }),
  },
  {
    refuses: 'the prefix of an api key of another organization',
    violation: apiKey({ org_id: ORG_B, user_id: USER_B, prefix: 'acmeKey01' }),
    sqlstate: UNIQUE,
    constraint: 'api_key_prefixes_pkey',
    accepts: 'a fresh prefix in another organization',
    twin: apiKey({ org_id: ORG_B, user_id: USER_B, prefix: 'globexKey1' }),
  },
  {
    refuses: 'an api key whose prefix was never registered',
    violation: unregisteredApiKey({ prefix: 'unlisted01' }),
    sqlstate: FOREIGN_KEY,
    constraint: 'api_keys_prefix_fkey',
    accepts: 'the same key with its prefix registered',
    twin: apiKey({ prefix: 'unlisted01' }),
  },
  {
    refuses: 'an api key under a prefix registered to another organization (the prefix routes to its organization)',
    violation: unregisteredApiKey({ org_id: ORG_B, user_id: USER_B, prefix: 'acmeKey01' }),
    sqlstate: FOREIGN_KEY,
    constraint: 'api_keys_prefix_fkey',
    accepts: 'a key of that organization under a prefix registered to it',
    twin: apiKey({ org_id: ORG_B, user_id: USER_B, prefix: 'globexKey9' }),
  },
  {
    refuses: 'an api key whose user is in another organization',
    violation: apiKey({ org_id: ORG_A, user_id: USER_B }),
    sqlstate: FOREIGN_KEY,
    constraint: 'api_keys_user_fkey',
    accepts: 'an api key of a user of its own organization',
    twin: apiKey({ org_id: ORG_B, user_id: USER_B }),
  },
  {
    refuses: "moving an api key into another organization than its user's",
    violation: sql('update api_keys set org_id = $1 where org_id = $2 and id = $3', ORG_B, ORG_A, KEY_A),
    sqlstate: FOREIGN_KEY,
    constraint: 'api_keys_user_fkey',
    accepts: 'handing an api key to another user of its organization',
    setup: [user({ id: 'aaaaaaaa-0000-7000-8000-000000000009' })],
    twin: sql('update api_keys set user_id = $1 where org_id = $2 and id = $3', 'aaaaaaaa-0000-7000-8000-000000000009', ORG_A, KEY_A),
  },
  {
    refuses: "the api key status 'deleted'",
    violation: apiKey({ status: 'deleted' }),
    sqlstate: CHECK,
    constraint: 'api_keys_status_check',
    accepts: "the api key status 'revoked'",
    twin: apiKey({ status: 'revoked' }),
  },
  {
    refuses: 'an empty api key name',
    violation: apiKey({ name: '' }),
    sqlstate: CHECK,
    constraint: 'api_keys_name_check',
    accepts: 'an api key name of 100 characters',
    twin: apiKey({ name: 'k'.repeat(100) }),
  },
  {
    refuses: 'an api key name with a leading space',
    violation: apiKey({ name: ' ci' }),
    sqlstate: CHECK,
    constraint: 'api_keys_name_check',
    accepts: 'an api key name with inner spaces',
    twin: apiKey({ name: 'ci deploy key' }),
  },
  {
    refuses: 'an api key deleted before it was created',
    violation: apiKey({ deleted_at: raw("now() - interval '1 minute'") }),
    sqlstate: CHECK,
    constraint: 'api_keys_deleted_at_check',
    accepts: 'an api key deleted when it was created',
    twin: apiKey({ deleted_at: raw('now()') }),
  },

  // --- workflow_states, task_states, schedules -----------------------------------------------
  {
    refuses: 'a workflow state of an organization that does not exist',
    violation: workflow({ org_id: ORG_MISSING }),
    sqlstate: FOREIGN_KEY,
    constraint: 'workflow_states_org_id_fkey',
    accepts: 'a workflow state of an existing organization',
    twin: workflow({ org_id: ORG_B }),
  },
  {
    refuses: 'two workflow states with the same execution id in one organization',
    violation: workflow({ workflow_exec_id: WF_A }),
    sqlstate: UNIQUE,
    constraint: 'workflow_states_pkey',
    accepts: 'the same workflow execution id in another organization',
    twin: workflow({ org_id: ORG_B, workflow_exec_id: WF_A }),
  },
  {
    refuses: "a task state pointing at another organization's workflow execution",
    violation: task({ org_id: ORG_B, workflow_exec_id: WF_A }),
    sqlstate: FOREIGN_KEY,
    constraint: 'task_states_workflow_fkey',
    accepts: 'a task state of a workflow execution of its own organization',
    twin: task({ org_id: ORG_A, workflow_exec_id: WF_A }),
  },
  {
    refuses: "moving a task state into another organization than its workflow's",
    violation: sql('update task_states set org_id = $1 where org_id = $2 and task_exec_id = $3', ORG_A, ORG_B, TASK_B),
    sqlstate: FOREIGN_KEY,
    constraint: 'task_states_workflow_fkey',
    accepts: 'changing a task state within its organization',
    twin: sql("update task_states set status = 'succeeded' where org_id = $1 and task_exec_id = $2", ORG_B, TASK_B),
  },
  {
    refuses: 'a task state whose parent is a task of another organization',
    violation: task({ org_id: ORG_B, workflow_exec_id: WF_B, parent_state_id: TASK_A }),
    sqlstate: FOREIGN_KEY,
    constraint: 'task_states_parent_fkey',
    accepts: 'a task state whose parent is a task of its own organization',
    twin: task({ org_id: ORG_B, workflow_exec_id: WF_B, parent_state_id: TASK_B }),
  },
  {
    refuses: 'a task state whose parent does not exist',
    violation: task({ parent_state_id: 'dddddddd-3333-7000-8000-000000000001' }),
    sqlstate: FOREIGN_KEY,
    constraint: 'task_states_parent_fkey',
    accepts: 'a task state without a parent',
    twin: task({ parent_state_id: null }),
  },
  {
    refuses: 'two task states with the same execution id in one organization',
    violation: task({ task_exec_id: TASK_A }),
    sqlstate: UNIQUE,
    constraint: 'task_states_pkey',
    accepts: 'the same task execution id in another organization',
    twin: task({ org_id: ORG_B, workflow_exec_id: WF_B, task_exec_id: TASK_A }),
  },
  {
    refuses: 'a schedule of an organization that does not exist',
    violation: schedule({ org_id: ORG_MISSING }),
    sqlstate: FOREIGN_KEY,
    constraint: 'schedules_org_id_fkey',
    accepts: 'a schedule of an existing organization',
    twin: schedule({ org_id: ORG_B }),
  },
  {
    refuses: 'two schedules with the same id in one organization',
    violation: schedule({ id: SCHEDULE_A }),
    sqlstate: UNIQUE,
    constraint: 'schedules_pkey',
    accepts: 'the same schedule id in another organization',
    twin: schedule({ org_id: ORG_B, id: SCHEDULE_A }),
  },

  // --- permissions and role_permissions ------------------------------------------------------
  {
    refuses: 'granting a permission that does not exist',
    violation: insert('role_permissions', { role: 'customer', permission: 'billing:read' }),
    sqlstate: FOREIGN_KEY,
    constraint: 'role_permissions_permission_fkey',
    accepts: 'granting an existing permission a role lacks',
    twin: insert('role_permissions', { role: 'customer', permission: 'user:read' }),
  },
  {
    refuses: "granting a permission to the role 'owner'",
    violation: insert('role_permissions', { role: 'owner', permission: 'org:read' }),
    sqlstate: CHECK,
    constraint: 'role_permissions_role_check',
    accepts: "granting a permission to the role 'manager'",
    twin: insert('role_permissions', { role: 'manager', permission: 'apikey:read' }),
  },
  {
    refuses: 'granting a role a permission twice',
    violation: insert('role_permissions', { role: 'admin', permission: 'org:read' }),
    sqlstate: UNIQUE,
    constraint: 'role_permissions_pkey',
    accepts: 'granting another role that permission',
    twin: insert('role_permissions', { role: 'manager', permission: 'org:manage' }),
  },
  {
    refuses: 'a permission key that is not resource:action in lowercase',
    violation: insert('permissions', { key: 'Billing:Read', description: 'See invoices' }),
    sqlstate: CHECK,
    constraint: 'permissions_key_check',
    accepts: 'a lowercase resource:action permission key',
    twin: insert('permissions', { key: 'billing:read', description: 'See invoices' }),
  },
  {
    refuses: 'a permission key without an action',
    violation: insert('permissions', { key: 'billing', description: 'See invoices' }),
    sqlstate: CHECK,
    constraint: 'permissions_key_check',
    accepts: 'a permission key with an action',
    twin: insert('permissions', { key: 'billing:manage', description: 'Change invoices' }),
  },
  {
    refuses: 'a second permission with the same key',
    violation: insert('permissions', { key: 'org:read', description: 'again' }),
    sqlstate: UNIQUE,
    constraint: 'permissions_pkey',
    accepts: 'a permission with a new key',
    twin: insert('permissions', { key: 'org:audit', description: 'See the audit log' }),
  },
  {
    refuses: 'deleting a permission a role still grants',
    setup: [insert('permissions', { key: 'billing:read', description: 'See invoices' })],
    violation: sql('delete from permissions where key = $1', 'org:read'),
    // ON DELETE RESTRICT reports foreign_key_violation up to PostgreSQL 17 and restrict_violation
    // (23001) from 18 on; PGlite 0.5 is PostgreSQL 18, the server here 15.
    sqlstate: (serverVersion) => (serverVersion >= 180000 ? RESTRICT : FOREIGN_KEY),
    constraint: 'role_permissions_permission_fkey',
    accepts: 'deleting a permission no role grants',
    twin: sql('delete from permissions where key = $1', 'billing:read'),
  },
];

// ---------------------------------------------------------------------------------------------
// Helpers

/** Runs `work` in a transaction that is always rolled back. */
function rolledBack<T>(db: Database, work: (session: Session) => Promise<T>): Promise<T> {
  return db.withSession(async (session) => {
    await session.query('begin');
    try {
      return await work(session);
    } finally {
      await session.query('rollback');
    }
  });
}

async function run(session: Session, statement: Statement) {
  return session.query(statement.sql, statement.params ?? []);
}

async function seed(db: Database): Promise<void> {
  await db.withSession(async (s) => {
    await s.query('begin');
    const statements: Statement[] = [
      organization({ id: ORG_A, name: 'Acme', temporal_namespace: 'acme' }),
      organization({ id: ORG_B, name: 'Globex', temporal_namespace: 'globex' }),
      organization({ id: ORG_GONE, name: 'Initech', temporal_namespace: 'initech', deleted_at: raw('now()') }),
      user({ id: USER_A, email: 'alice@acme.example', role: 'admin' }),
      user({ id: USER_A_GONE, email: 'old@acme.example', deleted_at: raw('now()') }),
      user({ org_id: ORG_B, id: USER_B, email: 'bob@globex.example', role: 'manager' }),
      apiKey({ id: KEY_A, prefix: 'acmeKey01', key_hash: digest('key of alice'), name: 'ci' }),
      apiKey({ id: KEY_A_REVOKED, prefix: 'acmeOld01', key_hash: digest('old key of alice'), status: 'revoked', deleted_at: raw('now()') }),
      workflow({ workflow_exec_id: WF_A }),
      workflow({ org_id: ORG_B, workflow_exec_id: WF_B }),
      task({ task_exec_id: TASK_A, workflow_exec_id: WF_A }),
      task({ org_id: ORG_B, task_exec_id: TASK_B, workflow_exec_id: WF_B }),
      schedule({ id: SCHEDULE_A }),
    ];
    for (const statement of statements) await run(s, statement);
    await s.query('commit');
  });
}

const TENANT_TABLES = ['users', 'api_keys', 'workflow_states', 'task_states', 'schedules'] as const;

/** Rows per tenant table: those of `org` and those of every other organization. */
async function tenantCounts(session: Session, org: string): Promise<Record<string, { mine: number; others: number }>> {
  const counts: Record<string, { mine: number; others: number }> = {};
  for (const table of TENANT_TABLES) {
    const { rows } = await session.query<{ mine: number; others: number }>(
      `select count(*) filter (where org_id = $1)::int as mine, count(*) filter (where org_id <> $1)::int as others from ${table}`,
      [org],
    );
    counts[table] = rows[0]!;
  }
  const { rows } = await session.query<{ mine: number; others: number }>(
    `select count(*) filter (where id = $1)::int as mine, count(*) filter (where id <> $1)::int as others from organizations`,
    [org],
  );
  counts.organizations = rows[0]!;
  return counts;
}

// ---------------------------------------------------------------------------------------------
// Tests

for (const backend of backends)
  describe(`schema constraints on ${backend.name}`, () => {
    let t: TestDatabase;
    let serverVersion: number;

    beforeAll(async () => {
      t = await backend.createMigrated();
      await seed(t.db);
      const { rows } = await t.db.query<{ version: number }>("select current_setting('server_version_num')::int as version");
      serverVersion = rows[0]!.version;
    });

    afterAll(async () => {
      await t?.dispose();
    });

    for (const c of cases) {
      it(`refuses ${c.refuses} (${c.constraint})`, async () => {
        await rolledBack(t.db, async (s) => {
          for (const statement of c.setup ?? []) await run(s, statement);
          const error = await run(s, c.violation).then(
            () => undefined,
            (caught: unknown) => caught,
          );
          expect(error, 'the database accepted the violating statement').toBeDefined();
          const fields = databaseErrorFields(error);
          expect(fields, `not a database error: ${String(error)}`).toBeDefined();
          expect({ code: fields?.code, constraint: fields?.constraint }).toEqual({
            code: typeof c.sqlstate === 'function' ? c.sqlstate(serverVersion) : c.sqlstate,
            constraint: c.constraint,
          });
        });
      });

      it(`accepts ${c.accepts}`, async () => {
        await rolledBack(t.db, async (s) => {
          for (const statement of [...(c.setup ?? []), ...(c.twinSetup ?? [])]) await run(s, statement);
          const result = await run(s, c.twin);
          expect(result.rowCount, 'rows the twin affected').toBe(1);
        });
      });
    }

    const STAMPED: Array<{ table: string; change: string; where: string; params: unknown[] }> = [
      { table: 'users', change: "role = 'manager'", where: 'org_id = $1 and id = $2', params: [ORG_A, USER_A] },
      { table: 'organizations', change: "status = 'suspended'", where: 'id = $1', params: [ORG_B] },
      { table: 'api_keys', change: 'rate_limit_per_hour = 5', where: 'org_id = $1 and id = $2', params: [ORG_A, KEY_A] },
      { table: 'workflow_states', change: "status = 'succeeded'", where: 'org_id = $1 and workflow_exec_id = $2', params: [ORG_A, WF_A] },
      { table: 'task_states', change: "status = 'succeeded'", where: 'org_id = $1 and task_exec_id = $2', params: [ORG_A, TASK_A] },
      { table: 'schedules', change: 'enabled = false', where: 'org_id = $1 and id = $2', params: [ORG_A, SCHEDULE_A] },
    ];

    for (const { table, change, where, params } of STAMPED) {
      it(`stamps ${table}.updated_at with the transaction time on update, even when the statement sets an old value`, async () => {
        await rolledBack(t.db, async (s) => {
          const before = await s.query<{ updated_at: string }>(
            `select updated_at::text as updated_at from ${table} where ${where}`,
            params,
          );
          expect(before.rows).toHaveLength(1);
          const previous = before.rows[0]!.updated_at;
          const n = params.length;
          const { rows } = await s.query<{ is_now: boolean; advanced: boolean; forged: boolean }>(
            `update ${table} set ${change}, updated_at = timestamptz '2000-01-01 00:00:00+00' where ${where}
           returning updated_at = now() as is_now,
                     updated_at > $${n + 1}::timestamptz as advanced,
                     updated_at = timestamptz '2000-01-01 00:00:00+00' as forged`,
            [...params, previous],
          );
          expect(rows).toEqual([{ is_now: true, advanced: true, forged: false }]);
        });
      });
    }

    it('purging an organization removes its users, api keys, workflow states, task states and schedules, and nothing of other organizations', async () => {
      const PURGED = '44444444-4444-7444-8444-444444444444';
      const purgedUser = '44444444-0000-7000-8000-000000000001';
      const purgedWorkflow = '44444444-2222-7000-8000-000000000001';
      const purgedParent = '44444444-3333-7000-8000-000000000001';
      await rolledBack(t.db, async (s) => {
        for (const statement of [
          organization({ id: PURGED, name: 'Purged', temporal_namespace: 'purged' }),
          user({ org_id: PURGED, id: purgedUser, email: 'pat@purged.example' }),
          user({ org_id: PURGED, email: 'gone@purged.example', deleted_at: raw('now()') }),
          apiKey({ org_id: PURGED, user_id: purgedUser, prefix: 'purgedKey1', key_hash: digest('purged 1') }),
          apiKey({ org_id: PURGED, user_id: purgedUser, prefix: 'purgedKey2', key_hash: digest('purged 2'), status: 'revoked' }),
          workflow({ org_id: PURGED, workflow_exec_id: purgedWorkflow }),
          // The same execution id as ORG_A's workflow: the purge must not reach ORG_A's row.
          workflow({ org_id: PURGED, workflow_exec_id: WF_A }),
          task({ org_id: PURGED, task_exec_id: purgedParent, workflow_exec_id: purgedWorkflow }),
          task({ org_id: PURGED, task_exec_id: TASK_A, workflow_exec_id: purgedWorkflow, parent_state_id: purgedParent }),
          task({ org_id: PURGED, task_exec_id: '44444444-3333-7000-8000-000000000003', workflow_exec_id: WF_A }),
          schedule({ org_id: PURGED }),
          schedule({ org_id: PURGED, id: SCHEDULE_A, deleted_at: raw('now()') }),
        ]) {
          await run(s, statement);
        }

        const before = await tenantCounts(s, PURGED);
        expect(Object.fromEntries(Object.entries(before).map(([table, count]) => [table, count.mine]))).toEqual({
          organizations: 1,
          users: 2,
          api_keys: 2,
          workflow_states: 2,
          task_states: 3,
          schedules: 2,
        });
        for (const count of Object.values(before)) expect(count.others).toBeGreaterThan(0);

        const purge = await s.query('delete from organizations where id = $1', [PURGED]);
        expect(purge.rowCount).toBe(1);

        const after = await tenantCounts(s, PURGED);
        expect(after).toEqual(
          Object.fromEntries(Object.entries(before).map(([table, count]) => [table, { mine: 0, others: count.others }])),
        );
        // ORG_A's rows that share ids with the purged ones are still there.
        const survivors = await s.query<{ n: number }>(
          `select (select count(*) from workflow_states where org_id = $1 and workflow_exec_id = $2)
              + (select count(*) from task_states where org_id = $1 and task_exec_id = $3)
              + (select count(*) from schedules where org_id = $1 and id = $4) as n`,
          [ORG_A, WF_A, TASK_A, SCHEDULE_A],
        );
        expect(Number(survivors.rows[0]!.n)).toBe(3);
      });
    });

    it('gives new organizations, users and api keys version-7 UUIDs that sort in creation order', async () => {
      await rolledBack(t.db, async (s) => {
        const ids: string[] = [];
        const returning = async (statement: Statement) => {
          const { rows } = await s.query<{ id: string }>(`${statement.sql} returning id::text as id`, statement.params);
          ids.push(rows[0]!.id);
          // uuid_generate_v7() has millisecond resolution; ids of the same millisecond are unordered.
          await sleep(5);
        };
        await returning(organization({ name: 'First', temporal_namespace: 'first' }));
        const orgId = ids[0]!;
        await returning(user({ org_id: orgId, email: 'one@first.example' }));
        const userId = ids[1]!;
        await returning(apiKey({ org_id: orgId, user_id: userId, prefix: 'firstKey1', key_hash: digest('first 1') }));
        await returning(user({ org_id: orgId, email: 'two@first.example' }));
        await returning(organization({ name: 'Second', temporal_namespace: 'second' }));
        await returning(apiKey({ org_id: orgId, user_id: userId, prefix: 'firstKey2', key_hash: digest('first 2'), name: 'second' }));

        const { rows } = await s.query<{ id: string; version: string; variant: string; skew_ms: number }>(
          `select id::text as id,
                substring(id::text, 15, 1) as version,
                substring(id::text, 20, 1) as variant,
                abs(('x' || substring(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
                    - (extract(epoch from clock_timestamp()) * 1000)::bigint)::float8 as skew_ms
           from unnest($1::uuid[]) as id`,
          [ids],
        );
        for (const row of rows) {
          expect(row.version, row.id).toBe('7');
          expect(['8', '9', 'a', 'b'], row.id).toContain(row.variant);
          // The leading 48 bits are the Unix time in milliseconds.
          expect(row.skew_ms, row.id).toBeLessThan(60_000);
        }
        expect(new Set(ids).size).toBe(ids.length);
        expect([...ids].sort()).toEqual(ids);
        // The database orders them the same way (uuid comparison is bytewise).
        const ordered = await s.query<{ id: string }>('select id::text as id from unnest($1::uuid[]) as id order by id', [ids]);
        expect(ordered.rows.map((row) => row.id)).toEqual(ids);
      });
    });
  });
