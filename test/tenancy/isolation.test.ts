/**
 * Tenant isolation, on every backend.
 *
 * 1. A property: random sequences of tenant operations over three organizations, checked after
 *    every step against an in-memory model of which rows belong to which organization. Every
 *    read in an organization's scope (repositories, paged, and raw SQL as app_tenant) must return
 *    exactly that organization's rows. Workflow and task execution ids come from a small pool
 *    per run, so the same id is regularly used by two organizations (two separate rows).
 * 2. Cross-organization write attacks, each in its own withOrg of the attacker against the
 *    victim's data: refused (or confined to the attacker's own rows), the victim's rows byte for
 *    byte unchanged, and no error that names the victim's data. They run inside the property
 *    and once more each, explicitly, against a fixed fixture.
 * 3. Pool hygiene: nothing of a scope survives on the pooled connection; an ended scope refuses
 *    to run queries.
 * 4. app_tenant without an organization sees no row and can write none.
 *
 * What raw SQL in a scope can do to the scope itself (set_config, RESET ROLE, session-level SET)
 * is not something the database prevents: TrustedSqlScope.query is trusted code. The tests in
 * "raw SQL in a scope is trusted code" record what really happens.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ORG_ID, StoreError, storeOver, type ErrorCode, type Store, type WorkflowState } from 'engine-store';
import { databaseErrorFields, toStoreError } from '../../engine/infra/store/connection/database-errors.ts';
import { backends, withOneConnection, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { withOrgSql, type TrustedSqlScope } from '../support/trusted-sql.ts';

// ---------------------------------------------------------------------------------------------
// The model: which rows each organization owns.

type ExecutionStatus = WorkflowState['status'];
const STATUSES: readonly ExecutionStatus[] = ['pending', 'running', 'success', 'failed', 'canceled', 'timed_out', 'paused', 'waiting'];

interface OrgData {
  /** id → email */
  users: Map<string, string>;
  /** workflow_exec_id → status */
  workflows: Map<string, ExecutionStatus>;
  tasks: Map<string, { workflowExecId: string; parent: string | null; status: ExecutionStatus }>;
  /** id → soft-deleted */
  schedules: Map<string, boolean>;
  apiKeys: number;
}

type Model = Map<string, OrgData>;

interface Org {
  id: string;
  name: string;
}

const emptyOrgData = (): OrgData => ({ users: new Map(), workflows: new Map(), tasks: new Map(), schedules: new Map(), apiKeys: 0 });

function dataOf(model: Model, orgId: string): OrgData {
  let data = model.get(orgId);
  if (!data) model.set(orgId, (data = emptyOrgData()));
  return data;
}

/** Deleting a workflow execution cascades to its tasks, and deleting a task to its children. */
function deleteWorkflowInModel(data: OrgData, workflowExecId: string): void {
  data.workflows.delete(workflowExecId);
  for (const [id, task] of data.tasks) if (task.workflowExecId === workflowExecId) data.tasks.delete(id);
  let removed = true;
  while (removed) {
    removed = false;
    for (const [id, task] of data.tasks) {
      if (task.parent !== null && !data.tasks.has(task.parent)) {
        data.tasks.delete(id);
        removed = true;
      }
    }
  }
}

/** The tenant tables the model keeps counts of. */
const TENANT_TABLES = ['users', 'api_keys', 'workflow_states', 'task_states', 'schedules'] as const;
type TenantTable = (typeof TENANT_TABLES)[number];
const KEY_COLUMN: Record<TenantTable, string> = {
  users: 'id',
  api_keys: 'id',
  workflow_states: 'workflow_exec_id',
  task_states: 'task_exec_id',
  schedules: 'id',
};

/**
 * Every table with an org_id column that app_tenant may read: TENANT_TABLES and whatever later
 * migrations add (such as API key usage counters). Found in beforeAll; the schema is the same on
 * every backend.
 */
let tenantTables: readonly string[] = TENANT_TABLES;

const TENANT_TABLES_SQL = `
  select c.relname::text as name
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where n.nspname = current_schema() and c.relkind in ('r', 'p')
    and exists (select from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped)
    and has_table_privilege('app_tenant', c.oid, 'select')
  order by 1`;

/** `select org_id from <table>` for every tenant table, and the organizations, in one statement. */
const rawVisibilitySql = () =>
  [
    ...tenantTables.map((table) => `select '${table}' as source, org_id from ${table}`),
    `select 'organizations' as source, id as org_id from organizations`,
  ].join(' union all ');

const pickFrom = <T>(items: readonly T[], pick: number): T | undefined => (items.length === 0 ? undefined : items[pick % items.length]);
const tag = () => randomBytes(3).toString('hex');

// ---------------------------------------------------------------------------------------------
// Reading everything an organization's scope can see.

async function allPages<Item>(fetch: (after: string | undefined) => Promise<{ items: Item[]; nextCursor?: string }>): Promise<Item[]> {
  const items: Item[] = [];
  let after: string | undefined;
  for (let page = 0; page < 1000; page++) {
    const result = await fetch(after);
    items.push(...result.items);
    if (result.nextCursor === undefined) return items;
    after = result.nextCursor;
  }
  throw new Error('more than 1000 pages: the cursor does not advance');
}

/**
 * In the scope of each organization: every listing (all pages) holds exactly the model's rows of
 * that organization, each carrying its org_id, and raw SQL as app_tenant sees only its rows and
 * only its own organization.
 */
async function assertIsolation(store: Store, model: Model, orgIds: readonly string[], pageSize: number): Promise<void> {
  for (const orgId of orgIds) {
    const expected = dataOf(model, orgId);
    // Read in the scope, assert outside it: withOrg would wrap an assertion error.
    const seen = await withOrgSql(store, orgId, async (tx) => ({
      users: await allPages((after) => tx.users.list({ includeDeleted: true, limit: pageSize, after })),
      workflows: await allPages((after) => tx.workflows.list({ limit: pageSize, after })),
      tasks: await allPages((after) => tx.tasks.list({ limit: pageSize, after })),
      schedules: await allPages((after) => tx.schedules.list({ includeDeleted: true, limit: pageSize, after })),
      // Raw SQL as app_tenant.
      raw: (await tx.query<{ source: string; org_id: string }>(rawVisibilitySql())).rows,
    }));
    const { users, workflows, tasks, schedules, raw } = seen;

    const foreign = [...users, ...workflows, ...tasks, ...schedules].filter((row) => row.orgId !== orgId);
    expect(foreign, `rows of another organization listed in the scope of ${orgId}`).toEqual([]);
    expect(Object.fromEntries(users.map((user) => [user.id, user.email]))).toEqual(Object.fromEntries(expected.users));
    expect(users.length, 'a user listed twice').toBe(expected.users.size);
    expect(Object.fromEntries(workflows.map((state) => [state.workflowExecId, state.status]))).toEqual(
      Object.fromEntries(expected.workflows),
    );
    expect(workflows.length, 'a workflow state listed twice').toBe(expected.workflows.size);
    expect(
      Object.fromEntries(
        tasks.map((task) => [task.taskExecId, { workflowExecId: task.workflowExecId, parent: task.parentStateId, status: task.status }]),
      ),
    ).toEqual(Object.fromEntries(expected.tasks));
    expect(tasks.length, 'a task state listed twice').toBe(expected.tasks.size);
    expect(Object.fromEntries(schedules.map((schedule) => [schedule.id, schedule.deletedAt !== null]))).toEqual(
      Object.fromEntries(expected.schedules),
    );
    expect(schedules.length, 'a schedule listed twice').toBe(expected.schedules.size);

    expect(
      raw.filter((row) => row.org_id !== orgId),
      `raw SQL in the scope of ${orgId} sees another organization`,
    ).toEqual([]);
    const counts: Record<string, number> = { users: 0, api_keys: 0, workflow_states: 0, task_states: 0, schedules: 0, organizations: 0 };
    for (const row of raw) if (row.source in counts) counts[row.source]! += 1;
    expect(counts, `raw row counts in the scope of ${orgId}`).toEqual({
      users: expected.users.size,
      api_keys: expected.apiKeys,
      workflow_states: expected.workflows.size,
      task_states: expected.tasks.size,
      schedules: expected.schedules.size,
      organizations: 1,
    });
  }
}

/**
 * store.withOrg, except that an assertion failing inside the callback always comes out as
 * itself: some versions of withOrg turn the callback's own errors into a StoreError
 * (DATABASE_ERROR, "the database connection failed") whose cause is the original.
 */
async function withOrgAsserting<T>(store: Store, orgId: string, work: (tx: TrustedSqlScope) => Promise<T>): Promise<T> {
  try {
    return await withOrgSql(store, orgId, work);
  } catch (error) {
    if (error instanceof StoreError && error.cause instanceof Error && error.cause.name === 'AssertionError') throw error.cause;
    throw error;
  }
}

/** Every column of every row the organization owns, as its own scope reads them. */
async function snapshot(store: Store, orgId: string): Promise<Record<string, unknown[]>> {
  return withOrgSql(store, orgId, async (tx) => {
    const tables: Record<string, unknown[]> = {};
    for (const table of tenantTables) tables[table] = (await tx.query(`select * from ${table} as row order by row::text`)).rows;
    tables.organizations = (await tx.query('select * from organizations')).rows;
    return tables;
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-organization attacks: the attacker works in its own scope against the victim's data.

interface AttackContext {
  store: Store;
  model: Model;
  attacker: Org;
  victim: Org;
  /** Chooses among the applicable targets. */
  pick: number;
  /** Chooses the statement or table, where an attack has several. */
  variant: number;
}

type AttackOutcome = 'ran' | 'skipped';

interface Attack {
  name: string;
  /** What must happen, as a test name. */
  behaviour: string;
  run(ctx: AttackContext): Promise<AttackOutcome>;
}

/** What an error of the attacker's scope must never mention: the victim's ids, name and emails. */
function victimSecrets(ctx: AttackContext): string[] {
  const victim = dataOf(ctx.model, ctx.victim.id);
  const attacker = dataOf(ctx.model, ctx.attacker.id);
  return [
    ctx.victim.id,
    ctx.victim.name,
    ...victim.users.keys(),
    ...victim.users.values(),
    ...victim.schedules.keys(),
    // Execution ids the attacker also uses are the attacker's own data too.
    ...[...victim.workflows.keys()].filter((id) => !attacker.workflows.has(id)),
    ...[...victim.tasks.keys()].filter((id) => !attacker.tasks.has(id)),
  ].map((secret) => secret.toLowerCase());
}

/** Awaits a refusal with `code`, and checks that the error names nothing of the victim's. */
async function refusal(work: Promise<unknown>, code: ErrorCode, ctx: AttackContext): Promise<StoreError> {
  const error = await work.then(
    (value) => new Error(`expected ${code}, but the operation succeeded with ${JSON.stringify(value)}`),
    (thrown: unknown) => thrown,
  );
  if (!(error instanceof StoreError)) throw error;
  expect(error.code).toBe(code);
  const text = `${error.message} ${JSON.stringify(error.toJSON())}`.toLowerCase();
  for (const secret of victimSecrets(ctx)) expect(text, "the error names the victim organization's data").not.toContain(secret);
  return error;
}

type RowKind = 'users' | 'workflows' | 'tasks' | 'schedules';
const TABLE_OF: Record<RowKind, TenantTable> = {
  users: 'users',
  workflows: 'workflow_states',
  tasks: 'task_states',
  schedules: 'schedules',
};

interface Target {
  kind: RowKind;
  id: string;
}

/** The victim's rows the attacker has no row of the same id of. */
function victimTargets(ctx: AttackContext, kinds: readonly RowKind[] = ['users', 'workflows', 'tasks', 'schedules']): Target[] {
  const victim = dataOf(ctx.model, ctx.victim.id);
  const attacker = dataOf(ctx.model, ctx.attacker.id);
  const targets: Target[] = [];
  for (const kind of kinds) {
    const own = attacker[kind] as Map<string, unknown>;
    for (const id of (victim[kind] as Map<string, unknown>).keys()) if (!own.has(id)) targets.push({ kind, id });
  }
  return targets;
}

const inAttacker = <T>(ctx: AttackContext, work: (tx: TrustedSqlScope) => Promise<T>) => withOrgSql(ctx.store, ctx.attacker.id, work);

// The attacks that write (confined to the attacker's own rows) come last: the explicit cases run
// in this order on one fixture, and they make some of the victim's ids the attacker's too.
const ATTACKS: Attack[] = [
  {
    name: 'rawInsertWithVictimOrg',
    behaviour: "a raw insert that carries the victim's org_id is refused with FORBIDDEN",
    async run(ctx) {
      const victim = dataOf(ctx.model, ctx.victim.id);
      const victimUser = pickFrom([...victim.users.keys()], ctx.pick) ?? randomUUID();
      const victimWorkflow = pickFrom([...victim.workflows.keys()], ctx.pick) ?? randomUUID();
      const statements: Array<[string, unknown[]]> = [
        [`insert into users (org_id, email, role) values ($1, $2, 'admin')`, [ctx.victim.id, `intruder-${tag()}@attacker.example`]],
        [
          `insert into workflow_states (org_id, workflow_exec_id, workflow_id, status) values ($1, $2, 'intrusion', 'running')`,
          [ctx.victim.id, randomUUID()],
        ],
        [
          `insert into task_states (org_id, task_exec_id, task_id, workflow_exec_id, workflow_id, component, status)
           values ($1, $2, 'intrusion', $3, 'intrusion', 'task', 'running')`,
          [ctx.victim.id, randomUUID(), victimWorkflow],
        ],
        [`insert into schedules (org_id, workflow_id, cron_expression) values ($1, 'intrusion', '@hourly')`, [ctx.victim.id]],
        [
          `insert into api_keys (org_id, user_id, prefix, key_hash, name) values ($1, $2, $3, decode(repeat('ab', 32), 'hex'), 'intrusion')`,
          [ctx.victim.id, victimUser, `intruder${tag()}`],
        ],
      ];
      const [sql, params] = statements[ctx.variant % statements.length]!;
      await refusal(
        inAttacker(ctx, (tx) => tx.query(sql, params)),
        'FORBIDDEN',
        ctx,
      );
      return 'ran';
    },
  },
  {
    name: 'rawUpsertOntoVictimRow',
    behaviour: "a raw INSERT ... ON CONFLICT DO UPDATE aimed at the victim's (org_id, workflow_exec_id) is refused with FORBIDDEN",
    async run(ctx) {
      const target = pickFrom([...dataOf(ctx.model, ctx.victim.id).workflows.keys()], ctx.pick);
      if (!target) return 'skipped';
      await refusal(
        inAttacker(ctx, (tx) =>
          tx.query(
            `insert into workflow_states (org_id, workflow_exec_id, workflow_id, status) values ($1, $2, 'hijack', 'failed')
             on conflict (org_id, workflow_exec_id) do update set status = 'failed', workflow_id = 'hijack'`,
            [ctx.victim.id, target],
          ),
        ),
        'FORBIDDEN',
        ctx,
      );
      return 'ran';
    },
  },
  {
    name: 'taskOnVictimWorkflow',
    behaviour:
      "a task of the attacker that points at the victim's workflow execution is refused with NOT_FOUND, the same error as for an id that exists nowhere",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx, ['workflows']), ctx.pick);
      if (!target) return 'skipped';
      const attempt = (workflowExecId: string) =>
        inAttacker(ctx, (tx) =>
          tx.tasks.upsert({
            taskExecId: randomUUID(),
            taskId: 'intrusion',
            workflowExecId,
            workflowId: 'intrusion',
            component: 'tool',
            status: 'running',
          }),
        );
      const error = await refusal(attempt(target.id), 'NOT_FOUND', ctx);
      expect(error.details.field).toBe('workflowExecId');
      // Not an oracle: the victim's existing id and a made-up one are refused alike.
      expect(error.toJSON()).toEqual((await refusal(attempt(randomUUID()), 'NOT_FOUND', ctx)).toJSON());
      return 'ran';
    },
  },
  {
    name: 'taskWithVictimParent',
    behaviour:
      "a task of the attacker whose parent is the victim's task is refused with NOT_FOUND, the same error as for an id that exists nowhere",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx, ['tasks']), ctx.pick);
      const ownWorkflow = pickFrom([...dataOf(ctx.model, ctx.attacker.id).workflows.keys()], ctx.pick);
      if (!target || !ownWorkflow) return 'skipped';
      const attempt = (parentStateId: string) =>
        inAttacker(ctx, (tx) =>
          tx.tasks.upsert({
            taskExecId: randomUUID(),
            taskId: 'intrusion',
            workflowExecId: ownWorkflow,
            workflowId: 'intrusion',
            component: 'agent',
            status: 'running',
            parentStateId,
          }),
        );
      const error = await refusal(attempt(target.id), 'NOT_FOUND', ctx);
      expect(error.details.field).toBe('parentStateId');
      expect(error.toJSON()).toEqual((await refusal(attempt(randomUUID()), 'NOT_FOUND', ctx)).toJSON());
      return 'ran';
    },
  },
  {
    name: 'updateVictimRaw',
    behaviour: "a raw UPDATE of the victim's row, by id or by org_id, affects 0 rows",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx), ctx.pick);
      if (!target) return 'skipped';
      const table = TABLE_OF[target.kind];
      const assignment = {
        users: `role = 'customer'`,
        workflows: `status = 'canceled'`,
        tasks: `status = 'canceled'`,
        schedules: 'enabled = false',
      }[target.kind];
      const counts = await inAttacker(ctx, async (tx) => ({
        byId: (await tx.query(`update ${table} set ${assignment} where ${KEY_COLUMN[table]} = $1`, [target.id])).rowCount,
        byOrg: (await tx.query(`update ${table} set ${assignment} where org_id = $1`, [ctx.victim.id])).rowCount,
        // The control: the same kind of statement on the attacker's own rows does count them.
        own: (await tx.query(`update ${table} set updated_at = updated_at where org_id = $1`, [ctx.attacker.id])).rowCount,
      }));
      const own = dataOf(ctx.model, ctx.attacker.id)[target.kind].size;
      expect(counts).toEqual({ byId: 0, byOrg: 0, own });
      return 'ran';
    },
  },
  {
    name: 'updateVictimRepo',
    behaviour: "a repository update of the victim's row by id is refused with NOT_FOUND",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx), ctx.pick);
      if (!target) return 'skipped';
      await refusal(
        inAttacker(ctx, async (tx): Promise<unknown> => {
          switch (target.kind) {
            case 'users':
              return ctx.variant % 2 === 0 ? tx.users.changeRole(target.id, 'customer') : tx.users.suspend(target.id);
            case 'workflows':
              return tx.workflows.updateStatus(target.id, { status: 'canceled', output: { hijack: true } });
            case 'tasks':
              return tx.tasks.updateStatus(target.id, { status: 'canceled', error: { hijack: true } });
            case 'schedules':
              return ctx.variant % 2 === 0
                ? tx.schedules.update(target.id, { enabled: false, cronExpression: '@yearly' })
                : tx.schedules.restore(target.id);
          }
        }),
        'NOT_FOUND',
        ctx,
      );
      return 'ran';
    },
  },
  {
    name: 'deleteVictimRaw',
    behaviour: "a raw DELETE of the victim's row, by id or by org_id, affects 0 rows",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx), ctx.pick);
      if (!target) return 'skipped';
      const table = TABLE_OF[target.kind];
      const counts = await inAttacker(ctx, async (tx) => ({
        byId: (await tx.query(`delete from ${table} where ${KEY_COLUMN[table]} = $1`, [target.id])).rowCount,
        byOrg: (await tx.query(`delete from ${table} where org_id = $1`, [ctx.victim.id])).rowCount,
        apiKeys: (await tx.query('delete from api_keys where org_id = $1', [ctx.victim.id])).rowCount,
      }));
      expect(counts).toEqual({ byId: 0, byOrg: 0, apiKeys: 0 });
      return 'ran';
    },
  },
  {
    name: 'deleteVictimRepo',
    behaviour: "a repository delete of the victim's row by id is refused with NOT_FOUND",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx), ctx.pick);
      if (!target) return 'skipped';
      await refusal(
        inAttacker(ctx, async (tx) => {
          switch (target.kind) {
            case 'users':
              return tx.users.softDelete(target.id);
            case 'workflows':
              return tx.workflows.delete(target.id);
            case 'tasks':
              return tx.tasks.delete(target.id);
            case 'schedules':
              return ctx.variant % 2 === 0 ? tx.schedules.delete(target.id) : tx.schedules.softDelete(target.id);
          }
        }),
        'NOT_FOUND',
        ctx,
      );
      return 'ran';
    },
  },
  {
    name: 'readVictimById',
    behaviour: "reading the victim's row by id (or a victim user by email) is refused with NOT_FOUND, and raw SQL finds nothing",
    async run(ctx) {
      const target = pickFrom(victimTargets(ctx), ctx.pick);
      if (!target) return 'skipped';
      const table = TABLE_OF[target.kind];
      await refusal(
        inAttacker(ctx, async (tx) => {
          switch (target.kind) {
            case 'users':
              return tx.users.get(target.id, { includeDeleted: true });
            case 'workflows':
              return tx.workflows.get(target.id);
            case 'tasks':
              return tx.tasks.get(target.id);
            case 'schedules':
              return tx.schedules.get(target.id, { includeDeleted: true });
          }
        }),
        'NOT_FOUND',
        ctx,
      );
      const raw = await inAttacker(ctx, (tx) => tx.query(`select * from ${table} where ${KEY_COLUMN[table]} = $1`, [target.id]));
      expect(raw.rows).toEqual([]);
      const email = pickFrom([...dataOf(ctx.model, ctx.victim.id).users.values()], ctx.pick);
      const ownEmails = new Set(dataOf(ctx.model, ctx.attacker.id).users.values());
      if (email && !ownEmails.has(email))
        await refusal(
          inAttacker(ctx, (tx) => tx.users.getByEmail(email)),
          'NOT_FOUND',
          ctx,
        );
      return 'ran';
    },
  },
  {
    name: 'moveOwnRowToVictim',
    behaviour: "UPDATE ... SET org_id = <victim> on the attacker's own row is refused with FORBIDDEN (and the scope rolls back)",
    async run(ctx) {
      const kind = (['users', 'workflows', 'tasks', 'schedules'] as const)[ctx.variant % 4]!;
      await refusal(
        inAttacker(ctx, async (tx) => {
          let id: string;
          if (kind === 'users') {
            id = (await tx.users.create({ email: `mover-${tag()}@attacker.example`, role: 'customer' })).id;
          } else if (kind === 'schedules') {
            id = (await tx.schedules.create({ workflowId: 'mover', cronExpression: '@daily' })).id;
          } else {
            const workflow = await tx.workflows.upsert({ workflowExecId: randomUUID(), workflowId: 'mover', status: 'running' });
            id = workflow.workflowExecId;
            if (kind === 'tasks') {
              const task = await tx.tasks.upsert({
                taskExecId: randomUUID(),
                taskId: 'mover',
                workflowExecId: id,
                workflowId: 'mover',
                component: 'task',
                status: 'running',
              });
              id = task.taskExecId;
            }
          }
          const table = TABLE_OF[kind];
          return tx.query(`update ${table} set org_id = $1 where ${KEY_COLUMN[table]} = $2`, [ctx.victim.id, id]);
        }),
        'FORBIDDEN',
        ctx,
      );
      return 'ran';
    },
  },
  {
    name: 'upsertOntoVictimWorkflow',
    behaviour: "tx.workflows.upsert with the victim's workflow_exec_id creates (or updates) the attacker's own row only",
    async run(ctx) {
      const target = pickFrom([...dataOf(ctx.model, ctx.victim.id).workflows.keys()], ctx.pick);
      if (!target) return 'skipped';
      const status = STATUSES[ctx.variant % STATUSES.length]!;
      const state = await inAttacker(ctx, (tx) =>
        tx.workflows.upsert({ workflowExecId: target, workflowId: 'hijack', status, input: { hijack: true }, output: { hijack: true } }),
      );
      expect(state.orgId).toBe(ctx.attacker.id);
      expect(state.workflowExecId).toBe(target);
      expect(state.status).toBe(status);
      dataOf(ctx.model, ctx.attacker.id).workflows.set(target, status);
      return 'ran';
    },
  },
  {
    name: 'upsertOntoVictimTaskId',
    behaviour: "tx.tasks.upsert with the victim's task_exec_id creates (or updates) the attacker's own row only",
    async run(ctx) {
      const attacker = dataOf(ctx.model, ctx.attacker.id);
      const target = pickFrom([...dataOf(ctx.model, ctx.victim.id).tasks.keys()], ctx.pick);
      const ownWorkflow = pickFrom([...attacker.workflows.keys()], ctx.pick);
      if (!target || !ownWorkflow) return 'skipped';
      const status = STATUSES[ctx.variant % STATUSES.length]!;
      const task = await inAttacker(ctx, (tx) =>
        tx.tasks.upsert({
          taskExecId: target,
          taskId: 'hijack',
          workflowExecId: ownWorkflow,
          workflowId: 'hijack',
          component: 'task',
          status,
        }),
      );
      expect(task.orgId).toBe(ctx.attacker.id);
      expect(task.taskExecId).toBe(target);
      const existing = attacker.tasks.get(target);
      attacker.tasks.set(target, existing ? { ...existing, status } : { workflowExecId: ownWorkflow, parent: null, status });
      return 'ran';
    },
  },
];

/** Runs one attack and requires the victim's rows to be exactly as they were. */
async function runAttack(attack: Attack, ctx: AttackContext): Promise<AttackOutcome> {
  const before = await snapshot(ctx.store, ctx.victim.id);
  const outcome = await attack.run(ctx);
  expect(await snapshot(ctx.store, ctx.victim.id), `${attack.name} changed the victim's rows`).toEqual(before);
  return outcome;
}

// ---------------------------------------------------------------------------------------------
// Generated operations.

const ORG_COUNT = 3;
const org = fc.integer({ min: 0, max: ORG_COUNT - 1 });
const pick = fc.nat({ max: 10_000 });
const status = fc.constantFrom(...STATUSES);

type Op =
  | { kind: 'createUser'; org: number; role: 'admin' | 'manager' | 'customer' }
  | { kind: 'upsertWorkflow'; org: number; id: number; status: ExecutionStatus }
  | { kind: 'upsertTask'; org: number; id: number; workflow: number; parent: number | null; status: ExecutionStatus }
  | { kind: 'createSchedule'; org: number; cron: string }
  | { kind: 'updateWorkflowStatus'; org: number; pick: number; status: ExecutionStatus }
  | { kind: 'deleteWorkflow'; org: number; pick: number }
  | { kind: 'softDeleteSchedule'; org: number; pick: number }
  | { kind: 'attack'; attacker: number; victimOffset: number; attack: number; pick: number; variant: number };

const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('createUser' as const),
      org,
      role: fc.constantFrom('admin' as const, 'manager' as const, 'customer' as const),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('upsertWorkflow' as const), org, id: pick, status }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('upsertTask' as const),
      org,
      id: pick,
      workflow: pick,
      parent: fc.option(pick, { nil: null }),
      status,
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('createSchedule' as const),
      org,
      cron: fc.constantFrom('@hourly', '0 2 * * *', '*/5 * * * *', '0 0 1 * * *'),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('updateWorkflowStatus' as const), org, pick, status }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deleteWorkflow' as const), org, pick }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('softDeleteSchedule' as const), org, pick }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('attack' as const),
      attacker: org,
      victimOffset: fc.integer({ min: 1, max: ORG_COUNT - 1 }),
      attack: fc.nat({ max: ATTACKS.length - 1 }),
      pick,
      variant: fc.integer({ min: 0, max: 59 }),
    }),
  },
);

const scenarioArbitrary = fc.record({
  // Small pools, so that organizations keep meeting each other's execution ids.
  workflowIds: fc.uniqueArray(fc.uuid(), { minLength: 3, maxLength: 5 }),
  taskIds: fc.uniqueArray(fc.uuid(), { minLength: 4, maxLength: 8 }),
  /** Two organizations that both start with the first pooled workflow execution id. */
  sharedBy: fc.tuple(org, fc.integer({ min: 1, max: ORG_COUNT - 1 })),
  pageSize: fc.constantFrom(2, 3, 50),
  ops: fc.array(opArbitrary, { minLength: 5, maxLength: 20 }),
});

interface Stats {
  cases: number;
  steps: number;
  skipped: number;
  ops: Record<string, number>;
  attacks: Record<string, number>;
  crossOrgReuse: number;
}

// ---------------------------------------------------------------------------------------------

describe.each(withCitus(backends))('tenant isolation on $name', (backend) => {
  // Citus: every statement is a distributed transaction; fewer runs keep the tier within CI's time.
  const numRuns = { pglite: 25, postgres: 40, citus: 6 }[backend.name];
  let t: TestDatabase;
  let store: Store;
  let sessionUser: string;
  /** The three organizations of the property. */
  const orgs: Org[] = [];
  /** Two organizations with fixed data, for the explicit cases. */
  let victim: Org;
  let attacker: Org;
  const fixture: Model = new Map();

  beforeAll(async () => {
    t = await backend.createMigrated();
    store = await storeOver(t.db);
    sessionUser = (await store.db.query<{ user: string }>('select session_user as user')).rows[0]!.user;
    tenantTables = (await store.db.query<{ name: string }>(TENANT_TABLES_SQL)).rows.map((row) => row.name);
    const run = tag();
    for (const label of ['Alpha', 'Beta', 'Gamma']) {
      const created = await store.organizations.create({ name: `Isolation ${label} ${run}` });
      orgs.push({ id: created.id, name: created.name });
    }
    const victimOrg = await store.organizations.create({ name: `Victim Corp ${run}` });
    const attackerOrg = await store.organizations.create({ name: `Attacker Corp ${run}` });
    victim = { id: victimOrg.id, name: victimOrg.name };
    attacker = { id: attackerOrg.id, name: attackerOrg.name };

    // The fixture: both organizations use the workflow execution id `shared` (two rows).
    const shared = randomUUID();
    for (const [who, local] of [
      [victim, 'victim'],
      [attacker, 'attacker'],
    ] as const) {
      const data = dataOf(fixture, who.id);
      await withOrgSql(store, who.id, async (tx) => {
        for (const name of ['ada', 'grace']) {
          const user = await tx.users.create({ email: `${name}.${run}@${local}.example`, role: 'admin' });
          data.users.set(user.id, user.email);
        }
        const own = randomUUID();
        for (const [id, state] of [
          [shared, local === 'victim' ? 'success' : 'running'],
          [own, 'paused'],
        ] as const) {
          await tx.workflows.upsert({
            workflowExecId: id,
            workflowId: `${local}-flow`,
            status: state,
            input: { secret: `${local} input` },
          });
          data.workflows.set(id, state);
        }
        const parent = await tx.tasks.upsert({
          taskExecId: randomUUID(),
          taskId: 'root',
          workflowExecId: own,
          workflowId: `${local}-flow`,
          component: 'task',
          status: 'running',
        });
        const child = await tx.tasks.upsert({
          taskExecId: randomUUID(),
          taskId: 'child',
          workflowExecId: shared,
          workflowId: `${local}-flow`,
          component: 'tool',
          status: 'waiting',
          parentStateId: parent.taskExecId,
        });
        data.tasks.set(parent.taskExecId, { workflowExecId: own, parent: null, status: 'running' });
        data.tasks.set(child.taskExecId, { workflowExecId: shared, parent: parent.taskExecId, status: 'waiting' });
        const live = await tx.schedules.create({ workflowId: `${local}-flow`, cronExpression: '0 3 * * *', timezone: 'Europe/Paris' });
        const gone = await tx.schedules.create({ workflowId: `${local}-flow`, cronExpression: '@daily' });
        await tx.schedules.softDelete(gone.id);
        data.schedules.set(live.id, false).set(gone.id, true);
        // One raw row, so that api_keys is not empty (the model only counts API keys).
        const owner = [...data.users.keys()][0]!;
        await tx.query(`insert into api_key_prefixes (prefix) values ($1)`, [`${local}${run}`]);
        await tx.query(
          `insert into api_keys (user_id, prefix, key_hash, name) values ($1, $2, sha256(convert_to($2, 'UTF8')), 'fixture key')`,
          [owner, `${local}${run}`],
        );
        data.apiKeys = 1;
      });
    }
  });

  afterAll(async () => {
    // store.close() closes t.db; t.dispose() closes it again, which is harmless (Database.close
    // is idempotent, see connection/database.ts), and then drops the server database.
    await store?.close();
    await t?.dispose();
  });

  it('the raw SQL checks cover every table with an org_id that app_tenant can read, the five tenant tables among them', () => {
    expect(tenantTables).toEqual(expect.arrayContaining([...TENANT_TABLES]));
  });

  it('random operations across three organizations: every scope reads exactly its own rows after every step, and attacks change nothing of the victim', async () => {
    const stats: Stats = { cases: 0, steps: 0, skipped: 0, ops: {}, attacks: {}, crossOrgReuse: 0 };
    const orgIds = orgs.map((o) => o.id);
    let emailCounter = 0;

    await fc.assert(
      fc.asyncProperty(scenarioArbitrary, async (scenario) => {
        stats.cases += 1;
        // Every case starts from empty organizations (deleted through their own scopes).
        for (const o of orgs) {
          await withOrgSql(store, o.id, async (tx) => {
            for (const table of ['task_states', 'workflow_states', 'schedules', 'api_keys', 'users'])
              await tx.query(`delete from ${table}`);
          });
        }
        const model: Model = new Map();
        const workflowIds = scenario.workflowIds.map((id) => id.toLowerCase());
        const taskIds = scenario.taskIds.map((id) => id.toLowerCase());
        const [first, offset] = scenario.sharedBy;
        const ops: Op[] = [
          { kind: 'upsertWorkflow', org: first, id: 0, status: 'running' },
          { kind: 'upsertWorkflow', org: (first + offset) % ORG_COUNT, id: 0, status: 'pending' },
          ...scenario.ops,
        ];

        for (const op of ops) {
          stats.steps += 1;
          stats.ops[op.kind] = (stats.ops[op.kind] ?? 0) + 1;
          let outcome: AttackOutcome;
          if (op.kind === 'attack') {
            const attack = ATTACKS[op.attack]!;
            outcome = await runAttack(attack, {
              store,
              model,
              attacker: orgs[op.attacker]!,
              victim: orgs[(op.attacker + op.victimOffset) % ORG_COUNT]!,
              pick: op.pick,
              variant: op.variant,
            });
            if (outcome === 'ran') stats.attacks[attack.name] = (stats.attacks[attack.name] ?? 0) + 1;
          } else {
            const orgId = orgs[op.org]!.id;
            const data = dataOf(model, orgId);
            outcome = await withOrgAsserting(store, orgId, async (tx): Promise<AttackOutcome> => {
              switch (op.kind) {
                case 'createUser': {
                  const user = await tx.users.create({ email: `user${++emailCounter}@org${op.org}.example`, role: op.role });
                  expect(user.orgId).toBe(orgId);
                  data.users.set(user.id, user.email);
                  return 'ran';
                }
                case 'upsertWorkflow': {
                  const id = workflowIds[op.id % workflowIds.length]!;
                  if (!data.workflows.has(id) && [...model].some(([other, d]) => other !== orgId && d.workflows.has(id)))
                    stats.crossOrgReuse += 1;
                  const state = await tx.workflows.upsert({
                    workflowExecId: id,
                    workflowId: `flow-${op.id % 7}`,
                    status: op.status,
                    input: { org: op.org },
                  });
                  expect([state.orgId, state.workflowExecId, state.status]).toEqual([orgId, id, op.status]);
                  data.workflows.set(id, op.status);
                  return 'ran';
                }
                case 'upsertTask': {
                  const workflow = pickFrom([...data.workflows.keys()], op.workflow);
                  if (!workflow) return 'skipped';
                  const id = taskIds[op.id % taskIds.length]!;
                  const parent =
                    op.parent === null
                      ? null
                      : (pickFrom(
                          [...data.tasks.keys()].filter((task) => task !== id),
                          op.parent,
                        ) ?? null);
                  const task = await tx.tasks.upsert({
                    taskExecId: id,
                    taskId: `step-${op.id % 5}`,
                    workflowExecId: workflow,
                    workflowId: 'flow',
                    component: 'task',
                    status: op.status,
                    parentStateId: parent,
                  });
                  // An upsert onto an existing task changes its status only.
                  const existing = data.tasks.get(id);
                  const expected = existing ? { ...existing, status: op.status } : { workflowExecId: workflow, parent, status: op.status };
                  expect(task.orgId).toBe(orgId);
                  expect({ workflowExecId: task.workflowExecId, parent: task.parentStateId, status: task.status }).toEqual(expected);
                  data.tasks.set(id, expected);
                  return 'ran';
                }
                case 'createSchedule': {
                  const schedule = await tx.schedules.create({ workflowId: `flow-${op.org}`, cronExpression: op.cron });
                  expect(schedule.orgId).toBe(orgId);
                  data.schedules.set(schedule.id, false);
                  return 'ran';
                }
                case 'updateWorkflowStatus': {
                  const id = pickFrom([...data.workflows.keys()], op.pick);
                  if (!id) return 'skipped';
                  const state = await tx.workflows.updateStatus(id, { status: op.status });
                  expect([state.orgId, state.status]).toEqual([orgId, op.status]);
                  data.workflows.set(id, op.status);
                  return 'ran';
                }
                case 'deleteWorkflow': {
                  const id = pickFrom([...data.workflows.keys()], op.pick);
                  if (!id) return 'skipped';
                  await tx.workflows.delete(id);
                  deleteWorkflowInModel(data, id);
                  return 'ran';
                }
                case 'softDeleteSchedule': {
                  const id = pickFrom(
                    [...data.schedules].filter(([, deleted]) => !deleted).map(([scheduleId]) => scheduleId),
                    op.pick,
                  );
                  if (!id) return 'skipped';
                  const schedule = await tx.schedules.softDelete(id);
                  expect(schedule.deletedAt).not.toBeNull();
                  data.schedules.set(id, true);
                  return 'ran';
                }
              }
            });
          }
          if (outcome === 'skipped') stats.skipped += 1;
          await assertIsolation(store, model, orgIds, scenario.pageSize);
        }
        // The default organization (which every pre-tenancy row went to) got nothing either.
        await assertIsolation(store, model, [DEFAULT_ORG_ID], scenario.pageSize);
      }),
      { numRuns },
    );

    console.info(`[${backend.name}] isolation property: ${JSON.stringify(stats)}`);
    expect(stats.cases).toBe(numRuns);
    expect(stats.crossOrgReuse, 'no workflow execution id was used by two organizations').toBeGreaterThanOrEqual(numRuns);
    expect(
      Object.values(stats.attacks).reduce((sum, n) => sum + n, 0),
      'no attack ran',
    ).toBeGreaterThan(0);
  }, 180_000);

  describe('cross-organization attacks, explicitly (attacker against victim)', () => {
    it('the fixture is isolated to begin with (listed one row per page)', async () => {
      await assertIsolation(store, fixture, [victim.id, attacker.id], 1);
    });

    for (const attack of ATTACKS) {
      it(attack.behaviour, async () => {
        for (const pickValue of [0, 1, 2, 3, 4, 5, 6, 7]) {
          const ctx: AttackContext = { store, model: fixture, attacker, victim, pick: pickValue, variant: pickValue };
          expect(await runAttack(attack, ctx), `${attack.name} found nothing to attack`).toBe('ran');
        }
        await assertIsolation(store, fixture, [victim.id, attacker.id], 50);
      });
    }
  });

  describe('pool hygiene', () => {
    const STATE_SQL =
      "select current_user, current_setting('app.org_id', true) as org, current_setting('role') as role, pg_backend_pid() as pid";

    async function connectionState(on: Store): Promise<{ user: string; org: string; role: string; pid: number }> {
      const row = (await on.db.query<{ current_user: string; org: string | null; role: string; pid: number }>(STATE_SQL)).rows[0]!;
      // An app.org_id that was only ever set LOCAL reads as '' afterwards (NULL before its first use).
      return { user: row.current_user, org: row.org ?? '', role: row.role, pid: row.pid };
    }

    it('after a scope commits, rolls back because its callback threw, or fails on a statement, the next plain query runs as the original user with no organization and no role', async () => {
      await withOneConnection(store, t, async (on) => {
        const clean = await connectionState(on);
        expect(clean).toMatchObject({ user: sessionUser, org: '', role: 'none' });
        const expectClean = async (after: string) => expect(await connectionState(on), `connection state after ${after}`).toEqual(clean);

        // Inside a scope the same query does see the scope (so the checks below can fail).
        const inside = await withOrgSql(on, victim.id, (tx) => tx.query<{ current_user: string; org: string; role: string }>(STATE_SQL));
        // The role is entered where the login is not app_tenant itself (the embedded database's superuser).
        expect(inside.rows[0]).toMatchObject({
          current_user: 'app_tenant',
          org: victim.id,
          role: backend.name === 'pglite' ? 'app_tenant' : 'none',
        });
        await expectClean('a committed read-only scope');

        const email = `hygiene-${tag()}@victim.example`;
        const created = await withOrgSql(on, victim.id, (tx) => tx.users.create({ email, role: 'manager' }));
        fixture.get(victim.id)!.users.set(created.id, created.email);
        await expectClean('a committed write');

        const boom = new Error('the callback failed');
        const thrown = await on
          .withOrg(victim.id, async (tx) => {
            await tx.users.create({ email: `rolled-back-${tag()}@victim.example`, role: 'customer' });
            throw boom;
          })
          .then(
            () => undefined,
            (error: unknown) => error,
          );
        // withOrg passes the callback's error on, as is or wrapped in a StoreError whose cause it is.
        expect(thrown === boom || (thrown instanceof StoreError && thrown.cause === boom)).toBe(true);
        await expectClean('a scope whose callback threw');

        const conflict = await withOrgSql(on, victim.id, (tx) => tx.users.create({ email, role: 'admin' })).then(
          () => undefined,
          (error: unknown) => error,
        );
        expect(conflict).toBeInstanceOf(StoreError);
        expect((conflict as StoreError).code).toBe('CONFLICT');
        await expectClean('a scope whose statement failed');

        // Nothing of the rolled-back scopes was kept.
        await assertIsolation(on, fixture, [victim.id], 50);
        await expectClean('the checks');
      });
    });

    it('a callback that swallows a failed statement: withOrg rejects with TRANSACTION_ABORTED, nothing is committed, and the connection is clean', async () => {
      await withOneConnection(store, t, async (on) => {
        const clean = await connectionState(on);
        const kept = `swallowed-${tag()}@victim.example`;
        const existing = [...fixture.get(victim.id)!.users.values()][0]!;
        const outcome = await on
          .withOrg(victim.id, async (tx) => {
            await tx.users.create({ email: kept, role: 'customer' });
            return tx.users.create({ email: existing, role: 'admin' }).then(
              () => 'created',
              (error: unknown) => (error as StoreError).code,
            );
          })
          .then(
            () => 'resolved',
            (error: unknown) => (error as StoreError).code,
          );
        // PostgreSQL would have turned the COMMIT into a silent ROLLBACK; withOrg says so.
        expect(outcome).toBe('TRANSACTION_ABORTED');
        const found = await withOrgSql(on, victim.id, (tx) =>
          tx.users.getByEmail(kept).then(
            () => true,
            () => false,
          ),
        );
        expect(found).toBe(false);
        expect(await connectionState(on)).toEqual(clean);
      });
    });

    it('concurrent scopes of different organizations on one pool each see only their own rows', async () => {
      const members = [victim, attacker, ...orgs];
      const results = await Promise.all(
        Array.from({ length: 24 }, (_, i) => {
          const who = members[i % members.length]!;
          return withOrgSql(store, who.id, async (tx) => {
            await tx.query('select pg_sleep(0.002)');
            const seen = new Set<string>();
            for (const table of tenantTables)
              for (const row of (await tx.query<{ org_id: string }>(`select org_id from ${table}`)).rows) seen.add(row.org_id);
            const setting = (await tx.query<{ org: string }>("select current_setting('app.org_id') as org")).rows[0]!.org;
            return { expected: who.id, seen: [...seen], setting };
          });
        }),
      );
      for (const result of results) {
        expect(result.setting).toBe(result.expected);
        expect(result.seen.filter((orgId) => orgId !== result.expected)).toEqual([]);
      }
      // The fixture organizations have rows, so "only their own" is not "nothing".
      expect(results.filter((result) => result.expected === victim.id).every((result) => result.seen.length === 1)).toBe(true);
    });

    it('a TrustedSqlScope kept after its callback returned (or threw) refuses every query with TENANT_SCOPE_REQUIRED', async () => {
      let kept: TrustedSqlScope | undefined;
      const count = await withOrgSql(store, victim.id, async (tx) => {
        kept = tx;
        return (await tx.query('select 1')).rowCount;
      });
      expect(count).toBe(1);
      let keptAfterThrow: TrustedSqlScope | undefined;
      await expect(
        withOrgSql(store, attacker.id, async (tx) => {
          keptAfterThrow = tx;
          throw new Error('give up');
        }),
      ).rejects.toThrow();
      for (const scope of [kept!, keptAfterThrow!]) {
        const attempts: Array<() => Promise<unknown>> = [
          () => scope.query('select org_id from users'),
          () => scope.users.list(),
          () => scope.workflows.list(),
          () => scope.tasks.list(),
          () => scope.schedules.list({ includeDeleted: true }),
          () => scope.users.create({ email: `late-${tag()}@victim.example`, role: 'admin' }),
          () => scope.workflows.upsert({ workflowExecId: randomUUID(), workflowId: 'late', status: 'running' }),
        ];
        for (const attempt of attempts)
          await expect(attempt()).rejects.toMatchObject({ name: 'StoreError', code: 'TENANT_SCOPE_REQUIRED' });
      }
      await assertIsolation(store, fixture, [victim.id, attacker.id], 50);
    });
  });

  describe('no organization in scope means no rows', () => {
    it('as app_tenant without app.org_id, every tenant table reads as empty although rows exist, and an insert is refused by row-level security', async () => {
      const existing = await withOrgSql(store, victim.id, async (tx) => {
        const counts: Record<string, number> = {};
        for (const table of TENANT_TABLES) counts[table] = (await tx.query(`select 1 from ${table}`)).rows.length;
        return counts;
      });
      for (const table of TENANT_TABLES) expect(existing[table], `the fixture has no ${table}`).toBeGreaterThan(0);

      const outcome = await store.db.withSession(async (session) => {
        await session.exec('begin; set local role app_tenant');
        try {
          const counts: Record<string, number> = {};
          for (const table of [...tenantTables, 'organizations']) {
            counts[table] = (await session.query<{ n: number }>(`select count(*)::int as n from ${table}`)).rows[0]!.n;
          }
          const insertError = await session.query(`insert into users (email, role) values ('nobody@nowhere.example', 'admin')`).then(
            () => undefined,
            (error: unknown) => error,
          );
          return { counts, insertError };
        } finally {
          await session.exec('rollback');
        }
      });
      expect(outcome.counts).toEqual(Object.fromEntries([...tenantTables, 'organizations'].map((table) => [table, 0])));
      // org_id defaults to requested_org_id(), NULL here. The policy's WITH CHECK runs before the
      // NOT NULL constraint, so the refusal is row-level security (42501), not 23502; Citus
      // refuses sooner, as it cannot route a row without an organization (22004).
      expect(databaseErrorFields(outcome.insertError)?.code).toBe(backend.name === 'citus' ? '22004' : '42501');
      expect(toStoreError(outcome.insertError).code).toBe('FORBIDDEN');
    });

    it('through the store API with app.org_id cleared inside a scope: lists are empty, and writes are FORBIDDEN', async () => {
      // SET LOCAL, which (unlike set_config) also reaches the workers of a Citus cluster.
      const clear = (tx: TrustedSqlScope) => tx.query(`set local app.org_id = ''`);
      const lists = await withOrgSql(store, victim.id, async (tx) => {
        await clear(tx);
        return [
          (await tx.users.list({ includeDeleted: true })).items.length,
          (await tx.workflows.list()).items.length,
          (await tx.tasks.list()).items.length,
          (await tx.schedules.list({ includeDeleted: true })).items.length,
        ];
      });
      expect(lists).toEqual([0, 0, 0, 0]);
      const writes: Array<(tx: TrustedSqlScope) => Promise<unknown>> = [
        (tx) => tx.users.create({ email: `orphan-${tag()}@nowhere.example`, role: 'admin' }),
        (tx) => tx.workflows.upsert({ workflowExecId: randomUUID(), workflowId: 'orphan', status: 'running' }),
        (tx) => tx.schedules.create({ workflowId: 'orphan', cronExpression: '@hourly' }),
      ];
      for (const write of writes) {
        await expect(
          withOrgSql(store, victim.id, async (tx) => {
            await clear(tx);
            return write(tx);
          }),
        ).rejects.toMatchObject({ code: 'FORBIDDEN' });
      }
      await assertIsolation(store, fixture, [victim.id], 50);
    });

    it('withOrg refuses a missing organization id (TENANT_SCOPE_REQUIRED) and an empty one (INVALID_INPUT); an unknown one reads nothing and cannot write (ORG_INACTIVE)', async () => {
      await expect(withOrgSql(store, undefined as unknown as string, async () => 'ran')).rejects.toMatchObject({
        code: 'TENANT_SCOPE_REQUIRED',
      });
      await expect(withOrgSql(store, '', async () => 'ran')).rejects.toMatchObject({ code: 'INVALID_INPUT', details: { field: 'orgId' } });
      const unknown = randomUUID();
      const seen = await withOrgSql(store, unknown, async (tx) => {
        let rows = 0;
        for (const table of [...tenantTables, 'organizations']) rows += (await tx.query(`select 1 from ${table}`)).rows.length;
        return rows;
      });
      expect(seen).toBe(0);
      await expect(
        withOrgSql(store, unknown, (tx) => tx.users.create({ email: 'ghost@nowhere.example', role: 'admin' })),
      ).rejects.toMatchObject({
        code: 'ORG_INACTIVE',
      });
    });
  });

  // SQL text as app_tenant in a scope (what an injected query would run; the public API takes
  // none, see test/tenant-boundary.test.ts): the database's own constraints and the session reset.
  describe('SQL text as app_tenant in a scope', () => {
    const inAttackerScope = <T>(work: (tx: TrustedSqlScope) => Promise<T>) => withOrgSql(store, attacker.id, work);
    it("API key prefixes are unique across organizations: a raw insert of the victim's prefix in the attacker's scope fails with CONFLICT, naming nothing of the victim's", async () => {
      const [victimKey] = (
        await withOrgSql(store, victim.id, (tx) => tx.query<{ prefix: string; user_id: string }>('select prefix, user_id from api_keys'))
      ).rows;
      const ownUser = [...fixture.get(attacker.id)!.users.keys()][0]!;
      const ctx: AttackContext = { store, model: fixture, attacker, victim, pick: 0, variant: 0 };
      const keyRow = (tx: TrustedSqlScope, prefix: string) =>
        tx.query(
          `insert into api_keys (user_id, prefix, key_hash, name) values ($1, $2, sha256(convert_to($2 || 'probe', 'UTF8')), 'probe')`,
          [ownUser, prefix],
        );
      const insertKey = (prefix: string) =>
        inAttackerScope(async (tx) => {
          await tx.query('insert into api_key_prefixes (prefix) values ($1)', [prefix]);
          return keyRow(tx, prefix);
        });
      // The refusal is itself the answer "this prefix exists in some organization" (the
      // registry is global, not per organization); the error carries no more than that.
      const error = await refusal(insertKey(victimKey!.prefix), 'CONFLICT', ctx);
      expect(error.details).toEqual({ field: 'prefix', reason: 'api_key_prefixes_pkey' });
      // A key row under the victim's prefix, without registering it, refers to no prefix of the
      // attacker's organization.
      const unregistered = await refusal(
        inAttackerScope((tx) => keyRow(tx, victimKey!.prefix)),
        'NOT_FOUND',
        ctx,
      );
      expect(unregistered.details).toEqual({ field: 'prefix', reason: 'api_keys_prefix_fkey' });
      // The same statement with a prefix nobody has goes in.
      const fresh = await insertKey(`probe${tag()}`);
      expect(fresh.rowCount).toBe(1);
      fixture.get(attacker.id)!.apiKeys += 1;
      await assertIsolation(store, fixture, [victim.id, attacker.id], 50);
    });

    it('a session-level SET ROLE or set_config(..., false) issued through raw SQL does not outlive its scope on the pooled connection', async () => {
      await withOneConnection(store, t, async (on) => {
        for (const ending of ['commit', 'rollback'] as const) {
          await withOrgSql(on, attacker.id, async (tx) => {
            await tx.query('set role app_tenant');
            await tx.query(`select set_config('app.org_id', $1, false)`, [victim.id]);
            if (ending === 'rollback') throw new Error('the callback fails');
          }).catch(() => undefined);
          const state = (
            await on.db.query<{ current_user: string; org: string | null; role: string }>(
              "select current_user, current_setting('app.org_id', true) as org, current_setting('role') as role",
            )
          ).rows[0]!;
          expect(state.current_user, ending).toBe(sessionUser);
          expect(state.role, ending).toBe('none');
          expect(state.org ?? '', ending).toBe('');
        }
      });
    });

    it("the same when the raw SQL comes after the store's own statements (a scope of prepared statements alone commits without a reset)", async () => {
      await withOneConnection(store, t, async (on) => {
        const scope = withOrgSql(on, attacker.id, async (tx) => {
          await tx.workflows.list({ limit: 1 });
          await tx.query(`select set_config('app.org_id', $1, false)`, [victim.id]);
          await tx.query('set role app_tenant');
          return (await tx.workflows.list({ limit: 1 })).items.map((workflow) => workflow.orgId);
        });
        if (backend.name === 'citus') {
          // set_config() does not reach the workers, which go on with the attacker's own scope.
          expect(new Set(await scope)).toEqual(new Set([attacker.id]));
        } else {
          // The victim's id with the attacker's token: refused, and rolled back.
          await expect(scope).rejects.toMatchObject({ code: 'FORBIDDEN', details: { reason: 'scope_not_signed' } });
        }
        const state = (
          await on.db.query<{ current_user: string; org: string | null; role: string }>(
            "select current_user, current_setting('app.org_id', true) as org, current_setting('role') as role",
          )
        ).rows[0]!;
        expect(state).toMatchObject({ current_user: sessionUser, role: 'none' });
        expect(state.org ?? '').toBe('');
      });
    });
  });
});
