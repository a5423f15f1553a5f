/**
 * The lifecycle of the store's rows on every backend: organizations (create, namespaces,
 * uniqueness, pagination, rename, suspend, soft delete, restore, purge), what suspension and
 * soft deletion of an organization do to everything in its scope (enforced by the database, not
 * by the repositories), users, and the engine's workflow states, task states and schedules.
 *
 * One database per backend; every test works in organizations of its own, with names of its own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../engine/infra/store/connection/database.ts';
import { DEFAULT_ORG_ID, StoreError, storeOver, type Organization, type Page, type Store, type TenantScope, type User } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { withOrgSql } from '../support/trusted-sql.ts';

// ---------------------------------------------------------------------------------------------
// Helpers

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** The Unix milliseconds a version 7 UUID starts with. */
const v7Millis = (id: string) => Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16);
/** A well-formed UUID that names no row. */
const NO_SUCH_ID = '018f0000-0000-7000-8000-00000000ffff';
/**
 * Long enough for PGlite's clock, whose now() moves in whole milliseconds, to tell two
 * transactions apart.
 */
const TICK_MS = 3;

/** Follows nextCursor to the end; checks that full pages carry a cursor and the last one not. */
async function allPages<Item>(limit: number, fetch: (after: string | undefined) => Promise<Page<Item>>): Promise<Item[][]> {
  const pages: Item[][] = [];
  let after: string | undefined;
  for (;;) {
    const page = await fetch(after);
    pages.push(page.items);
    if (page.nextCursor === undefined) break;
    expect(page.items).toHaveLength(limit);
    after = page.nextCursor;
    if (pages.length > 1000) throw new Error('pagination does not end');
  }
  return pages;
}

/** Rows an organization owns, per table, counted as the owner (no row-level security). */
async function ownedCounts(db: Database, orgId: string): Promise<Record<string, number>> {
  const { rows } = await db.query<Record<string, number>>(
    `select (select count(*) from organizations where id = $1)::int as organizations,
            (select count(*) from users where org_id = $1)::int as users,
            (select count(*) from api_keys where org_id = $1)::int as api_keys,
            (select count(*) from workflow_states where org_id = $1)::int as workflow_states,
            (select count(*) from task_states where org_id = $1)::int as task_states,
            (select count(*) from schedules where org_id = $1)::int as schedules`,
    [orgId],
  );
  return rows[0]!;
}

/** A digest of every row an organization owns in the tenant tables, as the owner. */
async function ownedDigest(db: Database, orgId: string): Promise<Record<string, string>> {
  const digest: Record<string, string> = {};
  for (const table of ['users', 'api_keys', 'workflow_states', 'task_states', 'schedules']) {
    const { rows } = await db.query<{ md5: string }>(
      `select md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) as md5 from ${table} t where org_id = $1`,
      [orgId],
    );
    digest[table] = rows[0]!.md5;
  }
  return digest;
}

interface OrgData {
  orgId: string;
  userId: string;
  deletedUserId: string;
  workflowExecId: string;
  taskExecId: string;
  scheduleId: string;
  deletedScheduleId: string;
}

let idCounter = 0;
/** A fresh time-ordered-looking UUID for workflow and task executions. */
function newExecId(): string {
  idCounter += 1;
  return `018f${String(idCounter).padStart(4, '0')}-0000-7000-8000-${String(Date.now() % 1e12).padStart(12, '0')}`;
}

/** One row of every kind, plus a soft-deleted user and a soft-deleted schedule. */
async function populate(store: Store, orgId: string): Promise<OrgData> {
  const workflowExecId = newExecId();
  const taskExecId = newExecId();
  return store.withOrg(orgId, async (tx) => {
    const user = await tx.users.create({ email: 'live@example.com', role: 'manager' });
    const gone = await tx.users.create({ email: 'gone@example.com', role: 'customer' });
    await tx.users.softDelete(gone.id);
    await tx.workflows.upsert({ workflowExecId, workflowId: 'onboarding', status: 'running', input: { step: 1 } });
    await tx.tasks.upsert({
      taskExecId,
      taskId: 'send-email',
      workflowExecId,
      workflowId: 'onboarding',
      component: 'tool',
      status: 'running',
    });
    const schedule = await tx.schedules.create({ workflowId: 'nightly-report', cronExpression: '0 2 * * *' });
    const deletedSchedule = await tx.schedules.create({ workflowId: 'weekly-report', cronExpression: '@weekly' });
    await tx.schedules.softDelete(deletedSchedule.id);
    return {
      orgId,
      userId: user.id,
      deletedUserId: gone.id,
      workflowExecId,
      taskExecId,
      scheduleId: schedule.id,
      deletedScheduleId: deletedSchedule.id,
    };
  });
}

/** Everything a tenant can read of a populated organization. */
async function readAll(store: Store, data: OrgData) {
  return store.withOrg(data.orgId, async (tx) => ({
    users: (await tx.users.list({ includeDeleted: true })).items,
    user: await tx.users.get(data.userId),
    workflows: (await tx.workflows.list()).items,
    workflow: await tx.workflows.get(data.workflowExecId),
    tasks: (await tx.tasks.list()).items,
    task: await tx.tasks.get(data.taskExecId),
    schedules: (await tx.schedules.list({ includeDeleted: true })).items,
  }));
}

/**
 * Every kind of write a tenant can make, for the suspended and soft-deleted organizations.
 * `touchesNoShard`: a write Citus sees will match no row (WHERE false, an INSERT of no row) is
 * sent to no shard, so no trigger runs to refuse it; it writes nothing, which the count after
 * the refusals checks.
 */
const WRITES: Array<{ name: string; write: (tx: TenantScope, data: OrgData) => Promise<unknown>; touchesNoShard?: true }> = [
  { name: 'users.create', write: (tx) => tx.users.create({ email: 'newcomer@example.com', role: 'customer' }) },
  { name: 'users.changeRole', write: (tx, d) => tx.users.changeRole(d.userId, 'admin') },
  { name: 'users.suspend', write: (tx, d) => tx.users.suspend(d.userId) },
  { name: 'users.softDelete', write: (tx, d) => tx.users.softDelete(d.userId) },
  { name: 'users.restore', write: (tx, d) => tx.users.restore(d.deletedUserId) },
  {
    name: 'workflows.upsert of a new execution',
    write: (tx) => tx.workflows.upsert({ workflowExecId: NO_SUCH_ID, workflowId: 'w', status: 'pending' }),
  },
  {
    name: 'workflows.upsert of the existing execution',
    write: (tx, d) => tx.workflows.upsert({ workflowExecId: d.workflowExecId, workflowId: 'onboarding', status: 'failed' }),
  },
  {
    name: 'workflows.updateStatus',
    write: (tx, d) => tx.workflows.updateStatus(d.workflowExecId, { status: 'success', output: { done: true } }),
  },
  { name: 'workflows.updateStatus of an unknown execution', write: (tx) => tx.workflows.updateStatus(NO_SUCH_ID, { status: 'success' }) },
  { name: 'workflows.delete', write: (tx, d) => tx.workflows.delete(d.workflowExecId) },
  {
    name: 'tasks.upsert',
    write: (tx, d) =>
      tx.tasks.upsert({
        taskExecId: NO_SUCH_ID,
        taskId: 't',
        workflowExecId: d.workflowExecId,
        workflowId: 'onboarding',
        component: 'agent',
        status: 'pending',
      }),
  },
  { name: 'tasks.updateStatus', write: (tx, d) => tx.tasks.updateStatus(d.taskExecId, { status: 'failed', error: { message: 'boom' } }) },
  { name: 'tasks.delete', write: (tx, d) => tx.tasks.delete(d.taskExecId) },
  { name: 'schedules.create', write: (tx) => tx.schedules.create({ workflowId: 'w', cronExpression: '@hourly' }) },
  { name: 'schedules.update', write: (tx, d) => tx.schedules.update(d.scheduleId, { enabled: false }) },
  { name: 'schedules.softDelete', write: (tx, d) => tx.schedules.softDelete(d.scheduleId) },
  { name: 'schedules.restore', write: (tx, d) => tx.schedules.restore(d.deletedScheduleId) },
  { name: 'schedules.delete', write: (tx, d) => tx.schedules.delete(d.scheduleId) },
  {
    name: 'a custom update matching no row',
    write: (tx) =>
      tx.kysely
        .updateTable('users')
        .set({ role: 'admin' })
        .where((eb) => eb.lit(false))
        .execute(),
    touchesNoShard: true,
  },
  {
    name: 'a custom delete matching no row',
    write: (tx) =>
      tx.kysely
        .deleteFrom('workflow_states')
        .where((eb) => eb.lit(false))
        .execute(),
    touchesNoShard: true,
  },
  {
    name: 'a custom insert of no row',
    touchesNoShard: true,
    write: (tx) =>
      tx.kysely
        .insertInto('schedules')
        .columns(['workflow_id', 'cron_expression'])
        .expression(
          tx.kysely
            .selectNoFrom((eb) => [eb.val('w').as('workflow_id'), eb.val('@daily').as('cron_expression')])
            .where((eb) => eb.lit(false)),
        )
        .execute(),
  },
];

// ---------------------------------------------------------------------------------------------

describe.each(withCitus(backends))('lifecycle on $name', (backend) => {
  let t: TestDatabase;
  let store: Store;
  let db: Database;
  let nameCounter = 0;
  /** An organization name (and so namespace) no other test uses. */
  const uniqueName = (prefix: string) => `${prefix} ${++nameCounter}`;
  const newOrg = (prefix: string) => store.organizations.create({ name: uniqueName(prefix) });

  beforeAll(async () => {
    t = await backend.createMigrated();
    store = await storeOver(t.db);
    db = store.db;
  });

  afterAll(async () => {
    // store.close() closes t.db; dispose closes it again (harmless) and drops a server database.
    await store?.close();
    await t?.dispose();
  });

  // -------------------------------------------------------------------------------------------
  describe('organizations', () => {
    it('create derives the namespace from the name, dropping punctuation and accents', async () => {
      const acme = await store.organizations.create({ name: 'Acme Corp.' });
      expect(acme).toMatchObject({ name: 'Acme Corp.', temporalNamespace: 'acme-corp', status: 'active', deletedAt: null });
      const cafe = await store.organizations.create({ name: 'Café Zürich' });
      expect(cafe.temporalNamespace).toBe('cafe-zurich');
      expect(acme.id).toMatch(UUID_V7);
      expect(acme.createdAt.getTime()).toBe(acme.updatedAt.getTime());
      expect(await store.organizations.get(acme.id)).toEqual(acme);
    });

    it('create keeps an explicit namespace and stores the name trimmed and NFC-normalized', async () => {
      const org = await store.organizations.create({ name: '  Cafe\u0301 Noir  ', temporalNamespace: 'ns.explicit_1' });
      expect(org.name).toBe('Café Noir');
      expect(org.name).toBe('Caf\u00e9 Noir');
      expect(org.temporalNamespace).toBe('ns.explicit_1');
    });

    it('a name taken in another case is a CONFLICT on name, and nothing is created', async () => {
      const name = uniqueName('Globex');
      await store.organizations.create({ name });
      const before = await db.query<{ n: number }>('select count(*)::int as n from organizations');
      await expectStoreError(
        store.organizations.create({ name: name.toUpperCase(), temporalNamespace: `upper-${nameCounter}` }),
        'CONFLICT',
        'name',
      );
      await expectStoreError(
        store.organizations.create({ name: name.toLowerCase(), temporalNamespace: `lower-${nameCounter}` }),
        'CONFLICT',
        'name',
      );
      const after = await db.query<{ n: number }>('select count(*)::int as n from organizations');
      expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
    });

    it('a taken namespace is a CONFLICT on temporalNamespace, given or derived', async () => {
      await store.organizations.create({ name: 'Initech', temporalNamespace: 'initech' });
      await expectStoreError(
        store.organizations.create({ name: 'Initech Two', temporalNamespace: 'initech' }),
        'CONFLICT',
        'temporalNamespace',
      );
      await store.organizations.create({ name: 'Hooli Inc' });
      // Another name, the same derived namespace (hooli-inc): said as such.
      const derived = await expectStoreError(store.organizations.create({ name: 'Hooli-Inc!' }), 'CONFLICT', 'temporalNamespace');
      expect(derived.message).toBe(
        'the Temporal namespace derived from the name, "hooli-inc", is taken by another organization; give one of its own (temporalNamespace)',
      );
    });

    it('a taken name with a derived namespace is a CONFLICT on the name, not on a namespace the caller never gave', async () => {
      await store.organizations.create({ name: 'Vandelay Industries' });
      const taken = await expectStoreError(store.organizations.create({ name: 'VANDELAY industries' }), 'CONFLICT', 'name');
      expect(taken.message).toBe('an organization named "VANDELAY industries" already exists');
    });

    it('get and list leave soft-deleted organizations out unless includeDeleted', async () => {
      const org = await newOrg('Vanishing');
      const deleted = await store.organizations.softDelete(org.id);
      expect(deleted.deletedAt).toBeInstanceOf(Date);
      await expectStoreError(store.organizations.get(org.id), 'NOT_FOUND');
      expect((await store.organizations.get(org.id, { includeDeleted: true })).deletedAt).toEqual(deleted.deletedAt);
      const live = await store.organizations.list({ limit: 500 });
      expect(live.nextCursor).toBeUndefined();
      expect(live.items.map((o) => o.id)).not.toContain(org.id);
      expect(live.items.map((o) => o.id)).toContain(DEFAULT_ORG_ID);
      const all = await store.organizations.list({ limit: 500, includeDeleted: true });
      expect(all.items.map((o) => o.id)).toContain(org.id);
    });

    it('keyset pagination over 7 new organizations, 3 a page, returns each exactly once, newest first', async () => {
      const created: Organization[] = [];
      for (let i = 0; i < 7; i++) {
        created.push(await newOrg('Paged'));
        await sleep(TICK_MS);
      }
      const pages = await allPages(3, (after) => store.organizations.list({ limit: 3, after }));
      const ids = pages.flat().map((o) => o.id);
      expect(new Set(ids).size).toBe(ids.length);
      // The 7 newest organizations are these, newest first: two full pages and one more row.
      expect(ids.slice(0, 7)).toEqual(created.map((o) => o.id).reverse());
      expect(pages[0]).toHaveLength(3);
      expect(pages[1]).toHaveLength(3);
      // Every live organization, in the order (created_at desc, id desc), and nothing else.
      const { rows } = await db.query<{ id: string }>(
        'select id from organizations where deleted_at is null order by created_at desc, id desc',
      );
      expect(ids).toEqual(rows.map((row) => row.id));
      expect(pages.at(-1)!.length).toBeGreaterThan(0);
    });

    it('a cursor from a full last page leads to an empty page without a cursor', async () => {
      const { rows } = await db.query<{ n: number }>('select count(*)::int as n from organizations where deleted_at is null');
      const total = rows[0]!.n;
      const first = await store.organizations.list({ limit: total - 1 });
      expect(first.nextCursor).toBeDefined();
      const second = await store.organizations.list({ limit: 1, after: first.nextCursor });
      expect(second.items).toHaveLength(1);
      expect(second.nextCursor).toBeUndefined();
      const exact = await store.organizations.list({ limit: total });
      expect(exact.items).toHaveLength(total);
      expect(exact.nextCursor).toBeUndefined();
    });

    it('list filters by status', async () => {
      const org = await newOrg('Filtered');
      await store.organizations.suspend(org.id);
      const suspended = await store.organizations.list({ status: 'suspended', limit: 500 });
      expect(suspended.items.map((o) => o.id)).toContain(org.id);
      expect(suspended.items.every((o) => o.status === 'suspended')).toBe(true);
      const active = await store.organizations.list({ status: 'active', limit: 500 });
      expect(active.items.map((o) => o.id)).not.toContain(org.id);
    });

    it('rename changes the name and updatedAt, keeps the namespace, and refuses a taken name', async () => {
      const org = await newOrg('Before Rename');
      const taken = await newOrg('Taken Name');
      await sleep(TICK_MS);
      const renamed = await store.organizations.rename(org.id, '  After Rename  ');
      expect(renamed).toMatchObject({ id: org.id, name: 'After Rename', temporalNamespace: org.temporalNamespace });
      expect(renamed.createdAt).toEqual(org.createdAt);
      expect(renamed.updatedAt.getTime()).toBeGreaterThan(org.updatedAt.getTime());
      expect((await store.organizations.get(org.id)).name).toBe('After Rename');
      await expectStoreError(store.organizations.rename(org.id, taken.name.toUpperCase()), 'CONFLICT', 'name');
      await expectStoreError(store.organizations.rename(NO_SUCH_ID, 'Nobody'), 'NOT_FOUND');
    });

    it('suspend and activate switch the status', async () => {
      const org = await newOrg('Switching');
      expect((await store.organizations.suspend(org.id)).status).toBe('suspended');
      expect((await store.organizations.get(org.id)).status).toBe('suspended');
      expect((await store.organizations.activate(org.id)).status).toBe('active');
      expect((await store.organizations.get(org.id)).status).toBe('active');
      await expectStoreError(store.organizations.suspend(NO_SUCH_ID), 'NOT_FOUND');
    });

    it('operator changes to a soft-deleted organization are NOT_FOUND', async () => {
      const org = await newOrg('Frozen');
      await store.organizations.softDelete(org.id);
      await expectStoreError(store.organizations.rename(org.id, uniqueName('Thawed')), 'NOT_FOUND');
      await expectStoreError(store.organizations.suspend(org.id), 'NOT_FOUND');
      await expectStoreError(store.organizations.softDelete(org.id), 'NOT_FOUND');
    });

    it('soft delete frees the name for a new organization (with a namespace of its own)', async () => {
      const old = await store.organizations.create({ name: 'Soylent', temporalNamespace: 'soylent' });
      await store.organizations.softDelete(old.id);
      const successor = await store.organizations.create({ name: 'SOYLENT', temporalNamespace: 'soylent-2' });
      expect(successor.name).toBe('SOYLENT');
      expect(successor.id).not.toBe(old.id);
    });

    it('a soft-deleted organization keeps its namespace, so the same name with a derived namespace is a CONFLICT', async () => {
      const old = await store.organizations.create({ name: 'Wonka Industries' });
      await store.organizations.softDelete(old.id);
      await expectStoreError(store.organizations.create({ name: 'Wonka Industries' }), 'CONFLICT', 'temporalNamespace');
    });

    it('restore fails with CONFLICT when the name was taken meanwhile, and succeeds once it is free', async () => {
      const name = uniqueName('Umbrella');
      const original = await store.organizations.create({ name });
      await store.organizations.softDelete(original.id);
      const usurper = await store.organizations.create({ name: name.toUpperCase(), temporalNamespace: `usurper-${nameCounter}` });
      await expectStoreError(store.organizations.restore(original.id), 'CONFLICT', 'name');
      expect((await store.organizations.get(original.id, { includeDeleted: true })).deletedAt).not.toBeNull();
      await store.organizations.softDelete(usurper.id);
      const restored = await store.organizations.restore(original.id);
      expect(restored).toMatchObject({ id: original.id, name, temporalNamespace: original.temporalNamespace, deletedAt: null });
      expect((await store.organizations.get(original.id)).deletedAt).toBeNull();
      // Restoring what is not soft-deleted finds nothing to restore.
      await expectStoreError(store.organizations.restore(original.id), 'NOT_FOUND');
    });

    it('purge refuses a live organization', async () => {
      const org = await newOrg('Still Alive');
      const data = await populate(store, org.id);
      const error = await expectStoreError(store.organizations.purge(org.id), 'CONFLICT');
      expect(error.details.reason).toBe('not_soft_deleted');
      expect(await ownedCounts(db, data.orgId)).toEqual({
        organizations: 1,
        users: 2,
        api_keys: 0,
        workflow_states: 1,
        task_states: 1,
        schedules: 2,
      });
      await expectStoreError(store.organizations.purge(NO_SUCH_ID), 'NOT_FOUND');
    });

    it('purge of a soft-deleted organization removes everything it owns and nothing of other organizations', async () => {
      const doomed = await populate(store, (await newOrg('Doomed')).id);
      const bystander = await populate(store, (await newOrg('Bystander')).id);
      const bystanderBefore = await ownedDigest(db, bystander.orgId);
      expect(await ownedCounts(db, doomed.orgId)).toEqual({
        organizations: 1,
        users: 2,
        api_keys: 0,
        workflow_states: 1,
        task_states: 1,
        schedules: 2,
      });
      await store.organizations.softDelete(doomed.orgId);
      await store.organizations.purge(doomed.orgId);
      expect(await ownedCounts(db, doomed.orgId)).toEqual({
        organizations: 0,
        users: 0,
        api_keys: 0,
        workflow_states: 0,
        task_states: 0,
        schedules: 0,
      });
      await expectStoreError(store.organizations.get(doomed.orgId, { includeDeleted: true }), 'NOT_FOUND');
      await expectStoreError(store.organizations.purge(doomed.orgId), 'NOT_FOUND');
      expect(await ownedCounts(db, bystander.orgId)).toEqual({
        organizations: 1,
        users: 2,
        api_keys: 0,
        workflow_states: 1,
        task_states: 1,
        schedules: 2,
      });
      expect(await ownedDigest(db, bystander.orgId)).toEqual(bystanderBefore);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('a suspended organization', () => {
    let data: OrgData;
    let before: Record<string, string>;
    let readsBefore: Awaited<ReturnType<typeof readAll>>;

    beforeAll(async () => {
      data = await populate(store, (await newOrg('Suspended')).id);
      readsBefore = await readAll(store, data);
      await store.organizations.suspend(data.orgId);
      before = await ownedDigest(db, data.orgId);
    });

    it('can still be read', async () => {
      expect(await readAll(store, data)).toEqual(readsBefore);
      await withOrgSql(store, data.orgId, async (tx) => {
        expect((await tx.users.list()).items.map((u) => u.id)).toEqual([data.userId]);
        expect((await tx.workflows.get(data.workflowExecId)).input).toEqual({ step: 1 });
        expect((await tx.query<{ n: number }>('select count(*)::int as n from task_states')).rows[0]!.n).toBe(1);
      });
    });

    it.each(WRITES)('refuses $name with ORG_SUSPENDED', async ({ write, touchesNoShard }) => {
      if (touchesNoShard && backend.name === 'citus') {
        await store.withOrg(data.orgId, (tx) => write(tx, data));
        return;
      }
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => write(tx, data)),
        'ORG_SUSPENDED',
      );
    });

    it('changed nothing while refusing the writes', async () => {
      expect(await ownedDigest(db, data.orgId)).toEqual(before);
    });

    it('accepts writes again after activate', async () => {
      await store.organizations.activate(data.orgId);
      const user = await store.withOrg(data.orgId, (tx) => tx.users.create({ email: 'back@example.com', role: 'customer' }));
      expect(user.orgId).toBe(data.orgId);
      for (const { name, write } of WRITES) {
        await expect(
          store
            .withOrg(data.orgId, (tx) => write(tx, data))
            .then(
              () => 'ok',
              (error: StoreError) => error.code,
            ),
          name,
        ).resolves.not.toBe('ORG_SUSPENDED');
      }
      expect(await ownedDigest(db, data.orgId)).not.toEqual(before);
      const workflow = await store.withOrg(data.orgId, (tx) =>
        tx.workflows.upsert({ workflowExecId: newExecId(), workflowId: 'after-activate', status: 'running' }),
      );
      expect(workflow.status).toBe('running');
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('a soft-deleted organization', () => {
    let data: OrgData;
    let before: Record<string, string>;
    let readsBefore: Awaited<ReturnType<typeof readAll>>;

    beforeAll(async () => {
      data = await populate(store, (await newOrg('Deleted')).id);
      readsBefore = await readAll(store, data);
      await store.organizations.softDelete(data.orgId);
      before = await ownedDigest(db, data.orgId);
    });

    it('shows nothing in its scope: empty lists, NOT_FOUND, raw counts of 0', async () => {
      await withOrgSql(store, data.orgId, async (tx) => {
        expect((await tx.users.list({ includeDeleted: true })).items).toEqual([]);
        expect((await tx.workflows.list()).items).toEqual([]);
        expect((await tx.tasks.list()).items).toEqual([]);
        expect((await tx.schedules.list({ includeDeleted: true })).items).toEqual([]);
        for (const table of ['users', 'api_keys', 'workflow_states', 'task_states', 'schedules', 'organizations']) {
          expect((await tx.query<{ n: number }>(`select count(*)::int as n from ${table}`)).rows[0]!.n, table).toBe(0);
        }
      });
      // Each failed read in a scope of its own (nothing is left half-done).
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => tx.users.get(data.userId, { includeDeleted: true })),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => tx.users.getByEmail('live@example.com')),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => tx.workflows.get(data.workflowExecId)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => tx.tasks.get(data.taskExecId)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => tx.schedules.get(data.scheduleId)),
        'NOT_FOUND',
      );
      // The rows are still there, seen by the owner.
      expect(await ownedCounts(db, data.orgId)).toEqual({
        organizations: 1,
        users: 2,
        api_keys: 0,
        workflow_states: 1,
        task_states: 1,
        schedules: 2,
      });
    });

    it.each(WRITES)('refuses $name with ORG_INACTIVE', async ({ write, touchesNoShard }) => {
      if (touchesNoShard && backend.name === 'citus') {
        await store.withOrg(data.orgId, (tx) => write(tx, data));
        return;
      }
      await expectStoreError(
        store.withOrg(data.orgId, (tx) => write(tx, data)),
        'ORG_INACTIVE',
      );
    });

    it('after restore, shows its data again, unchanged', async () => {
      expect(await ownedDigest(db, data.orgId)).toEqual(before);
      await store.organizations.restore(data.orgId);
      expect(await readAll(store, data)).toEqual(readsBefore);
      expect(await ownedDigest(db, data.orgId)).toEqual(before);
    });
  });

  it('an organization that never existed reads as empty and refuses writes with ORG_INACTIVE', async () => {
    await withOrgSql(store, NO_SUCH_ID, async (tx) => {
      expect((await tx.users.list()).items).toEqual([]);
      expect((await tx.query<{ n: number }>('select count(*)::int as n from workflow_states')).rows[0]!.n).toBe(0);
    });
    await expectStoreError(
      store.withOrg(NO_SUCH_ID, (tx) => tx.users.create({ email: 'ghost@example.com', role: 'admin' })),
      'ORG_INACTIVE',
    );
    expect(await ownedCounts(db, NO_SUCH_ID)).toEqual({
      organizations: 0,
      users: 0,
      api_keys: 0,
      workflow_states: 0,
      task_states: 0,
      schedules: 0,
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('users', () => {
    it('create, then get and getByEmail ignoring case', async () => {
      const org = await newOrg('People');
      const created = await store.withOrg(org.id, (tx) => tx.users.create({ email: '  Ada.Lovelace@Example.COM ', role: 'admin' }));
      expect(created).toMatchObject({ orgId: org.id, email: 'Ada.Lovelace@Example.COM', role: 'admin', status: 'active', deletedAt: null });
      expect(created.id).toMatch(UUID_V7);
      await store.withOrg(org.id, async (tx) => {
        expect(await tx.users.get(created.id)).toEqual(created);
        expect(await tx.users.get(created.id.toUpperCase())).toEqual(created);
        expect(await tx.users.getByEmail('ada.lovelace@example.com')).toEqual(created);
        expect(await tx.users.getByEmail('ADA.LOVELACE@EXAMPLE.COM')).toEqual(created);
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.getByEmail('someone.else@example.com')),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.get(NO_SUCH_ID)),
        'NOT_FOUND',
      );
    });

    it("emails follow HTML's rule (a@b.c and its specials accepted), with a dot in the domain (ada@localhost refused)", async () => {
      const org = await newOrg('Email Rule');
      for (const address of ['a@b.c', "o'brien+tag@mail.example.co.uk", "x!#$%&'*/=?^_`{|}~-@example.org", 'digits@123.example']) {
        const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: address, role: 'customer' }));
        expect(user.email).toBe(address);
      }
      for (const address of ['ada@localhost', 'ada@-example.com', 'ada@example..com', 'adä@example.com']) {
        const error = await expectStoreError(
          store.withOrg(org.id, (tx) => tx.users.create({ email: address, role: 'customer' })),
          'INVALID_INPUT',
          'email',
        );
        expect(error.message, address).toMatch(/must be an email address \(with a dot in its domain\)/);
      }
    });

    it('a duplicate email in another case is a CONFLICT on email; the same email in another organization is fine', async () => {
      const org = await newOrg('Dup Emails');
      const other = await newOrg('Other Emails');
      await store.withOrg(org.id, (tx) => tx.users.create({ email: 'grace@example.com', role: 'manager' }));
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.create({ email: 'GRACE@example.com', role: 'customer' })),
        'CONFLICT',
        'email',
      );
      const elsewhere = await store.withOrg(other.id, (tx) => tx.users.create({ email: 'Grace@Example.com', role: 'admin' }));
      expect(elsewhere.orgId).toBe(other.id);
      expect((await store.withOrg(org.id, (tx) => tx.users.list())).items).toHaveLength(1);
    });

    it('list filters by role and status and paginates without skipping or repeating', async () => {
      const org = await newOrg('Roles');
      const users: User[] = [];
      const roles = ['admin', 'manager', 'customer', 'customer', 'manager', 'customer'] as const;
      for (const [i, role] of roles.entries()) {
        users.push(await store.withOrg(org.id, (tx) => tx.users.create({ email: `user${i}@example.com`, role })));
        await sleep(TICK_MS);
      }
      await store.withOrg(org.id, (tx) => tx.users.suspend(users[2]!.id));
      const ids = (page: Page<User>) => page.items.map((u) => u.id).sort();
      await store.withOrg(org.id, async (tx) => {
        expect(ids(await tx.users.list({ role: 'manager' }))).toEqual([users[1]!.id, users[4]!.id].sort());
        expect(ids(await tx.users.list({ status: 'suspended' }))).toEqual([users[2]!.id]);
        expect(ids(await tx.users.list({ role: 'customer', status: 'active' }))).toEqual([users[3]!.id, users[5]!.id].sort());
        expect(ids(await tx.users.list({ role: 'admin', status: 'suspended' }))).toEqual([]);
        const pages = await allPages(4, (after) => tx.users.list({ limit: 4, after }));
        expect(pages.map((page) => page.length)).toEqual([4, 2]);
        expect(pages.flat().map((u) => u.id)).toEqual(users.map((u) => u.id).reverse());
        const managers = await allPages(1, (after) => tx.users.list({ role: 'manager', limit: 1, after }));
        expect(managers.flat().map((u) => u.id)).toEqual([users[4]!.id, users[1]!.id]);
      });
    });

    it('changeRole, suspend and activate change one user', async () => {
      const org = await newOrg('Changes');
      await store.withOrg(org.id, async (tx) => {
        const user = await tx.users.create({ email: 'linus@example.com', role: 'customer' });
        const bystander = await tx.users.create({ email: 'bystander@example.com', role: 'customer' });
        expect((await tx.users.changeRole(user.id, 'manager')).role).toBe('manager');
        expect((await tx.users.suspend(user.id)).status).toBe('suspended');
        expect(await tx.users.get(user.id)).toMatchObject({ role: 'manager', status: 'suspended' });
        expect((await tx.users.activate(user.id)).status).toBe('active');
        expect(await tx.users.get(bystander.id)).toEqual(bystander);
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.changeRole(NO_SUCH_ID, 'admin')),
        'NOT_FOUND',
      );
    });

    it('soft delete hides the user (except with includeDeleted) and frees the email; restore then is a CONFLICT on email', async () => {
      const org = await newOrg('Leavers');
      const leaver = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'leaver@example.com', role: 'manager' }));
      const deleted = await store.withOrg(org.id, (tx) => tx.users.softDelete(leaver.id));
      expect(deleted.deletedAt).toBeInstanceOf(Date);
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.get(leaver.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.getByEmail('leaver@example.com')),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.changeRole(leaver.id, 'admin')),
        'NOT_FOUND',
      );
      await store.withOrg(org.id, async (tx) => {
        expect((await tx.users.get(leaver.id, { includeDeleted: true })).deletedAt).toEqual(deleted.deletedAt);
        expect((await tx.users.list()).items).toEqual([]);
        expect((await tx.users.list({ includeDeleted: true })).items.map((u) => u.id)).toEqual([leaver.id]);
      });
      const successor = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'LEAVER@example.com', role: 'admin' }));
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.restore(leaver.id)),
        'CONFLICT',
        'email',
      );
      await store.withOrg(org.id, (tx) => tx.users.softDelete(successor.id));
      const restored = await store.withOrg(org.id, (tx) => tx.users.restore(leaver.id));
      expect(restored).toMatchObject({ id: leaver.id, email: 'leaver@example.com', role: 'manager', deletedAt: null });
      expect((await store.withOrg(org.id, (tx) => tx.users.getByEmail('Leaver@Example.com'))).id).toBe(leaver.id);
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.users.restore(leaver.id)),
        'NOT_FOUND',
      );
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('workflow and task states', () => {
    it('upsert creates, then updates status and only the payloads it is given', async () => {
      const org = await newOrg('Upserts');
      const id = newExecId();
      const created = await store.withOrg(org.id, (tx) =>
        tx.workflows.upsert({ workflowExecId: id, workflowId: 'billing', status: 'running', input: { invoice: 7 }, usage: { tokens: 1 } }),
      );
      expect(created).toMatchObject({
        workflowExecId: id,
        orgId: org.id,
        workflowId: 'billing',
        status: 'running',
        input: { invoice: 7 },
        output: null,
        error: null,
        usage: { tokens: 1 },
      });
      await sleep(TICK_MS);
      const updated = await store.withOrg(org.id, (tx) =>
        tx.workflows.upsert({ workflowExecId: id, workflowId: 'billing', status: 'success', output: ['paid'] }),
      );
      expect(updated).toMatchObject({ status: 'success', input: { invoice: 7 }, output: ['paid'], error: null, usage: { tokens: 1 } });
      expect(updated.createdAt).toEqual(created.createdAt);
      expect(updated.updatedAt.getTime()).toBeGreaterThan(created.updatedAt.getTime());
      const rows = await store.withOrg(org.id, (tx) => tx.workflows.list());
      expect(rows.items).toEqual([updated]);
    });

    it('jsonb payloads round-trip: arrays, nested objects, unicode and numbers', async () => {
      const org = await newOrg('Payloads');
      const payloads: unknown[] = [
        [1, 'two', null, true, [3, [4]], { five: 5 }],
        { a: { b: { c: { d: ['deep'] } } }, empty: {}, none: [], nothing: null, flag: false },
        {
          emoji: '😀👩‍💻',
          rtl: 'مرحبا',
          cjk: '東京',
          combining: 'e\u0301',
          escapes: 'quote " backslash \\ newline \n tab \t',
          ['clé ü']: 'ß',
        },
        {
          integers: [0, -1, 42, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER],
          decimals: [0.1, -1.5, 1e-7, 6.02214076e23, 1e308, 5e-324],
        },
        'just a string',
        12.5,
        true,
        [],
      ];
      const ids = payloads.map(() => newExecId());
      await store.withOrg(org.id, async (tx) => {
        for (const [i, payload] of payloads.entries()) {
          await tx.workflows.upsert({
            workflowExecId: ids[i]!,
            workflowId: 'json',
            status: 'success',
            input: payload,
            output: payload,
            error: payload,
            usage: payload,
          });
        }
      });
      await store.withOrg(org.id, async (tx) => {
        for (const [i, payload] of payloads.entries()) {
          const state = await tx.workflows.get(ids[i]!);
          expect(state.input, JSON.stringify(payload)).toEqual(payload);
          expect([state.output, state.error, state.usage]).toEqual([payload, payload, payload]);
        }
      });
    });

    it('updateStatus changes the status and the given payloads, keeps the others', async () => {
      const org = await newOrg('Status Changes');
      const id = newExecId();
      await store.withOrg(org.id, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: id, workflowId: 'w', status: 'running', input: { in: 1 }, usage: { calls: 1 } });
        const failed = await tx.workflows.updateStatus(id, { status: 'failed', error: { message: 'timeout' } });
        expect(failed).toMatchObject({
          status: 'failed',
          input: { in: 1 },
          output: null,
          error: { message: 'timeout' },
          usage: { calls: 1 },
        });
        const retried = await tx.workflows.updateStatus(id, { status: 'success', output: { out: 2 }, usage: { calls: 2 } });
        expect(retried).toMatchObject({
          status: 'success',
          input: { in: 1 },
          output: { out: 2 },
          error: { message: 'timeout' },
          usage: { calls: 2 },
        });
        expect(await tx.workflows.get(id)).toEqual(retried);
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.workflows.updateStatus(NO_SUCH_ID, { status: 'success' })),
        'NOT_FOUND',
      );
    });

    it('list filters by status and workflow id', async () => {
      const org = await newOrg('Workflow Filters');
      const [a, b, c] = [newExecId(), newExecId(), newExecId()];
      await store.withOrg(org.id, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: a, workflowId: 'alpha', status: 'running' });
        await tx.workflows.upsert({ workflowExecId: b, workflowId: 'alpha', status: 'failed' });
        await tx.workflows.upsert({ workflowExecId: c, workflowId: 'beta', status: 'running' });
        const ids = async (request: Parameters<TenantScope['workflows']['list']>[0]) =>
          (await tx.workflows.list(request)).items.map((w) => w.workflowExecId).sort();
        expect(await ids({ workflowId: 'alpha' })).toEqual([a, b].sort());
        expect(await ids({ status: 'running' })).toEqual([a, c].sort());
        expect(await ids({ workflowId: 'alpha', status: 'running' })).toEqual([a]);
        expect(await ids({ workflowId: 'gamma' })).toEqual([]);
      });
    });

    it('delete removes the workflow state and cascades to its tasks, children included', async () => {
      const org = await newOrg('Cascades');
      const [wf, parent, child, otherWf, otherTask] = [newExecId(), newExecId(), newExecId(), newExecId(), newExecId()];
      await store.withOrg(org.id, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: wf, workflowId: 'w', status: 'running' });
        await tx.workflows.upsert({ workflowExecId: otherWf, workflowId: 'w', status: 'running' });
        await tx.tasks.upsert({
          taskExecId: parent,
          taskId: 'p',
          workflowExecId: wf,
          workflowId: 'w',
          component: 'agent',
          status: 'running',
        });
        await tx.tasks.upsert({
          taskExecId: child,
          taskId: 'c',
          workflowExecId: wf,
          workflowId: 'w',
          component: 'tool',
          status: 'running',
          parentStateId: parent,
        });
        await tx.tasks.upsert({
          taskExecId: otherTask,
          taskId: 'o',
          workflowExecId: otherWf,
          workflowId: 'w',
          component: 'task',
          status: 'running',
        });
      });
      expect((await ownedCounts(db, org.id)).task_states).toBe(3);
      await store.withOrg(org.id, (tx) => tx.workflows.delete(wf));
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.workflows.get(wf)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.get(parent)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.get(child)),
        'NOT_FOUND',
      );
      expect(await ownedCounts(db, org.id)).toMatchObject({ workflow_states: 1, task_states: 1 });
      expect((await store.withOrg(org.id, (tx) => tx.tasks.list())).items.map((task) => task.taskExecId)).toEqual([otherTask]);
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.workflows.delete(wf)),
        'NOT_FOUND',
      );
    });

    it('tasks: upsert creates then updates, children lists direct children, delete cascades to descendants', async () => {
      const org = await newOrg('Task Trees');
      const [wf, root, left, right, leaf] = [newExecId(), newExecId(), newExecId(), newExecId(), newExecId()];
      await store.withOrg(org.id, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: wf, workflowId: 'tree', status: 'running' });
        const created = await tx.tasks.upsert({
          taskExecId: root,
          taskId: 'root',
          workflowExecId: wf,
          workflowId: 'tree',
          component: 'agent',
          status: 'running',
          agentId: 'planner',
          input: { goal: 'x' },
        });
        expect(created).toMatchObject({
          orgId: org.id,
          executionType: 'basic',
          agentId: 'planner',
          toolId: null,
          actionId: null,
          parentStateId: null,
          input: { goal: 'x' },
        });
        const updated = await tx.tasks.upsert({
          taskExecId: root,
          taskId: 'root',
          workflowExecId: wf,
          workflowId: 'tree',
          component: 'agent',
          status: 'success',
          output: 1,
        });
        expect(updated).toMatchObject({ status: 'success', input: { goal: 'x' }, output: 1, agentId: 'planner' });
        const base = { workflowExecId: wf, workflowId: 'tree', component: 'tool' as const, status: 'running' as const };
        await tx.tasks.upsert({
          ...base,
          taskExecId: left,
          taskId: 'left',
          parentStateId: root,
          toolId: 'search',
          executionType: 'parallel_2',
        });
        await tx.tasks.upsert({ ...base, taskExecId: right, taskId: 'right', parentStateId: root });
        await tx.tasks.upsert({ ...base, taskExecId: leaf, taskId: 'leaf', parentStateId: left });
        expect((await tx.tasks.get(left)).executionType).toBe('parallel_2');
        expect((await tx.tasks.children(root)).items.map((task) => task.taskExecId).sort()).toEqual([left, right].sort());
        expect((await tx.tasks.children(left)).items.map((task) => task.taskExecId)).toEqual([leaf]);
        expect((await tx.tasks.children(leaf)).items).toEqual([]);
        expect((await tx.tasks.list({ workflowExecId: wf })).items).toHaveLength(4);
        const updatedTask = await tx.tasks.updateStatus(right, { status: 'failed', error: { code: 'E' } });
        expect(updatedTask).toMatchObject({ status: 'failed', error: { code: 'E' }, output: null });
        await tx.tasks.delete(left);
        expect((await tx.tasks.list({ workflowExecId: wf })).items.map((task) => task.taskExecId).sort()).toEqual([root, right].sort());
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.delete(leaf)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.updateStatus(leaf, { status: 'success' })),
        'NOT_FOUND',
      );
    });

    it('a task pointing at a missing workflow execution or parent is NOT_FOUND, also one of another organization', async () => {
      const org = await newOrg('Dangling');
      const other = await newOrg('Foreign');
      const foreignWf = newExecId();
      const foreignTask = newExecId();
      await store.withOrg(other.id, async (tx) => {
        await tx.workflows.upsert({ workflowExecId: foreignWf, workflowId: 'w', status: 'running' });
        await tx.tasks.upsert({
          taskExecId: foreignTask,
          taskId: 't',
          workflowExecId: foreignWf,
          workflowId: 'w',
          component: 'task',
          status: 'running',
        });
      });
      const task = (workflowExecId: string, parentStateId?: string) => ({
        taskExecId: newExecId(),
        taskId: 't',
        workflowExecId,
        workflowId: 'w',
        component: 'task' as const,
        status: 'running' as const,
        ...(parentStateId ? { parentStateId } : {}),
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.upsert(task(NO_SUCH_ID))),
        'NOT_FOUND',
        'workflowExecId',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.upsert(task(foreignWf))),
        'NOT_FOUND',
        'workflowExecId',
      );
      const wf = newExecId();
      await store.withOrg(org.id, (tx) => tx.workflows.upsert({ workflowExecId: wf, workflowId: 'w', status: 'running' }));
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.upsert(task(wf, NO_SUCH_ID))),
        'NOT_FOUND',
        'parentStateId',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.tasks.upsert(task(wf, foreignTask))),
        'NOT_FOUND',
        'parentStateId',
      );
      expect((await ownedCounts(db, org.id)).task_states).toBe(0);
    });

    it('lists newest first; keyset pages neither skip nor repeat rows of one transaction (ties broken by id)', async () => {
      const org = await newOrg('Ties');
      // Ids deliberately not in insertion order.
      const sameTx = ['5', 'b', '1', 'e', '9', '3', 'c'].map((digit) => `018f7777-0000-7000-8000-${digit.repeat(12)}`);
      const tasks = ['4', 'a', '2', 'f', '8'].map((digit) => `018f8888-0000-7000-8000-${digit.repeat(12)}`);
      const wf = sameTx[0]!;
      await store.withOrg(org.id, async (tx) => {
        for (const id of sameTx) await tx.workflows.upsert({ workflowExecId: id, workflowId: 'tie', status: 'pending' });
        for (const id of tasks)
          await tx.tasks.upsert({
            taskExecId: id,
            taskId: 't',
            workflowExecId: wf,
            workflowId: 'tie',
            component: 'task',
            status: 'pending',
          });
      });
      await sleep(TICK_MS);
      const later = [newExecId(), newExecId()];
      await store.withOrg(org.id, async (tx) => {
        for (const id of later) await tx.workflows.upsert({ workflowExecId: id, workflowId: 'tie', status: 'pending' });
      });
      const { rows } = await db.query<{ n: number }>(
        'select count(distinct created_at)::int as n from workflow_states where org_id = $1 and workflow_exec_id = any($2::uuid[])',
        [org.id, sameTx],
      );
      expect(rows[0]!.n).toBe(1);
      const descending = (ids: string[]) => [...ids].sort().reverse();
      await store.withOrg(org.id, async (tx) => {
        const pages = await allPages(2, (after) => tx.workflows.list({ limit: 2, after }));
        expect(pages.map((page) => page.length)).toEqual([2, 2, 2, 2, 1]);
        expect(pages.flat().map((w) => w.workflowExecId)).toEqual([...descending(later), ...descending(sameTx)]);
        const taskPages = await allPages(2, (after) => tx.tasks.list({ workflowExecId: wf, limit: 2, after }));
        expect(taskPages.flat().map((task) => task.taskExecId)).toEqual(descending(tasks));
        const single = await allPages(1, (after) => tx.tasks.list({ limit: 1, after }));
        expect(single.flat().map((task) => task.taskExecId)).toEqual(descending(tasks));
      });
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('schedules', () => {
    it('create applies the defaults: UTC, enabled, no input, a version 7 id', async () => {
      const org = await newOrg('Schedules');
      const schedule = await store.withOrg(org.id, (tx) => tx.schedules.create({ workflowId: 'nightly', cronExpression: '  0 2 * * *  ' }));
      expect(schedule).toMatchObject({
        orgId: org.id,
        workflowId: 'nightly',
        cronExpression: '0 2 * * *',
        timezone: 'UTC',
        enabled: true,
        input: null,
        deletedAt: null,
      });
      expect(schedule.id).toMatch(UUID_V7);
      expect(Math.abs(v7Millis(schedule.id) - schedule.createdAt.getTime())).toBeLessThan(60_000);
      const explicit = await store.withOrg(org.id, (tx) =>
        tx.schedules.create({
          workflowId: 'paris',
          cronExpression: '@daily',
          timezone: 'Europe/Paris',
          enabled: false,
          input: { report: ['a', 'b'] },
        }),
      );
      expect(explicit).toMatchObject({ cronExpression: '@daily', timezone: 'Europe/Paris', enabled: false, input: { report: ['a', 'b'] } });
      expect(await store.withOrg(org.id, (tx) => tx.schedules.get(schedule.id))).toEqual(schedule);
    });

    it('update changes the given fields and keeps the others', async () => {
      const org = await newOrg('Schedule Updates');
      await store.withOrg(org.id, async (tx) => {
        const schedule = await tx.schedules.create({ workflowId: 'w', cronExpression: '*/5 * * * *', input: { keep: true } });
        const moved = await tx.schedules.update(schedule.id, { timezone: 'America/New_York', enabled: false });
        expect(moved).toMatchObject({
          cronExpression: '*/5 * * * *',
          timezone: 'America/New_York',
          enabled: false,
          input: { keep: true },
          workflowId: 'w',
        });
        const rescheduled = await tx.schedules.update(schedule.id, { cronExpression: '0 0 1 * *', input: [1] });
        expect(rescheduled).toMatchObject({ cronExpression: '0 0 1 * *', timezone: 'America/New_York', enabled: false, input: [1] });
        const unchanged = await tx.schedules.update(schedule.id, {});
        expect({ ...unchanged, updatedAt: null }).toEqual({ ...rescheduled, updatedAt: null });
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.schedules.update(NO_SUCH_ID, { enabled: true })),
        'NOT_FOUND',
      );
    });

    it('a time zone typed in another case is stored as the zone spells it; an alias is kept as given', async () => {
      const org = await newOrg('Schedule Zones');
      await store.withOrg(org.id, async (tx) => {
        const lower = await tx.schedules.create({ workflowId: 'w', cronExpression: '@daily', timezone: 'europe/paris' });
        expect(lower.timezone).toBe('Europe/Paris');
        expect((await tx.schedules.update(lower.id, { timezone: 'utc' })).timezone).toBe('UTC');
        expect((await tx.schedules.create({ workflowId: 'w', cronExpression: '@daily', timezone: 'US/Eastern' })).timezone).toBe(
          'US/Eastern',
        );
      });
    });

    it('list filters by workflow and enabled, newest first, paginated', async () => {
      const org = await newOrg('Schedule Lists');
      const created = await store.withOrg(org.id, async (tx) => {
        const rows = [];
        for (let i = 0; i < 5; i++)
          rows.push(await tx.schedules.create({ workflowId: i % 2 === 0 ? 'even' : 'odd', cronExpression: '@hourly', enabled: i !== 4 }));
        return rows;
      });
      await store.withOrg(org.id, async (tx) => {
        const ids = created.map((s) => s.id);
        const pages = await allPages(2, (after) => tx.schedules.list({ limit: 2, after }));
        expect(pages.flat().map((s) => s.id)).toEqual([...ids].sort().reverse());
        expect((await tx.schedules.list({ workflowId: 'odd' })).items.map((s) => s.id).sort()).toEqual([ids[1], ids[3]].sort());
        expect((await tx.schedules.list({ enabled: false })).items.map((s) => s.id)).toEqual([ids[4]]);
        expect((await tx.schedules.list({ workflowId: 'even', enabled: true })).items.map((s) => s.id).sort()).toEqual(
          [ids[0], ids[2]].sort(),
        );
      });
    });

    it('soft delete hides a schedule, restore brings it back, delete removes it for good', async () => {
      const org = await newOrg('Schedule Deletes');
      const [kept, removed] = await store.withOrg(org.id, async (tx) => [
        await tx.schedules.create({ workflowId: 'kept', cronExpression: '@daily' }),
        await tx.schedules.create({ workflowId: 'removed', cronExpression: '@daily' }),
      ]);
      const softDeleted = await store.withOrg(org.id, (tx) => tx.schedules.softDelete(kept!.id));
      expect(softDeleted.deletedAt).toBeInstanceOf(Date);
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.schedules.get(kept!.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.schedules.update(kept!.id, { enabled: false })),
        'NOT_FOUND',
      );
      await store.withOrg(org.id, async (tx) => {
        expect((await tx.schedules.get(kept!.id, { includeDeleted: true })).deletedAt).toEqual(softDeleted.deletedAt);
        expect((await tx.schedules.list()).items.map((s) => s.id)).toEqual([removed!.id]);
        expect((await tx.schedules.list({ includeDeleted: true })).items).toHaveLength(2);
        const restored = await tx.schedules.restore(kept!.id);
        expect(restored).toMatchObject({ id: kept!.id, workflowId: 'kept', deletedAt: null });
        expect((await tx.schedules.list()).items).toHaveLength(2);
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.schedules.restore(kept!.id)),
        'NOT_FOUND',
      );
      // delete works on live and soft-deleted schedules alike.
      await store.withOrg(org.id, async (tx) => {
        await tx.schedules.delete(kept!.id);
        await tx.schedules.softDelete(removed!.id);
        await tx.schedules.delete(removed!.id);
      });
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.schedules.get(kept!.id, { includeDeleted: true })),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.schedules.delete(removed!.id)),
        'NOT_FOUND',
      );
      expect((await ownedCounts(db, org.id)).schedules).toBe(0);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('updated_at', () => {
    it('changes on every kind of update, createdAt does not', async () => {
      const org = await newOrg('Timestamps');
      const wf = newExecId();
      const task = newExecId();
      const first = await store.withOrg(org.id, async (tx) => {
        const user = await tx.users.create({ email: 'clock@example.com', role: 'customer' });
        const workflow = await tx.workflows.upsert({ workflowExecId: wf, workflowId: 'w', status: 'running' });
        const taskState = await tx.tasks.upsert({
          taskExecId: task,
          taskId: 't',
          workflowExecId: wf,
          workflowId: 'w',
          component: 'task',
          status: 'running',
        });
        const schedule = await tx.schedules.create({ workflowId: 'w', cronExpression: '@daily' });
        return { user, workflow, taskState, schedule };
      });
      for (const row of Object.values(first)) expect(row.updatedAt.getTime()).toBe(row.createdAt.getTime());
      await sleep(TICK_MS);
      const second = await store.withOrg(org.id, async (tx) => ({
        user: await tx.users.changeRole(first.user.id, 'admin'),
        workflow: await tx.workflows.updateStatus(wf, { status: 'success' }),
        taskState: await tx.tasks.updateStatus(task, { status: 'success' }),
        schedule: await tx.schedules.update(first.schedule.id, { enabled: false }),
      }));
      for (const key of ['user', 'workflow', 'taskState', 'schedule'] as const) {
        expect(second[key].createdAt, key).toEqual(first[key].createdAt);
        expect(second[key].updatedAt.getTime(), key).toBeGreaterThan(first[key].updatedAt.getTime());
      }
      const renamed = await store.organizations.rename(org.id, uniqueName('Timestamps Renamed'));
      expect(renamed.updatedAt.getTime()).toBeGreaterThan(org.updatedAt.getTime());
    });

    it('cannot be set by callers: the API refuses the field, a raw update gets the transaction time', async () => {
      const org = await newOrg('Forgery');
      const wf = newExecId();
      await store.withOrg(org.id, (tx) => tx.workflows.upsert({ workflowExecId: wf, workflowId: 'w', status: 'running' }));
      await expectStoreError(
        store.withOrg(org.id, (tx) => tx.workflows.updateStatus(wf, { status: 'success', updatedAt: new Date(0) } as never)),
        'INVALID_INPUT',
        'updatedAt',
      );
      await expectStoreError(
        store.withOrg(org.id, (tx) =>
          tx.workflows.upsert({ workflowExecId: wf, workflowId: 'w', status: 'success', updatedAt: new Date(0) } as never),
        ),
        'INVALID_INPUT',
        'updatedAt',
      );
      // now() in a separate statement of the same transaction: Citus allows only immutable
      // functions in the RETURNING clause of a write.
      const forged = await withOrgSql(store, org.id, async (tx) => {
        const { rows } = await tx.query<{ updated_at: Date }>(
          `update workflow_states set updated_at = timestamptz '2000-01-01 00:00:00+00' where workflow_exec_id = $1 returning updated_at`,
          [wf],
        );
        return { rows, now: (await tx.query<{ now: Date }>('select now() as now')).rows[0]!.now };
      });
      expect(forged.rows).toHaveLength(1);
      if (backend.name === 'citus') {
        // The trigger runs on the worker, whose transaction starts a moment after the coordinator's.
        expect(Math.abs(forged.rows[0]!.updated_at.getTime() - forged.now.getTime())).toBeLessThan(1_000);
      } else {
        expect(forged.rows[0]!.updated_at).toEqual(forged.now);
      }
      const operator = await db.withSession(async (session) => {
        await session.exec('begin');
        try {
          const { rows } = await session.query<{ updated_at: Date }>(
            `update organizations set updated_at = timestamptz '2000-01-01 00:00:00+00' where id = $1 returning updated_at`,
            [org.id],
          );
          return { updatedAt: rows[0]!.updated_at, now: (await session.query<{ now: Date }>('select now() as now')).rows[0]!.now };
        } finally {
          await session.exec('commit');
        }
      });
      // A reference table's trigger runs on every node; the coordinator's copy answers here.
      expect(Math.abs(operator.updatedAt.getTime() - operator.now.getTime())).toBeLessThan(backend.name === 'citus' ? 1_000 : 1);
      expect((await store.organizations.get(org.id)).updatedAt.getUTCFullYear()).toBeGreaterThan(2000);
    });
  });
});
