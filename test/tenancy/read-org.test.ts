/**
 * store.readOrg(), on every backend: single reads of one organization, each in a read-only
 * transaction of its own as app_tenant.
 *
 * It returns exactly what withOrg returns for the same reads; it never returns another
 * organization's rows (gets of their ids are NOT_FOUND, lists hold none of them, also with many
 * reads of two organizations at once); its org id is checked like withOrg's; a suspended
 * organization can still be read and a soft-deleted one reads as nothing; the database itself
 * refuses writes through it (FORBIDDEN, reason read_only) and nothing is written; and no
 * pooled connection keeps anything of it (role, org, read-only mode).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeOver, type Store, type TenantReads, type TenantScope } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { pooledConnections } from '../support/connections.ts';

const tag = () => randomBytes(4).toString('hex');

/** The rows one organization is given in the fixture. */
interface Fixture {
  orgId: string;
  users: { id: string; email: string }[];
  workflows: string[];
  parentTask: string;
  childTasks: string[];
  scheduleId: string;
  apiKeyId: string;
}

describe.each(withCitus(backends))('readOrg ($name)', (backend) => {
  let database: TestDatabase;
  let store: Store;
  let owner: string;
  let a: Fixture;
  let b: Fixture;
  /** A workflow execution id used by both organizations (two rows). */
  const shared = randomUUID();

  async function newOrg(): Promise<string> {
    return (await store.organizations.create({ name: `Org ${tag()}` })).id;
  }

  async function populate(orgId: string, workflowCount: number): Promise<Fixture> {
    return store.withOrg(orgId, async (tx) => {
      const users = [];
      for (const role of ['admin', 'manager', 'customer'] as const) {
        const user = await tx.users.create({ email: `${role}-${tag()}@example.com`, role });
        users.push({ id: user.id, email: user.email });
      }
      const workflows = [shared, ...Array.from({ length: workflowCount - 1 }, () => randomUUID())];
      for (const [index, workflowExecId] of workflows.entries()) {
        await tx.workflows.upsert({
          workflowExecId,
          workflowId: index % 2 ? 'odd' : 'even',
          status: 'running',
          input: { org: orgId, index },
        });
      }
      const parentTask = randomUUID();
      const childTasks = [randomUUID(), randomUUID()];
      await tx.tasks.upsert({
        taskExecId: parentTask,
        taskId: 'parent',
        workflowExecId: shared,
        workflowId: 'even',
        component: 'agent',
        status: 'running',
      });
      for (const taskExecId of childTasks) {
        await tx.tasks.upsert({
          taskExecId,
          taskId: 'child',
          workflowExecId: shared,
          workflowId: 'even',
          component: 'tool',
          status: 'pending',
          parentStateId: parentTask,
        });
      }
      const schedule = await tx.schedules.create({ workflowId: 'nightly', cronExpression: '0 2 * * *' });
      const { apiKey } = await tx.apiKeys.issue({ userId: users[0]!.id, name: `key ${tag()}` });
      return { orgId, users, workflows, parentTask, childTasks, scheduleId: schedule.id, apiKeyId: apiKey.id };
    });
  }

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
    owner = (await store.db.query<{ user: string }>('select current_user::text as "user"')).rows[0]!.user;
    expect(owner).not.toBe('app_tenant');
    a = await populate(await newOrg(), 5);
    b = await populate(await newOrg(), 3);
  });

  afterAll(async () => {
    await database?.dispose();
  });

  /** Every read readOrg offers, run through `reads` (readOrg or a withOrg scope). */
  async function everyRead(reads: TenantReads, fixture: Fixture) {
    const firstPage = await reads.workflows.list({ limit: 2 });
    return {
      workflowPages: [
        firstPage,
        await reads.workflows.list({ limit: 2, after: firstPage.nextCursor }),
        await reads.workflows.list({ limit: 50, workflowId: 'even' }),
      ],
      workflow: await reads.workflows.get(fixture.workflows[1]!),
      sharedWorkflow: await reads.workflows.get(shared),
      users: await reads.users.list(),
      admins: await reads.users.list({ role: 'admin' }),
      user: await reads.users.get(fixture.users[1]!.id),
      userByEmail: await reads.users.getByEmail(fixture.users[2]!.email),
      children: await reads.tasks.children(fixture.parentTask),
      tasks: await reads.tasks.list({ workflowExecId: shared }),
      task: await reads.tasks.get(fixture.childTasks[0]!),
      schedules: await reads.schedules.list(),
      schedule: await reads.schedules.get(fixture.scheduleId),
      apiKeys: await reads.apiKeys.list(),
      apiKey: await reads.apiKeys.get(fixture.apiKeyId),
    };
  }

  it('returns exactly what withOrg returns for the same reads', async () => {
    for (const fixture of [a, b]) {
      const viaReadOrg = await everyRead(store.readOrg(fixture.orgId), fixture);
      const viaWithOrg = await store.withOrg(fixture.orgId, (tx) => everyRead(tx, fixture));
      expect(viaReadOrg).toEqual(viaWithOrg);

      // And what it returns is the fixture, not something empty on both sides.
      const [page1, page2, even] = viaReadOrg.workflowPages;
      expect(page1!.items).toHaveLength(2);
      expect(page1!.nextCursor).toEqual(expect.any(String));
      expect(page2!.items).toHaveLength(Math.min(2, fixture.workflows.length - 2));
      const paged = [...page1!.items, ...page2!.items].map((item) => item.workflowExecId);
      expect(new Set(paged).size).toBe(paged.length);
      expect(even!.items.map((item) => item.workflowExecId).sort()).toEqual(fixture.workflows.filter((_, index) => index % 2 === 0).sort());
      expect(viaReadOrg.workflow).toMatchObject({
        workflowExecId: fixture.workflows[1],
        orgId: fixture.orgId,
        input: { org: fixture.orgId, index: 1 },
      });
      expect(viaReadOrg.sharedWorkflow).toMatchObject({
        workflowExecId: shared,
        orgId: fixture.orgId,
        input: { org: fixture.orgId, index: 0 },
      });
      expect(viaReadOrg.users.items.map((user) => user.id).sort()).toEqual(fixture.users.map((user) => user.id).sort());
      expect(viaReadOrg.admins.items.map((user) => user.id)).toEqual([fixture.users[0]!.id]);
      expect(viaReadOrg.user.id).toBe(fixture.users[1]!.id);
      expect(viaReadOrg.userByEmail.id).toBe(fixture.users[2]!.id);
      expect(viaReadOrg.children.items.map((task) => task.taskExecId).sort()).toEqual([...fixture.childTasks].sort());
      expect(viaReadOrg.tasks.items).toHaveLength(3);
      expect(viaReadOrg.task).toMatchObject({ taskExecId: fixture.childTasks[0], parentStateId: fixture.parentTask, orgId: fixture.orgId });
      expect(viaReadOrg.schedules.items.map((schedule) => schedule.id)).toEqual([fixture.scheduleId]);
      expect(viaReadOrg.schedule.id).toBe(fixture.scheduleId);
      expect(viaReadOrg.apiKeys.items.map((key) => key.id)).toEqual([fixture.apiKeyId]);
      expect(viaReadOrg.apiKey.id).toBe(fixture.apiKeyId);
    }
  });

  it("never returns another organization's rows", async () => {
    const reads = store.readOrg(a.orgId);
    await expectStoreError(() => reads.workflows.get(b.workflows[1]!), 'NOT_FOUND');
    await expectStoreError(() => reads.users.get(b.users[0]!.id), 'NOT_FOUND');
    await expectStoreError(() => reads.users.getByEmail(b.users[0]!.email), 'NOT_FOUND');
    await expectStoreError(() => reads.tasks.get(b.parentTask), 'NOT_FOUND');
    await expectStoreError(() => reads.tasks.get(b.childTasks[1]!), 'NOT_FOUND');
    await expectStoreError(() => reads.schedules.get(b.scheduleId), 'NOT_FOUND');
    await expectStoreError(() => reads.apiKeys.get(b.apiKeyId), 'NOT_FOUND');
    // The children of B's task, asked in A: none.
    expect((await reads.tasks.children(b.parentTask)).items).toEqual([]);
    // An id both organizations use is A's row in A.
    expect(await reads.workflows.get(shared)).toMatchObject({ orgId: a.orgId, input: { org: a.orgId, index: 0 } });

    const idsOfB = new Set([
      ...b.workflows.filter((id) => id !== shared),
      ...b.users.map((user) => user.id),
      b.parentTask,
      ...b.childTasks,
      b.scheduleId,
      b.apiKeyId,
    ]);
    const [workflows, users, tasks, schedules, apiKeys] = await Promise.all([
      reads.workflows.list({ limit: 500 }),
      reads.users.list({ limit: 500, includeDeleted: true }),
      reads.tasks.list({ limit: 500 }),
      reads.schedules.list({ limit: 500, includeDeleted: true }),
      reads.apiKeys.list({ limit: 500, includeDeleted: true }),
    ]);
    expect(workflows.items.map((item) => item.workflowExecId).sort()).toEqual([...a.workflows].sort());
    expect(users.items.map((item) => item.id).sort()).toEqual(a.users.map((user) => user.id).sort());
    expect(tasks.items.map((item) => item.taskExecId).sort()).toEqual([a.parentTask, ...a.childTasks].sort());
    expect(schedules.items.map((item) => item.id)).toEqual([a.scheduleId]);
    expect(apiKeys.items.map((item) => item.id)).toEqual([a.apiKeyId]);
    const items = [...workflows.items, ...users.items, ...tasks.items, ...schedules.items, ...apiKeys.items];
    for (const item of items) expect(item.orgId).toBe(a.orgId);
    const ids = [
      ...workflows.items.map((item) => item.workflowExecId),
      ...users.items.map((item) => item.id),
      ...tasks.items.map((item) => item.taskExecId),
      ...schedules.items.map((item) => item.id),
      ...apiKeys.items.map((item) => item.id),
    ];
    expect(ids.filter((id) => idsOfB.has(id))).toEqual([]);
  });

  it('many reads of two organizations at once each see their own organization only', async () => {
    const rounds = await Promise.all(
      Array.from({ length: 24 }, (_, i) => {
        const fixture = i % 2 ? b : a;
        return store
          .readOrg(fixture.orgId)
          .workflows.list({ limit: 500 })
          .then((page) => ({ fixture, page }));
      }),
    );
    for (const { fixture, page } of rounds) {
      expect(page.items.map((item) => item.workflowExecId).sort()).toEqual([...fixture.workflows].sort());
      for (const item of page.items) expect(item.orgId).toBe(fixture.orgId);
    }
  });

  it('checks the org id like withOrg does', async () => {
    await expectStoreError(() => store.readOrg('not-a-uuid').workflows.list(), 'INVALID_INPUT', 'orgId');
    await expectStoreError(() => store.readOrg(`${a.orgId} `).workflows.list(), 'INVALID_INPUT', 'orgId');
    await expectStoreError(() => store.readOrg('').workflows.list(), 'INVALID_INPUT', 'orgId');
    await expectStoreError(() => store.readOrg(undefined as unknown as string).workflows.list(), 'TENANT_SCOPE_REQUIRED');
    // A well-formed id of no organization reads as nothing.
    expect((await store.readOrg(randomUUID()).workflows.list()).items).toEqual([]);
    // The id is not case-sensitive.
    expect((await store.readOrg(a.orgId.toUpperCase()).workflows.get(a.workflows[1]!)).orgId).toBe(a.orgId);
  });

  it('a suspended organization can still be read', async () => {
    const orgId = await newOrg();
    const workflowExecId = randomUUID();
    const written = await store.withOrg(orgId, (tx) =>
      tx.workflows.upsert({ workflowExecId, workflowId: 'wf', status: 'paused', input: { x: 1 } }),
    );
    await store.organizations.suspend(orgId);
    const reads = store.readOrg(orgId);
    expect(await reads.workflows.get(workflowExecId)).toEqual(written);
    expect((await reads.workflows.list()).items).toEqual([written]);
    // While writes are refused.
    await expectStoreError(
      () => store.withOrg(orgId, (tx) => tx.workflows.upsert({ workflowExecId: randomUUID(), workflowId: 'wf', status: 'running' })),
      'ORG_SUSPENDED',
    );
  });

  it('a soft-deleted organization reads as nothing, and again as itself once restored', async () => {
    const orgId = await newOrg();
    const workflowExecId = randomUUID();
    const { written, user } = await store.withOrg(orgId, async (tx) => ({
      written: await tx.workflows.upsert({ workflowExecId, workflowId: 'wf', status: 'running' }),
      user: await tx.users.create({ email: `gone-${tag()}@example.com`, role: 'admin' }),
    }));
    expect((await store.readOrg(orgId).workflows.list()).items).toEqual([written]);

    await store.organizations.softDelete(orgId);
    const reads = store.readOrg(orgId);
    expect((await reads.workflows.list()).items).toEqual([]);
    expect((await reads.users.list({ includeDeleted: true })).items).toEqual([]);
    await expectStoreError(() => reads.workflows.get(workflowExecId), 'NOT_FOUND');
    await expectStoreError(() => reads.users.get(user.id), 'NOT_FOUND');

    await store.organizations.restore(orgId);
    expect(await store.readOrg(orgId).workflows.get(workflowExecId)).toEqual(written);
  });

  it('the database refuses writes through it: FORBIDDEN (read_only), and nothing is written', async () => {
    const orgId = await newOrg();
    const existing = randomUUID();
    const before = await store.withOrg(orgId, (tx) =>
      tx.workflows.upsert({ workflowExecId: existing, workflowId: 'wf', status: 'running' }),
    );
    // readOrg's type offers no writes; the object behind it is asked anyway.
    const sneaky = store.readOrg(orgId) as unknown as TenantScope;
    const fresh = randomUUID();

    const refusals = [
      () => sneaky.workflows.upsert({ workflowExecId: fresh, workflowId: 'wf', status: 'running' }),
      () => sneaky.workflows.upsert({ workflowExecId: existing, workflowId: 'wf', status: 'failed' }),
      () => sneaky.workflows.updateStatus(existing, { status: 'success' }),
      () => sneaky.workflows.delete(existing),
      () => sneaky.users.create({ email: `ro-${tag()}@example.com`, role: 'admin' }),
      () => sneaky.kysely.insertInto('workflow_states').values({ workflow_exec_id: fresh, workflow_id: 'wf', status: 'running' }).execute(),
    ];
    for (const refused of refusals) {
      const error = await expectStoreError(refused, 'FORBIDDEN');
      expect(error.details.reason).toBe('read_only');
    }

    await store.withOrg(orgId, async (tx) => {
      await expectStoreError(() => tx.workflows.get(fresh), 'NOT_FOUND');
      expect(await tx.workflows.get(existing)).toEqual(before);
      expect((await tx.workflows.list()).items).toEqual([before]);
      expect((await tx.users.list()).items).toEqual([]);
    });
  });

  it('leaves no trace on the pooled connections', async () => {
    const attempts = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) => {
        const fixture = i % 2 ? b : a;
        const reads = store.readOrg(fixture.orgId);
        switch (i % 4) {
          case 0:
            return reads.workflows.list();
          case 1:
            return reads.users.get(randomUUID()); // NOT_FOUND
          case 2:
            return (reads as unknown as TenantScope).workflows.upsert({
              workflowExecId: randomUUID(),
              workflowId: 'wf',
              status: 'running',
            }); // FORBIDDEN
          default:
            return reads.tasks.children(fixture.parentTask);
        }
      }),
    );
    expect(attempts.map((attempt) => attempt.status)).toEqual(
      Array.from({ length: 40 }, (_, i) => (i % 4 === 1 || i % 4 === 2 ? 'rejected' : 'fulfilled')),
    );

    for (let round = 0; round < 3; round += 1) {
      const states = await pooledConnections(store.db);
      for (const state of states) {
        expect(state).toMatchObject({ user: owner, role: 'none', readOnly: 'off' });
        expect([null, '']).toContain(state.org);
      }
      if (backend.name === 'postgres') expect(new Set(states.map((state) => state.pid)).size).toBe(6);
    }
    // And the owner can write on them again (no read-only transaction left behind).
    const { rowCount } = await store.db.query(`update organizations set name = name where id = $1`, [a.orgId]);
    expect(rowCount).toBe(1);
  });
});
