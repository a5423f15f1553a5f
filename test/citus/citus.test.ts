/**
 * The store on a real Citus cluster (TEST_CITUS_URL, started by ../shared/citus/cluster.sh):
 * distributing a populated database loses no row and changes none; the command refuses what it
 * cannot do and is idempotent; migrations still apply after distribution; every statement of an
 * organization goes to one shard (EXPLAIN: one task); key verification is exact under
 * concurrency. The tenant boundary, isolation and API key suites run on the cluster too
 * (withCitus in their files).
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { parseKey } from '../../engine/infra/store/api-keys/api-keys.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { distributeOnCitus } from '../../engine/infra/store/citus/distribute.ts';
import { openDatabase, type Database, type Queryable } from '../../engine/infra/store/connection/database.ts';
import { openStore, storeOver, type Store } from 'engine-store';
import { migrateDown, migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { MIGRATIONS_DIR } from '../../engine/infra/store/migrator/migration-files.ts';
import { UsersRepository } from '../../engine/infra/store/repositories/users.ts';
import { WorkflowStatesRepository } from '../../engine/infra/store/repositories/workflows.ts';
import { expectStoreError } from '../support/assertions.ts';
import { backdatedEvents } from '../support/audit-fixtures.ts';
import { backends, serverUrl } from '../support/backends.ts';
import { citusUrl, createCitusDatabase } from '../support/citus.ts';
import { recordStatements } from '../support/statement-recorder.ts';
import { withOrgSql } from '../support/trusted-sql.ts';
import { wrongSecretOf } from '../support/keys.ts';

const LAST_BASELINE = '20250601090200_create_schedules';
const TABLES = [
  'organizations',
  'permissions',
  'role_permissions',
  'role_grants',
  'api_key_prefixes',
  'users',
  'api_keys',
  'api_key_usage',
  'api_key_usage_saved',
  'workflow_states',
  'task_states',
  'schedules',
];

/** Every row of every table, as text, sorted: equal before and after means nothing was lost or changed. */
async function rowsOfEveryTable(db: Queryable): Promise<Record<string, string[]>> {
  const rows: Record<string, string[]> = {};
  for (const table of TABLES) {
    const result = await db.query<{ row: string }>(`select t::text as row from ${table} t`);
    rows[table] = result.rows.map((r) => r.row).sort();
  }
  return rows;
}

describe.skipIf(!citusUrl)('the store on Citus', () => {
  describe('distributing a populated single-node database', () => {
    let cluster: Awaited<ReturnType<typeof createCitusDatabase>>;
    let db: Database;

    beforeAll(async () => {
      cluster = await createCitusDatabase();
      db = await openDatabase({ url: cluster.url, poolSize: 4 });
    });

    afterAll(async () => {
      await db?.close();
      await cluster?.drop();
    });

    it('refuses while migrations are pending, naming the fix', async () => {
      await migrateUp(db, { to: LAST_BASELINE });
      const error = await expectStoreError(() => distributeOnCitus(db), 'SCHEMA_OUT_OF_DATE');
      expect(error.message).toMatch(/migrate up/);
    });

    it('keeps every row, unchanged: the engine rows of before multi-tenancy, organizations, users, keys and usage', async () => {
      // The single-tenant engine's rows, then the multi-tenancy migrations, as a deployment would have them.
      await db.exec(`
        insert into workflow_states (workflow_exec_id, workflow_id, status, input)
          select md5('wf' || i)::uuid, 'flow-' || (i % 7), 'running', jsonb_build_object('i', i) from generate_series(1, 300) i;
        insert into task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status)
          select md5('task' || i)::uuid, 'step', md5('wf' || (1 + i % 300))::uuid, 'flow-' || ((1 + i % 300) % 7), 'task', 'pending' from generate_series(1, 600) i;
        insert into schedules (workflow_id, cron_expression) select 'flow-' || i, '@hourly' from generate_series(1, 20) i;
      `);
      const store = await storeOver(db, { migrate: true });
      for (const name of ['Alpha', 'Beta', 'Gamma']) {
        const org = await store.organizations.create({ name: `Preserved ${name}` });
        const key = await store.withOrg(org.id, async (tx) => {
          const user = await tx.users.create({ email: `ops@${name.toLowerCase()}.example`, role: 'admin' });
          await tx.workflows.upsert({ workflowExecId: crypto.randomUUID(), workflowId: 'own', status: 'success' });
          return (await tx.apiKeys.issue({ userId: user.id, name: 'ci' })).key;
        });
        expect((await store.verifyApiKey(key)).ok).toBe(true);
      }
      const before = await rowsOfEveryTable(db);
      expect(before.workflow_states).toHaveLength(303);
      expect(before.task_states).toHaveLength(600);
      expect(before.api_key_usage).toHaveLength(3);

      const progress: string[] = [];
      const report = await distributeOnCitus(db, { shardCount: 4, log: (line) => progress.push(line) });
      expect(report.distributedTables).toEqual([
        'users',
        'api_keys',
        'api_key_usage',
        'api_key_usage_saved',
        'api_key_leases',
        'api_key_auth_failures',
        'audit_heads',
        'audit_events',
        'workflow_states',
        'task_states',
        'schedules',
      ]);
      expect(report.referenceTables).toEqual([
        'organizations',
        'permissions',
        'role_permissions',
        'role_grants',
        'api_key_prefixes',
        'audit_retention',
      ]);
      expect(report.rows.task_states).toBe(600);
      expect(progress.some((line) => line.startsWith('distributed table task_states (600 rows)'))).toBe(true);
      expect(await rowsOfEveryTable(db)).toEqual(before);

      const { rows: placement } = await db.query<{ table: string; method: string }>(
        `select logicalrelid::text as table, partmethod as method from pg_dist_partition order by 1`,
      );
      expect(Object.fromEntries(placement.map((row) => [row.table, row.method]))).toMatchObject({
        users: 'h',
        task_states: 'h',
        organizations: 'n',
        api_key_prefixes: 'n',
      });
    });

    it('a second run has nothing to do and changes nothing', async () => {
      const before = await rowsOfEveryTable(db);
      const lines: string[] = [];
      const report = await distributeOnCitus(db, { log: (line) => lines.push(line) });
      expect(report).toMatchObject({ referenceTables: [], distributedTables: [] });
      expect(lines).toEqual([expect.stringMatching(/^already distributed over 2 worker\(s\): nothing to do$/)]);
      expect(await rowsOfEveryTable(db)).toEqual(before);
    });

    it('a later migration applies on the cluster (DDL propagates to the shards) and reverts', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'es-citus-migrations-'));
      try {
        cpSync(MIGRATIONS_DIR, dir, { recursive: true });
        writeFileSync(
          join(dir, '20991231000000_add_workflow_priority.sql'),
          `-- Up Migration
alter table workflow_states add column priority integer;
create trigger workflow_states_noop before update on workflow_states for each row execute function set_updated_at();
-- Down Migration
drop trigger workflow_states_noop on workflow_states;
alter table workflow_states drop column priority;
`,
        );
        const applied = await migrateUp(db, { dir });
        expect(applied.map((step) => step.name)).toEqual(['20991231000000_add_workflow_priority']);
        // Every shard of workflow_states has the column.
        const { rows } = await db.query<{ result: string }>(
          `select result from run_command_on_shards('workflow_states', $$select count(*) from information_schema.columns where table_name = '%s' and column_name = 'priority'$$)`,
        );
        expect(rows.length).toBe(4);
        expect(rows.every((row) => row.result === '1')).toBe(true);
        await migrateDown(db, { dir, count: 1 });
        const { rows: after } = await db.query<{ result: string }>(
          `select result from run_command_on_shards('workflow_states', $$select count(*) from information_schema.columns where table_name = '%s' and column_name = 'priority'$$)`,
        );
        expect(after.every((row) => row.result === '0')).toBe(true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('reverts the audit trail on the cluster (held events need --force) and applies it again; distribute places its tables', async () => {
      const store = await openStore({ url: cluster.url, operator: 'ops' });
      try {
        const org = await store.organizations.create({ name: 'Audited Around' });
        await store.withOrg(org.id, (tx) => tx.users.create({ email: 'before@around.example', role: 'admin' }));
      } finally {
        await store.close();
      }
      const refused = await expectStoreError(() => migrateDown(db, { count: 1 }), 'CONFLICT');
      expect(refused.message).toMatch(/audit_events, which holds rows/);
      // Reference-table DDL after distributed-table DDL in one transaction: the migration runs
      // it sequentially (citus.multi_shard_modify_mode), or Citus refuses the second.
      await migrateDown(db, { count: 1, force: true });
      expect((await db.query(`select to_regclass('audit_events') as t`)).rows[0]).toEqual({ t: null });
      await migrateUp(db);
      const report = await distributeOnCitus(db);
      expect([report.referenceTables, report.distributedTables]).toEqual([
        ['audit_retention'],
        ['api_key_auth_failures', 'audit_heads', 'audit_events'],
      ]);
      const again = await openStore({ url: cluster.url, operator: 'ops' });
      try {
        const org = await again.organizations.create({ name: 'Audited Again' });
        await again.withOrg(org.id, (tx) => tx.users.create({ email: 'after@around.example', role: 'admin' }));
        expect((await again.audit.list(org.id, { order: 'asc' })).items.map((event) => `${event.action} by ${event.actor.id}`)).toEqual([
          'organization.created by ops',
          'user.created by ops',
        ]);
        expect(await again.audit.verify({})).toMatchObject({ ok: true });
      } finally {
        await again.close();
      }
    });
  });

  describe('an organization on the cluster', () => {
    let cluster: Awaited<ReturnType<typeof createCitusDatabase>>;
    let store: Store;
    let orgId: string;

    beforeAll(async () => {
      cluster = await createCitusDatabase();
      const db = await openDatabase({ url: cluster.url, poolSize: 2 });
      try {
        await migrateUp(db);
        await distributeOnCitus(db, { shardCount: 4 });
      } finally {
        await db.close();
      }
      store = await openStore({ url: cluster.url, poolSize: 20 });
      orgId = (await store.organizations.create({ name: 'Routed' })).id;
    });

    afterAll(async () => {
      await store?.close();
      await cluster?.drop();
    });

    /** The number of shards (tasks) Citus plans `statement` on, in the organization's scope. */
    async function tasksOf(statement: { sql: string; params: unknown[] }): Promise<number> {
      return withOrgSql(store, orgId, async (tx) => {
        const { rows } = await tx.query<{ 'QUERY PLAN': string }>(`explain ${statement.sql}`, statement.params);
        const plan = rows.map((row) => row['QUERY PLAN']).join('\n');
        const count = /Task Count: (\d+)/.exec(plan);
        expect(count, plan).not.toBeNull();
        return Number(count![1]);
      });
    }

    it('sends each repository statement to one shard', async () => {
      const statements = [
        ...(await recordStatements((db) => new UsersRepository(db, orgId).get(crypto.randomUUID()))),
        ...(await recordStatements((db) => new UsersRepository(db, orgId).list({ role: 'admin' }))),
        ...(await recordStatements((db) => new UsersRepository(db, orgId).suspend(crypto.randomUUID()))),
        ...(await recordStatements((db) => new WorkflowStatesRepository(db, orgId).list({ status: 'running' }))),
        ...(await recordStatements((db) =>
          new WorkflowStatesRepository(db, orgId).updateStatus(crypto.randomUUID(), { status: 'success' }),
        )),
        ...(await recordStatements((db) => new WorkflowStatesRepository(db, orgId).delete(crypto.randomUUID()))),
      ];
      expect(statements).toHaveLength(6);
      for (const statement of statements) expect(await tasksOf(statement), statement.sql).toBe(1);
    });

    it('sends a tx.kysely query to one shard: the scope names its organization for every tenant table', async () => {
      const rows = await store.withOrg(orgId, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: crypto.randomUUID(), workflowId: 'routed', status: 'running' });
        return tx.kysely
          .selectFrom('workflow_states as w')
          .leftJoin('task_states as t', (join) => join.onRef('t.workflow_exec_id', '=', 'w.workflow_exec_id'))
          .select(['w.workflow_id'])
          .forUpdate('w')
          .execute();
      });
      expect(rows).toEqual([{ workflow_id: 'routed' }]);
    });

    it('a leaked tenant login used directly on a worker reads no row and writes none without an organization', async () => {
      await store.withOrg(orgId, (tx) =>
        tx.workflows.upsert({ workflowExecId: crypto.randomUUID(), workflowId: 'on-worker', status: 'running' }),
      );
      const { rows: workers } = await store.db.query<{ host: string; port: number }>(
        `select nodename as host, nodeport as port from pg_dist_node where groupid <> 0 and isactive order by nodeport`,
      );
      expect(workers.length).toBeGreaterThan(0);
      for (const worker of workers) {
        const url = new URL(cluster.url);
        url.hostname = worker.host;
        url.port = String(worker.port);
        url.username = 'app_tenant';
        const leaked = await openDatabase({ url: url.toString(), poolSize: 1 });
        try {
          // The shards carry the policies, forced: without app.org_id nothing is visible.
          const { rows } = await leaked.query<{ n: number }>(`select count(*)::int as n from workflow_states`);
          expect(rows[0]!.n).toBe(0);
          await expect(
            leaked.query(`insert into workflow_states (org_id, workflow_exec_id, workflow_id, status) values ($1, $2, 'x', 'running')`, [
              orgId,
              crypto.randomUUID(),
            ]),
          ).rejects.toMatchObject({
            code: '42501',
          });
        } finally {
          await leaked.close();
        }
      }
    });

    it('verifies a key by its prefix on one shard, exactly under concurrency', async () => {
      const key = await store.withOrg(orgId, async (tx) => {
        const user = await tx.users.create({ email: `limit-${crypto.randomUUID()}@routed.example`, role: 'manager' });
        return (await tx.apiKeys.issue({ userId: user.id, name: 'limited', rateLimitPerHour: 25 })).key;
      });
      const results = await Promise.all(Array.from({ length: 60 }, () => store.verifyApiKey(key)));
      expect(results.filter((result) => result.ok)).toHaveLength(25);
      expect(results.filter((result) => !result.ok && result.reason === 'RATE_LIMITED')).toHaveLength(35);
      // The key's own statement, as verify_api_key runs it once it knows the organization.
      const lookup = { sql: 'select k.id from api_keys k where k.org_id = $1 and k.prefix = $2', params: [orgId, key.split('_')[1]] };
      expect(await tasksOf(lookup)).toBe(1);
    });

    it('verifies a key whose organization the store has seen without the prefix lookup, routed to its shard', async () => {
      const key = await store.withOrg(orgId, async (tx) => {
        const user = await tx.users.create({ email: `known-${crypto.randomUUID()}@routed.example`, role: 'customer' });
        return (await tx.apiKeys.issue({ userId: user.id, name: 'known organization' })).key;
      });
      const { prefix, hash } = parseKey(key)!;
      const { rows } = await store.tenantDb.query<{ outcome: string; org_id: string }>(
        'select outcome, org_id from public.verify_api_key_in_org($1, $2, $3, $4)',
        [orgId, prefix, hash, []],
      );
      expect(rows).toEqual([{ outcome: 'OK', org_id: orgId }]);
      // The store goes that way once it has seen the key: its answers go on counting.
      const [first, second] = [await store.verifyApiKey(key), await store.verifyApiKey(key)];
      expect(first.ok && second.ok && second.rateLimit.remaining).toBe(first.ok && first.rateLimit.remaining - 1);
    });

    it('refuses the key cache, whose notifications would be sent on the workers, and the distribute command dropped their triggers', async () => {
      const error = await expectStoreError(openStore({ url: cluster.url, keyCache: { maxKeys: 10 } }), 'INVALID_INPUT', 'keyCache');
      expect(error.details.reason).toBe('citus');
      // Only the scope key's remains: a plain table of the coordinator's, where a store would listen.
      const { rows } = await store.db.query<{ table: string; trigger: string }>(
        `select tgrelid::regclass::text as table, tgname as trigger from pg_trigger where tgname like '%notify_key_cache%' order by 2`,
      );
      expect(rows).toEqual([{ table: 'tenant_scope_key', trigger: 'tenant_scope_key_notify_key_cache' }]);
    });

    it("records the audit trail on the workers: each change once, in its organization's chain, with refused verifications", async () => {
      const user = await store.withOrg(orgId, (tx) => tx.users.create({ email: 'audited@routed.example', role: 'admin' }));
      const { key, apiKey } = await store.withOrg(orgId, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'audited' }), {
        actor: { userId: user.id },
      });
      const wrong = wrongSecretOf(key);
      for (let i = 0; i < 3; i += 1) expect(await store.verifyApiKey(wrong)).toEqual({ ok: false, reason: 'NOT_FOUND' });
      const events = (await store.readOrg(orgId).audit.list({ targetId: apiKey.id })).items;
      expect(events.map((event) => [event.action, `${event.actor.kind}:${event.actor.id}`, event.changes.reason, event.attempts])).toEqual([
        ['api_key.auth_failed', 'system:verify_api_key', 'wrong_secret', 3],
        ['api_key.issued', `user:${user.id}`, undefined, undefined],
      ]);
      // The organizations table is copied to every node: one event, from the chain's node alone.
      const renamed = await store.organizations.rename(orgId, 'Routed, renamed');
      const renames = (await store.audit.list(orgId, { action: 'organization.renamed' })).items;
      expect(renames.map((event) => [event.changes.name, event.actor.kind])).toEqual([
        [{ before: 'Routed', after: renamed.name }, 'system'],
      ]);
      expect(await store.audit.verify({ orgId })).toMatchObject({ ok: true });
      // On every shard of the tables they watch (4 shards each; named <trigger>_<shard id> there).
      const { rows } = await store.db.query<{ trigger: string; shards: number }>(
        `select t.tgname as trigger, (select count(*)::int from run_command_on_shards(t.tgrelid::regclass,
                  format('select count(*) from pg_trigger where tgrelid = %L::regclass and tgname ~ %L', '%s', '^' || t.tgname || '_[0-9]+$'))
                  where result = '1') as shards
           from pg_trigger t where t.tgname like '%\\_audit%' and t.tgrelid::regclass::text in ('users', 'api_keys') order by 1`,
      );
      expect(rows).toEqual([
        { trigger: 'api_keys_audit', shards: 4 },
        { trigger: 'api_keys_audit_update', shards: 4 },
        { trigger: 'users_audit', shards: 4 },
      ]);
    });

    it('prunes the audit trail on the cluster: a month partition dropped, the default partition deleted from, the cut recorded', async () => {
      const chain = crypto.randomUUID();
      await store.db.query(`select audit_ensure_partitions('2026-01-05', 1)`);
      await backdatedEvents(store.db, chain, ['2025-12-10T10:00:00Z', '2026-01-20T10:00:00Z', '2026-02-03T10:00:00Z']);
      const report = await store.audit.prune({ before: new Date('2026-02-15T00:00:00Z') });
      expect(report).toMatchObject({ chainsCut: 1, eventsRemoved: 2, partitionsDropped: ['audit_events_y2026m01'] });
      const left = (await store.audit.list(chain, { order: 'asc' })).items;
      expect(left.map((event) => [event.seq, event.action])).toEqual([
        [3, 'user.created'],
        [4, 'audit.pruned'],
      ]);
      expect(await store.audit.verify({ orgId: chain })).toMatchObject({ ok: true, events: 2 });
    });

    it('delegates no function the tenant login may call: a NULL organization gets no row, and the coordinator stays up', async () => {
      // Citus 13.2 dereferences a NULL distribution argument of a delegated function while
      // planning the call, which crashes the coordinator's backend and resets every session on it.
      // Any login allowed to call such a function could do that, so the tenant login may call none.
      const { rows: delegated } = await store.db.query<{ fn: string }>(
        `select o.objid::regprocedure::text as fn
           from pg_dist_object o
          where o.classid = 'pg_proc'::regclass and o.distribution_argument_index is not null
            and has_function_privilege('app_tenant', o.objid, 'execute')`,
      );
      expect(delegated).toEqual([]);
      const client = new pg.Client({ connectionString: cluster.url });
      await client.connect();
      try {
        await client.query('set role app_tenant');
        const calls = [
          'select * from public.verify_api_key_in_org(null, $1, $2, $3)',
          'select public.verify_api_key_in_org(null, $1, $2, $3)',
          `select * from public.verify_api_key_in_org(null, $1, $2, $3::text[])`,
        ];
        for (const sql of calls) {
          for (let run = 0; run < 7; run += 1) {
            // Prepared, so that the planner also tries the generic plan after five runs.
            const { rows } = await client.query({
              name: `null-${calls.indexOf(sql)}`,
              text: sql,
              values: ['aaaaaaaaaaaa', Buffer.alloc(32), []],
            });
            expect(rows.filter((row) => Object.values(row).some((value) => value !== null))).toEqual([]);
          }
        }
        const { rows } = await client.query(`select * from public.verify_api_key_in_org(null, null, null, null)`);
        expect(rows).toEqual([]);
        // The same session, still there.
        expect((await client.query('select 1 as alive')).rows).toEqual([{ alive: 1 }]);
      } finally {
        await client.end();
      }
    });
  });
});

describe.skipIf(!citusUrl || !serverUrl)('the Citus tier is configured', () => {
  it('TEST_CITUS_URL names a coordinator with active workers', async () => {
    const db = await openDatabase({ url: citusUrl!, poolSize: 1 });
    try {
      const { rows } = await db.query<{ workers: number }>(
        `select count(*)::int as workers from pg_dist_node where groupid <> 0 and isactive`,
      );
      expect(rows[0]!.workers).toBeGreaterThanOrEqual(1);
    } finally {
      await db.close();
    }
  });
});

describe('distributing refuses a database it cannot distribute', () => {
  it.each(backends.map((backend) => [backend.name, backend] as const))('refuses a database without Citus (%s)', async (name, backend) => {
    const database = await backend.createMigrated();
    try {
      const error = await expectStoreError(() => distributeOnCitus(database.db), 'DISTRIBUTION_REFUSED');
      expect(error.details.reason).toBe(name === 'pglite' ? 'embedded' : 'citus_missing');
    } finally {
      await database.dispose();
    }
  });

  it('refuses a shard count that is not a whole number from 1 to 64,000', async () => {
    const database = await backends[0]!.create();
    try {
      for (const shardCount of [0, -1, 1.5, 64_001])
        await expectStoreError(() => distributeOnCitus(database.db, { shardCount }), 'INVALID_INPUT', 'shardCount');
    } finally {
      await database.dispose();
    }
  });
});
