/**
 * The hot queries use the indexes they were designed for (PostgreSQL only: PGlite's planner is
 * PostgreSQL's, but the point here is the server's plans on realistic volumes).
 *
 * A few organizations get 20,000 workflow states, 20,000 task states, 2,000 users, 2,000 API keys
 * and 6,000 usage counters between them, written as the owner with generate_series, then ANALYZE.
 * Each query is then EXPLAINed (FORMAT JSON) where it runs: the repositories' queries inside a
 * tenant scope (`withOrg`, as app_tenant, row-level security supplying org_id), the key
 * verification lookups as the owner and as app_key_verifier (whose role verify_api_key runs in).
 * The repositories' SQL is not copied: it is captured by running the repository over a recording
 * connection, so a change to the SQL is what gets checked. A failing assertion prints the plan.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../../engine/infra/store/connection/database.ts';
import { openStore, type Store } from '../../engine/infra/store/store.ts';
import { TaskStatesRepository } from '../../engine/infra/store/repositories/tasks.ts';
import { UsersRepository } from '../../engine/infra/store/repositories/users.ts';
import { WorkflowStatesRepository } from '../../engine/infra/store/repositories/workflows.ts';
import { recordStatements } from '../support/statement-recorder.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { withOrgSql } from '../support/trusted-sql.ts';

const ORGS = 4;
const WORKFLOWS_PER_ORG = 5_000;
const TASKS_PER_ORG = 5_000; // 5 tasks on each of the first 1,000 workflows
const USERS_PER_ORG = 500;
const KEYS_PER_ORG = 500;
const WINDOWS_PER_KEY = 3;

const POPULATED = ['workflow_states', 'task_states', 'users', 'api_keys', 'api_key_usage'];

const orgId = (k: number) => `10000000-0000-7000-8000-${String(k).padStart(12, '0')}`;
const ORG_SQL = `('10000000-0000-7000-8000-' || lpad(k::text, 12, '0'))::uuid`;
const ORG = orgId(2);
/** md5-derived ids, the same in SQL and here. */
const WORKFLOW_SQL = (k: string, i: string) => `md5('wf-' || ${k} || '-' || ${i})::uuid`;
const USER_SQL = (k: string, i: string) => `md5('user-' || ${k} || '-' || ${i})::uuid`;
const KEY_SQL = (k: string, i: string) => `md5('key-' || ${k} || '-' || ${i})::uuid`;

const POPULATE = `
insert into organizations (id, name, temporal_namespace)
select ${ORG_SQL}, 'Plan org ' || k, 'plan-org-' || k from generate_series(1, ${ORGS}) k;

insert into users (org_id, id, email, role, created_at)
select ${ORG_SQL}, ${USER_SQL('k', 'i')}, 'user' || i || '@org' || k || '.example',
       (array['admin', 'manager', 'customer'])[1 + i % 3], now() - i * interval '1 minute'
  from generate_series(1, ${ORGS}) k, generate_series(1, ${USERS_PER_ORG}) i;

insert into api_key_prefixes (org_id, prefix)
select ${ORG_SQL}, 'pk' || lpad(k::text, 2, '0') || lpad(i::text, 8, '0')
  from generate_series(1, ${ORGS}) k, generate_series(1, ${KEYS_PER_ORG}) i;

insert into api_keys (org_id, id, user_id, prefix, key_hash, name, created_at)
select ${ORG_SQL}, ${KEY_SQL('k', 'i')}, ${USER_SQL('k', 'i')},
       'pk' || lpad(k::text, 2, '0') || lpad(i::text, 8, '0'),
       sha256(convert_to('pk' || lpad(k::text, 2, '0') || lpad(i::text, 8, '0'), 'UTF8')),
       'key ' || i, now() - i * interval '1 minute'
  from generate_series(1, ${ORGS}) k, generate_series(1, ${KEYS_PER_ORG}) i;

insert into api_key_usage (org_id, api_key_id, window_start, request_count)
select ${ORG_SQL}, ${KEY_SQL('k', 'i')}, date_trunc('hour', now(), 'UTC') - w * interval '1 hour', 1 + i % 10
  from generate_series(1, ${ORGS}) k, generate_series(1, ${KEYS_PER_ORG}) i, generate_series(0, ${WINDOWS_PER_KEY - 1}) w;

insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, input, created_at)
select ${ORG_SQL}, ${WORKFLOW_SQL('k', 'i')}, 'workflow-' || (i % 50),
       (array['pending', 'running', 'success', 'failed'])[1 + i % 4], jsonb_build_object('n', i),
       now() - i * interval '1 second'
  from generate_series(1, ${ORGS}) k, generate_series(1, ${WORKFLOWS_PER_ORG}) i;

insert into task_states (org_id, task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, created_at)
select ${ORG_SQL}, md5('task-' || k || '-' || i)::uuid, 'task-' || (i % 5),
       ${WORKFLOW_SQL('k', '(1 + (i - 1) / 5)')}, 'workflow-' || ((1 + (i - 1) / 5) % 50), 'task',
       (array['pending', 'running', 'success', 'failed'])[1 + i % 4], now() - i * interval '1 second'
  from generate_series(1, ${ORGS}) k, generate_series(1, ${TASKS_PER_ORG}) i;

analyze;
`;

// ---------------------------------------------------------------------------------------------
// Plans

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Scan Direction'?: string;
  'Conflict Arbiter Indexes'?: string[];
  'Index Cond'?: string;
  Filter?: string;
  Plans?: PlanNode[];
  [key: string]: unknown;
}

interface PlanSummary {
  nodeTypes: string[];
  /** Indexes scanned (Index Scan, Index Only Scan, Bitmap Index Scan) and ON CONFLICT arbiters. */
  indexes: string[];
  /** Tables read by a Seq Scan. */
  seqScans: string[];
  /** The plan as indented text, for failure messages. */
  text: string;
}

/** Walks EXPLAIN (FORMAT JSON) output and collects node types and index names. */
function summarize(explain: unknown): PlanSummary {
  const root = (explain as Array<{ Plan: PlanNode }>)[0]!.Plan;
  const summary: PlanSummary = { nodeTypes: [], indexes: [], seqScans: [], text: '' };
  const lines: string[] = [];
  const walk = (node: PlanNode, depth: number) => {
    summary.nodeTypes.push(node['Node Type']);
    if (node['Index Name']) summary.indexes.push(node['Index Name']);
    for (const arbiter of node['Conflict Arbiter Indexes'] ?? []) summary.indexes.push(arbiter);
    if (node['Node Type'] === 'Seq Scan' && node['Relation Name']) summary.seqScans.push(node['Relation Name']);
    const details = [
      node['Scan Direction'] && node['Scan Direction'] !== 'Forward' ? node['Scan Direction'] : undefined,
      node['Index Name'] ? `using ${node['Index Name']}` : undefined,
      node['Relation Name'] ? `on ${node['Relation Name']}` : undefined,
      node['Conflict Arbiter Indexes'] ? `arbiters ${node['Conflict Arbiter Indexes'].join(', ')}` : undefined,
      node['Index Cond'] ? `index cond ${node['Index Cond']}` : undefined,
      node.Filter ? `filter ${node.Filter}` : undefined,
    ].filter(Boolean);
    lines.push(`${'  '.repeat(depth)}${node['Node Type']}${details.length ? ` (${details.join('; ')})` : ''}`);
    for (const child of node.Plans ?? []) walk(child, depth + 1);
  };
  walk(root, 0);
  summary.text = lines.join('\n');
  return summary;
}

function expectPlan(what: string, plan: PlanSummary, expected: { index: string; noSort?: boolean }): void {
  if (process.env.SHOW_PLANS) console.log(`${what}:\n${plan.text}\n`);
  const message = `${what}: expected ${expected.index}${expected.noSort ? ' and no Sort' : ''} and no Seq Scan on a populated table; the plan:\n${plan.text}`;
  expect(plan.indexes, message).toContain(expected.index);
  expect(
    plan.seqScans.filter((table) => POPULATED.includes(table)),
    message,
  ).toEqual([]);
  if (expected.noSort) expect(plan.nodeTypes, message).not.toContain('Sort');
}

// ---------------------------------------------------------------------------------------------
// The repositories' SQL, captured

interface Captured {
  sql: string;
  params: unknown[];
}

/** Runs `call` on a repository over a connection that records its statements and returns no rows. */
async function capture<Repository>(
  make: (db: Queryable) => Repository,
  call: (repository: Repository) => Promise<unknown>,
): Promise<Captured> {
  const statements = await recordStatements((db) => call(make(db)));
  expect(statements, 'the repository ran exactly one statement').toHaveLength(1);
  return statements[0]!;
}

/**
 * EXPLAIN in a tenant scope of `org`, as the application runs the statement: prepared, and planned
 * for any values (the scope asks for generic plans), so the plan checked is the one the store
 * executes, not one made for these particular values.
 */
let probes = 0;
function explainInScope(store: Store, org: string, statement: Captured): Promise<PlanSummary> {
  return withOrgSql(store, org, async (tx) => {
    // The scope's first statement travels in a pipeline (extended protocol), where PREPARE's
    // own $n would be taken for the pipeline's parameters: PREPARE goes second, as a script.
    const { rows: mode } = await tx.query<{ plan_cache_mode: string }>(`select current_setting('plan_cache_mode') as plan_cache_mode`);
    expect(mode[0]!.plan_cache_mode, 'the scope plans generically').toBe('force_generic_plan');
    // A name of its own per check: a prepared statement outlives a failed transaction.
    const probe = `plan_probe_${(probes += 1)}`;
    await tx.query(`prepare ${probe} as ${statement.sql}`);
    // EXPLAIN EXECUTE takes no protocol parameters: the values go in as literals (a generic
    // plan does not look at them).
    const args = statement.params.map((value) => (value === null ? 'null' : pg.escapeLiteral(String(value)))).join(', ');
    const { rows } = await tx.query<{ 'QUERY PLAN': unknown }>(`explain (format json) execute ${probe}${args ? `(${args})` : ''}`);
    await tx.query(`deallocate ${probe}`);
    return summarize(rows[0]!['QUERY PLAN']);
  });
}

describe.skipIf(!serverUrl)('query plans on PostgreSQL', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let store: Store;

  const explainInOrg = (statement: Captured) => explainInScope(store, ORG, statement);

  /** EXPLAIN as the owner, or (in a transaction that is rolled back) as another role. */
  const explainAs = (role: 'owner' | 'app_key_verifier', sql: string, params: unknown[]) =>
    store.db.withSession(async (session) => {
      await session.exec(`begin; ${role === 'owner' ? '' : `set local role ${role};`}`);
      try {
        return summarize((await session.query<{ 'QUERY PLAN': unknown }>(`explain (format json) ${sql}`, params)).rows[0]!['QUERY PLAN']);
      } finally {
        await session.exec('rollback');
      }
    });

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    store = await openStore({ url: server.url, poolSize: 2 });
    await store.db.exec(POPULATE);
  });

  afterAll(async () => {
    await store?.close();
    await server?.drop();
  });

  it('has the rows it plans against', async () => {
    const { rows } = await store.db.query<{ workflows: string; tasks: string; users: string; keys: string; usage: string }>(
      `select (select count(*) from workflow_states) as workflows, (select count(*) from task_states) as tasks,
              (select count(*) from users) as users, (select count(*) from api_keys) as keys, (select count(*) from api_key_usage) as usage`,
    );
    const counts = Object.fromEntries(Object.entries(rows[0]!).map(([name, count]) => [name, Number(count)]));
    expect(counts).toEqual({ workflows: 20_000, tasks: 20_000, users: 2_000, keys: 2_000, usage: 6_000 });
    const page = await store.withOrg(ORG, (tx) => tx.workflows.list({ limit: 10 }));
    expect(page.items).toHaveLength(10);
    expect(page.items.every((item) => item.orgId === ORG)).toBe(true);
  });

  it('lists workflows newest first, page 1, by an ordered scan of workflow_states_org_id_created_at_idx', async () => {
    const statement = await capture(
      (db) => new WorkflowStatesRepository(db, ORG),
      (repository) => repository.list({ limit: 50 }),
    );
    expectPlan('workflow list, page 1', await explainInOrg(statement), { index: 'workflow_states_org_id_created_at_idx', noSort: true });
  });

  it('lists a later workflow page (keyset) by the same index', async () => {
    const first = await store.withOrg(ORG, (tx) => tx.workflows.list({ limit: 50 }));
    let after = first.nextCursor!;
    for (let page = 0; page < 20; page++) after = (await store.withOrg(ORG, (tx) => tx.workflows.list({ limit: 50, after }))).nextCursor!;
    const statement = await capture(
      (db) => new WorkflowStatesRepository(db, ORG),
      (repository) => repository.list({ limit: 50, after }),
    );
    expect(statement.sql).toMatch(/\(created_at, workflow_exec_id\) </);
    expectPlan('workflow list, keyset page 22', await explainInOrg(statement), {
      index: 'workflow_states_org_id_created_at_idx',
      noSort: true,
    });
  });

  it('lists a workflow filtered by status by the created_at index too', async () => {
    const statement = await capture(
      (db) => new WorkflowStatesRepository(db, ORG),
      (repository) => repository.list({ limit: 50, status: 'running' }),
    );
    const plan = await explainInOrg(statement);
    const message = `workflow list by status: the plan:\n${plan.text}`;
    expect(
      plan.seqScans.filter((table) => POPULATED.includes(table)),
      message,
    ).toEqual([]);
    expect(
      plan.indexes.some((index) => index.startsWith('workflow_states_org_id_')),
      message,
    ).toBe(true);
  });

  it('gets a workflow by id by workflow_states_pkey', async () => {
    const statement = await capture(
      (db) => new WorkflowStatesRepository(db, ORG),
      (repository) => repository.get('d2f1a0c4-8c1e-4f3b-9a51-6c0e2a7b9f10'),
    );
    const { rows } = await store.db.query<{ id: string }>(`select ${WORKFLOW_SQL('2', '1234')} as id`);
    statement.params = [rows[0]!.id, ORG];
    expectPlan('workflow by id', await explainInOrg(statement), { index: 'workflow_states_pkey' });
  });

  it("lists a workflow's tasks by task_states_org_id_workflow_exec_id_idx (or the created_at index)", async () => {
    const { rows } = await store.db.query<{ id: string }>(`select ${WORKFLOW_SQL('2', '17')} as id`);
    const statement = await capture(
      (db) => new TaskStatesRepository(db, ORG),
      (repository) => repository.list({ workflowExecId: rows[0]!.id, limit: 50 }),
    );
    const plan = await explainInOrg(statement);
    const message = `task list by workflow: the plan:\n${plan.text}`;
    expect(
      plan.seqScans.filter((table) => POPULATED.includes(table)),
      message,
    ).toEqual([]);
    expect(
      plan.indexes.filter((index) => ['task_states_org_id_workflow_exec_id_idx', 'task_states_org_id_created_at_idx'].includes(index)),
      message,
    ).not.toEqual([]);
    // Five matching rows: the workflow index, then a sort of five, is the plan to expect.
    expect(plan.indexes, message).toContain('task_states_org_id_workflow_exec_id_idx');
  });

  // Inside a tenant scope row-level security admits a condition into an index scan only if its
  // functions are LEAKPROOF; lower(email) is not, hence the stored email_lower column, compared
  // with texteq (leakproof) against lower($1) (no column inside).
  it('finds a user by email by users_org_id_email_key inside a tenant scope', async () => {
    const statement = await capture(
      (db) => new UsersRepository(db, ORG),
      (repository) => repository.getByEmail('User123@org2.example'),
    );
    expectPlan('user by email', await explainInOrg(statement), { index: 'users_org_id_email_key' });
  });

  // The two lookups of verify_api_key (migration 20261128140000), with p_prefix as $1 and the
  // organization (the caller's, or the one the first finds) as $2.
  const VERIFY_ORG_LOOKUP = 'select p.org_id from api_key_prefixes p where p.prefix = $1';
  const VERIFY_LOOKUP = `
    select k.org_id, k.id, k.user_id, k.key_hash, k.status, k.expires_at, k.deleted_at,
           k.rate_limit_per_hour, k.last_used_at, u.role, u.status as user_status,
           u.deleted_at as user_deleted_at, o.status as org_status, o.deleted_at as org_deleted_at,
           case when k.scopes is null then coalesce(r.permissions, '{}')
                else array(select p from unnest(r.permissions) as p where p = any (k.scopes) order by p) end as granted
      from api_keys k
      join users u on u.org_id = k.org_id and u.id = k.user_id
      join organizations o on o.id = k.org_id
      left join role_grants r on r.role = u.role
     where k.org_id = $2 and k.prefix = $1`;

  it.each(['owner', 'app_key_verifier'] as const)(
    "finds an API key's organization by api_key_prefixes_pkey, then the key by api_keys_org_id_prefix_key (as %s)",
    async (role) => {
      expectPlan(`verify_api_key organization lookup as ${role}`, await explainAs(role, VERIFY_ORG_LOOKUP, ['pk0200000123']), {
        index: 'api_key_prefixes_pkey',
      });
      const plan = await explainAs(role, VERIFY_LOOKUP, ['pk0200000123', ORG]);
      expectPlan(`verify_api_key lookup as ${role}`, plan, { index: 'api_keys_org_id_prefix_key' });
      expect(plan.indexes, plan.text).toContain('users_pkey');
    },
  );

  it.each(['owner', 'app_key_verifier'] as const)('counts a request by api_key_usage_pkey (as %s)', async (role) => {
    const key = (await store.db.query<{ id: string }>(`select ${KEY_SQL('2', '123')} as id`)).rows[0]!.id;
    const window = (await store.db.query<{ w: Date }>(`select date_trunc('hour', now(), 'UTC') as w`)).rows[0]!.w;
    // The counter of verify_api_key: one INSERT ... ON CONFLICT DO UPDATE, arbitrated by the primary key.
    const count = await explainAs(
      role,
      `insert into api_key_usage as usage (org_id, api_key_id, window_start, request_count)
       values ($1, $2, $3, 1)
       on conflict on constraint api_key_usage_pkey do update
         set request_count = usage.request_count + 1
         where usage.request_count < $4
       returning usage.request_count`,
      [ORG, key, window, 1000],
    );
    expectPlan(`rate-limit counter as ${role}`, count, { index: 'api_key_usage_pkey' });
    // Its clean-up of old windows, and the throttled last_used_at touch.
    const cleanUp = await explainAs(
      role,
      `delete from api_key_usage u where u.org_id = $1 and u.api_key_id = $2 and u.window_start < $3::timestamptz - interval '1 hour'`,
      [ORG, key, window],
    );
    expectPlan(`old usage windows clean-up as ${role}`, cleanUp, { index: 'api_key_usage_pkey' });
    const touch = await explainAs(role, `update api_keys k set last_used_at = $3 where k.org_id = $1 and k.id = $2`, [ORG, key, window]);
    expectPlan(`last_used_at touch as ${role}`, touch, { index: 'api_keys_pkey' });
  });
});

/**
 * One large organization among many small ones, the usual shape of a multi-tenant store: a
 * generic plan sees only the average organization (a few rows), and used to read all of the
 * large one's rows and sort them for every page (1.25 ms against 0.135 ms for the ordered index,
 * at 2,000 rows among 1,000 organizations). The org_id statistics plan every organization as a
 * large one (migrations 20261128120000 and 20261128120100).
 */
describe.skipIf(!serverUrl)('query plans for a large organization among many small ones', () => {
  const SMALL_ORGS = 1_000;
  const LARGE_ORG = orgId(999_999);
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let store: Store;

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    store = await openStore({ url: server.url, poolSize: 2 });
    await store.db.exec(`
      insert into organizations (id, name, temporal_namespace)
      select ${ORG_SQL}, 'Small org ' || k, 'small-org-' || k from generate_series(1, ${SMALL_ORGS}) k;
      insert into organizations (id, name, temporal_namespace) values ('${LARGE_ORG}', 'Large org', 'large-org');
      insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, created_at)
      select ${ORG_SQL}, ${WORKFLOW_SQL('k', 'i')}, 'workflow-' || i, 'running', now() - i * interval '1 second'
        from generate_series(1, ${SMALL_ORGS}) k, generate_series(1, 20) i;
      insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, created_at)
      select '${LARGE_ORG}', ${WORKFLOW_SQL("'large'", 'i')}, 'workflow-' || (i % 50), 'running', now() - i * interval '1 second'
        from generate_series(1, 2000) i;
      insert into users (org_id, email, role)
      select ${ORG_SQL}, 'user' || i || '@org' || k || '.example', 'manager' from generate_series(1, ${SMALL_ORGS}) k, generate_series(1, 20) i;
      insert into users (org_id, email, role)
      select '${LARGE_ORG}', 'user' || i || '@large.example', 'customer' from generate_series(1, 2000) i;
      analyze;
    `);
  });

  afterAll(async () => {
    await store?.close();
    await server?.drop();
  });

  it("lists the large organization's workflows by an ordered index scan, with no sort of all its rows", async () => {
    const statement = await capture(
      (db) => new WorkflowStatesRepository(db, LARGE_ORG),
      (repository) => repository.list({ limit: 50 }),
    );
    expectPlan('large org workflow list', await explainInScope(store, LARGE_ORG, statement), {
      index: 'workflow_states_org_id_created_at_idx',
      noSort: true,
    });
  });

  it('lists its users by an ordered index scan too', async () => {
    const statement = await capture(
      (db) => new UsersRepository(db, LARGE_ORG),
      (repository) => repository.list({ limit: 50 }),
    );
    expectPlan('large org user list', await explainInScope(store, LARGE_ORG, statement), {
      index: 'users_org_id_created_at_idx',
      noSort: true,
    });
  });
});
