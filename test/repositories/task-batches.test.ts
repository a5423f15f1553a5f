/**
 * tx.tasks.upsertMany(), on every backend: upsert() for many task states in one statement.
 *
 * It writes every row and returns them in input order, with the same values upsert() stores;
 * a batch may hold a task and its children (in any order); upserting the same ids again changes
 * their status and keeps the payloads not given; [] writes nothing; input is checked before
 * anything is sent (array, at most 1,000, each entry with its index in the field, duplicate ids,
 * self-parents); and a batch is atomic: one entry that points at a workflow execution or parent
 * this organization does not have (absent, or another organization's) writes none of the rows,
 * nor changes the existing ones. A suspended organization refuses the batch.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { TaskState, UpsertTaskState } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, migratedStoreFor } from '../support/backends.ts';

const tag = () => randomBytes(4).toString('hex');

/** The fields of a task state that upsert input sets, as the store returns them. */
function stored(input: UpsertTaskState) {
  return {
    taskExecId: input.taskExecId.toLowerCase(),
    taskId: input.taskId,
    workflowExecId: input.workflowExecId.toLowerCase(),
    workflowId: input.workflowId,
    component: input.component,
    status: input.status,
    executionType: input.executionType ?? 'basic',
    agentId: input.agentId ?? null,
    toolId: input.toolId ?? null,
    actionId: input.actionId ?? null,
    parentStateId: input.parentStateId?.toLowerCase() ?? null,
    input: input.input ?? null,
    output: input.output ?? null,
    error: input.error ?? null,
    usage: input.usage ?? null,
  };
}

describe.each(backends)('tasks.upsertMany ($name)', (backend) => {
  const migrated = migratedStoreFor(backend);

  /** A fresh organization with one workflow execution. */
  async function freshOrg(): Promise<{ orgId: string; workflowExecId: string }> {
    const orgId = (await migrated.store.organizations.create({ name: `Org ${tag()}` })).id;
    const workflowExecId = randomUUID();
    await migrated.store.withOrg(orgId, (tx) => tx.workflows.upsert({ workflowExecId, workflowId: 'wf', status: 'running' }));
    return { orgId, workflowExecId };
  }

  const task = (workflowExecId: string, fields: Partial<UpsertTaskState> = {}): UpsertTaskState => ({
    taskExecId: randomUUID(),
    taskId: 'step',
    workflowExecId,
    workflowId: 'wf',
    component: 'task',
    status: 'pending',
    ...fields,
  });

  /** Every task state of the organization, by id. */
  async function tasksOf(orgId: string): Promise<Map<string, TaskState>> {
    const page = await migrated.store.withOrg(orgId, (tx) => tx.tasks.list({ limit: 500 }));
    expect(page.nextCursor).toBeUndefined();
    return new Map(page.items.map((item) => [item.taskExecId, item]));
  }

  it('writes every row and returns them in input order', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const inputs: UpsertTaskState[] = [
      task(workflowExecId, {
        taskId: 'fetch',
        component: 'tool',
        status: 'running',
        toolId: 'http',
        actionId: 'get',
        input: { url: 'https://example.com' },
      }),
      task(workflowExecId, { taskId: 'think', component: 'agent', agentId: 'planner', executionType: 'router', usage: { tokens: 12 } }),
      task(workflowExecId, { taskId: 'send', status: 'success', output: ['sent', 2], error: null }),
      task(workflowExecId, {
        taskId: 'wait',
        status: 'waiting',
        input: 'a plain string',
        output: 0,
        error: { code: 'E', detail: [null, true] },
      }),
      task(workflowExecId, { taskExecId: randomUUID().toUpperCase(), taskId: 'shout', status: 'failed', input: '{"looks":"like json"}' }),
    ];
    const written = await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(inputs));

    expect(written.map((state) => state.taskExecId)).toEqual(inputs.map((input) => input.taskExecId.toLowerCase()));
    written.forEach((state, index) => {
      expect(state).toMatchObject({ ...stored(inputs[index]!), orgId });
      expect(state.createdAt).toBeInstanceOf(Date);
    });
    // What was returned is what is stored.
    const all = await tasksOf(orgId);
    expect(all.size).toBe(inputs.length);
    for (const state of written) expect(all.get(state.taskExecId)).toEqual(state);
  });

  it('stores the same values as upsert() does, one by one', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const payloads = [{ a: [1, 2, { b: null }] }, 'text', 42.5, [], {}, true, 'é✓ "quoted" \\ back'];
    const shapes: Partial<UpsertTaskState>[] = payloads.map((payload, index) => ({
      taskId: `t${index}`,
      status: 'running' as const,
      input: payload,
      output: payload,
      usage: { index },
    }));
    // Identifiers JSON must escape, and every optional column given.
    shapes.push({
      taskId: 'say "hi" \\ é✓ 😀',
      workflowId: 'wf',
      component: 'tool',
      agentId: 'a"b',
      toolId: 'c\\d',
      actionId: 'ü',
      executionType: 'fan_out',
      error: null,
    });
    const many = await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(shapes.map((shape) => task(workflowExecId, shape))));
    const single = await migrated.store.withOrg(orgId, async (tx) => {
      const states = [];
      for (const shape of shapes) states.push(await tx.tasks.upsert(task(workflowExecId, shape)));
      return states;
    });
    const comparable = (state: TaskState) => ({ ...state, taskExecId: undefined, createdAt: undefined, updatedAt: undefined });
    expect(many.map(comparable)).toEqual(single.map(comparable));
  });

  it('keeps payload text that only looks like a refused escape, and paired surrogates, as given', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    // A backslash typed before u0000 or ud800 is text, not an escape; an emoji is a surrogate pair.
    const input = { typed: '\\u0000 and \\ud800', doubled: '\\\\u0000', emoji: '😀', ['key \\u0000']: 'x' };
    const [written] = await migrated.store.withOrg(orgId, (tx) =>
      tx.tasks.upsertMany([task(workflowExecId, { taskId: 'escapes', status: 'running', input })]),
    );
    expect(written!.input).toEqual(input);
    const read = await migrated.store.withOrg(orgId, (tx) => tx.tasks.get(written!.taskExecId));
    expect(read.input).toEqual(input);
  });

  it('a batch may hold a task and its children, the children listed first', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const root = task(workflowExecId, { taskId: 'root', component: 'agent' });
    const child = task(workflowExecId, { taskId: 'child', parentStateId: root.taskExecId });
    const grandchild = task(workflowExecId, { taskId: 'grandchild', parentStateId: child.taskExecId.toUpperCase() });
    const sibling = task(workflowExecId, { taskId: 'sibling', parentStateId: root.taskExecId });
    const written = await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany([grandchild, child, sibling, root]));
    expect(written.map((state) => [state.taskId, state.parentStateId])).toEqual([
      ['grandchild', child.taskExecId],
      ['child', root.taskExecId],
      ['sibling', root.taskExecId],
      ['root', null],
    ]);
    const children = await migrated.store.withOrg(orgId, (tx) => tx.tasks.children(root.taskExecId));
    expect(children.items.map((state) => state.taskExecId).sort()).toEqual([child.taskExecId, sibling.taskExecId].sort());
    // The tree is real: deleting the root cascades to every descendant.
    await migrated.store.withOrg(orgId, (tx) => tx.tasks.delete(root.taskExecId));
    expect((await tasksOf(orgId)).size).toBe(0);
  });

  it('upserting the same ids again changes their status and keeps the payloads not given', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const first = [0, 1, 2].map((index) =>
      task(workflowExecId, { taskId: `t${index}`, status: 'running', input: { index }, output: { partial: index }, usage: { calls: 1 } }),
    );
    const created = await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(first));

    // Again, in another order, with a new status; only the second one gives new payloads.
    const again: UpsertTaskState[] = [first[2]!, first[0]!, first[1]!].map((previous) => ({
      taskExecId: previous.taskExecId,
      taskId: previous.taskId,
      workflowExecId,
      workflowId: 'wf',
      component: 'task',
      status: 'success',
      ...(previous === first[0] ? { output: { final: true }, error: { none: 1 } } : {}),
    }));
    const updated = await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(again));
    expect(updated.map((state) => state.taskExecId)).toEqual([first[2]!, first[0]!, first[1]!].map((input) => input.taskExecId));
    for (const state of updated) {
      const index = first.findIndex((input) => input.taskExecId === state.taskExecId);
      const before = created[index]!;
      expect(state.status).toBe('success');
      expect(state.input).toEqual({ index });
      expect(state.usage).toEqual({ calls: 1 });
      expect(state.output).toEqual(index === 0 ? { final: true } : { partial: index });
      expect(state.error).toEqual(index === 0 ? { none: 1 } : null);
      expect(state.createdAt).toEqual(before.createdAt);
    }
    const all = await tasksOf(orgId);
    expect(all.size).toBe(3);
    for (const state of updated) expect(all.get(state.taskExecId)).toEqual(state);
  });

  it('an empty batch returns [] and writes nothing', async () => {
    const { orgId } = await freshOrg();
    expect(await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany([]))).toEqual([]);
    expect((await tasksOf(orgId)).size).toBe(0);
  });

  it('takes 1,000 states at once and refuses 1,001 (INVALID_INPUT states, too_big)', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const thousand = Array.from({ length: 1000 }, (_, index) => task(workflowExecId, { taskId: `t${index}` }));
    const written = await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(thousand));
    expect(written.map((state) => state.taskExecId)).toEqual(thousand.map((input) => input.taskExecId));
    expect(written.map((state) => state.taskId)).toEqual(thousand.map((input) => input.taskId));

    const { orgId: other, workflowExecId: otherWorkflow } = await freshOrg();
    const tooMany = Array.from({ length: 1001 }, () => task(otherWorkflow));
    const error = await expectStoreError(
      migrated.store.withOrg(other, (tx) => tx.tasks.upsertMany(tooMany)),
      'INVALID_INPUT',
    );
    expect(error.details).toMatchObject({ field: 'states', reason: 'too_big' });
    expect((await tasksOf(other)).size).toBe(0);
  });

  it('refuses anything but an array (INVALID_INPUT states)', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    for (const notAnArray of [{}, null, undefined, 'tasks', { 0: task(workflowExecId), length: 1 }]) {
      const error = await expectStoreError(
        migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(notAnArray as unknown as UpsertTaskState[])),
        'INVALID_INPUT',
      );
      expect(error.details.field).toBe('states');
    }
    expect((await tasksOf(orgId)).size).toBe(0);
  });

  it('names the index of an invalid entry in the field, and writes none of the batch', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const cases: { entry: unknown; at: number; field: string }[] = [
      { entry: task(workflowExecId, { taskId: '' }), at: 3, field: '3.taskId' },
      { entry: task(workflowExecId, { component: 'robot' as never }), at: 1, field: '1.component' },
      { entry: task(workflowExecId, { taskExecId: 'not-a-uuid' }), at: 0, field: '0.taskExecId' },
      { entry: { ...task(workflowExecId), surprise: 1 }, at: 2, field: '2.surprise' },
      { entry: task(workflowExecId, { input: { nul: 'a\u0000b' } }), at: 4, field: '4.input' },
      { entry: null, at: 3, field: '3.' },
    ];
    for (const { entry, at, field } of cases) {
      const batch: unknown[] = Array.from({ length: 5 }, () => task(workflowExecId));
      batch[at] = entry;
      const error = await expectStoreError(
        migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(batch as UpsertTaskState[])),
        'INVALID_INPUT',
      );
      expect(error.details.field?.startsWith(`${at}.`), `field ${error.details.field}`).toBe(true);
      expect(error.details.field?.startsWith(field), `field ${error.details.field}`).toBe(true);
    }
    expect((await tasksOf(orgId)).size).toBe(0);
  });

  it('refuses a taskExecId given twice (INVALID_INPUT, duplicate), whatever its case', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const id = randomUUID();
    for (const twice of [id, id.toUpperCase()]) {
      const error = await expectStoreError(
        migrated.store.withOrg(orgId, (tx) =>
          tx.tasks.upsertMany([
            task(workflowExecId, { taskExecId: id }),
            task(workflowExecId),
            task(workflowExecId, { taskExecId: twice, status: 'success' }),
          ]),
        ),
        'INVALID_INPUT',
      );
      expect(error.details.reason).toBe('duplicate');
    }
    expect((await tasksOf(orgId)).size).toBe(0);
  });

  it('refuses a task that is its own parent (INVALID_INPUT, self_reference) naming its index', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const self = randomUUID();
    for (const parent of [self, self.toUpperCase()]) {
      const error = await expectStoreError(
        migrated.store.withOrg(orgId, (tx) =>
          tx.tasks.upsertMany([
            task(workflowExecId),
            task(workflowExecId),
            task(workflowExecId, { taskExecId: self, parentStateId: parent }),
          ]),
        ),
        'INVALID_INPUT',
      );
      expect(error.details.reason).toBe('self_reference');
      expect(error.details.field?.startsWith('2.'), `field ${error.details.field}`).toBe(true);
    }
    expect((await tasksOf(orgId)).size).toBe(0);
  });

  it('is atomic: an entry naming a workflow execution the organization does not have writes none of the batch', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const { orgId: otherOrg, workflowExecId: othersWorkflow } = await freshOrg();
    const existing = await migrated.store.withOrg(orgId, (tx) =>
      tx.tasks.upsert(task(workflowExecId, { status: 'running', output: { kept: true } })),
    );

    for (const missing of [randomUUID(), othersWorkflow]) {
      const batch = [
        task(workflowExecId),
        { ...task(workflowExecId), taskExecId: existing.taskExecId, status: 'failed' as const, output: { overwritten: true } },
        task(missing),
        task(workflowExecId),
      ];
      const error = await expectStoreError(
        migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany(batch)),
        'NOT_FOUND',
      );
      expect(error.details.field).toBe('workflowExecId');
    }
    // Nothing of either batch: the existing task unchanged, no new one here or in the other org.
    const all = await tasksOf(orgId);
    expect([...all.keys()]).toEqual([existing.taskExecId]);
    expect(all.get(existing.taskExecId)).toEqual(existing);
    expect((await tasksOf(otherOrg)).size).toBe(0);
  });

  it('is atomic: an entry naming a parent the organization does not have writes none of the batch', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    const { orgId: otherOrg, workflowExecId: othersWorkflow } = await freshOrg();
    const [othersTask] = await migrated.store.withOrg(otherOrg, (tx) => tx.tasks.upsertMany([task(othersWorkflow)]));
    for (const parent of [randomUUID(), othersTask!.taskExecId]) {
      const error = await expectStoreError(
        migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany([task(workflowExecId), task(workflowExecId, { parentStateId: parent })])),
        'NOT_FOUND',
      );
      expect(error.details.field).toBe('parentStateId');
    }
    expect((await tasksOf(orgId)).size).toBe(0);
    expect([...(await tasksOf(otherOrg)).keys()]).toEqual([othersTask!.taskExecId]);
  });

  it('a suspended organization refuses the batch (ORG_SUSPENDED) and nothing is written', async () => {
    const { orgId, workflowExecId } = await freshOrg();
    await migrated.store.organizations.suspend(orgId);
    await expectStoreError(
      migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany([task(workflowExecId), task(workflowExecId)])),
      'ORG_SUSPENDED',
    );
    expect((await tasksOf(orgId)).size).toBe(0);
    await migrated.store.organizations.activate(orgId);
    expect(await migrated.store.withOrg(orgId, (tx) => tx.tasks.upsertMany([task(workflowExecId)]))).toHaveLength(1);
  });
});
