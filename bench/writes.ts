/**
 * Writes: inserting task states in batches through withOrg (one upsertMany statement per batch,
 * as app_tenant under row-level security, with the inactive-organization trigger, the
 * repository's validation and the scope's transaction) against the same statement run by the
 * owner without row-level security (its org_id given explicitly), in a transaction per batch
 * sent the same way (BEGIN with the statement, then COMMIT), on the same pool in the same run.
 * The ratio is the per-row cost of the tenant machinery.
 *
 *   npx tsx bench/writes.ts [--batches 300] [--batch-size 100] [--url URL]
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { openStore, type Store, type UpsertTaskState } from 'engine-store';
import { batchColumns } from '../engine/infra/store/repositories/task-input.ts';
import { UPSERT_BATCH_SQL } from '../engine/infra/store/repositories/tasks.ts';
import { alternatingP50, withScratchDatabase, serverUrlOr, runWhenInvoked } from './support.ts';

export interface WritesResult {
  batchSize: number;
  storePerRowMs: number;
  floorPerRowMs: number;
  ratio: number;
}

const BEGIN = { sql: 'begin', prepare: true };

/** The store's batch statement for the owner: org_id given, since no tenant scope supplies it. */
const OWNER_BATCH_SQL = UPSERT_BATCH_SQL.replace('insert into task_states (', 'insert into task_states (org_id, ').replace(
  'select task_exec_id,',
  'select $2::uuid, task_exec_id,',
);

export async function runWritesBench(options: {
  url: string;
  batches: number;
  batchSize: number;
  log: (line: string) => void;
}): Promise<WritesResult> {
  return withScratchDatabase(options.url, 'writes', async (url) => {
    const store = await openStore({ url, poolSize: 2, migrate: true });
    try {
      const org = await store.organizations.create({ name: 'Bench Writes' });
      const result = await measureWrites(store, org.id, options);
      options.log(
        `per row, batches of ${options.batchSize}: withOrg ${result.storePerRowMs.toFixed(4)} ms, owner ${result.floorPerRowMs.toFixed(4)} ms, ${result.ratio.toFixed(2)}x`,
      );
      return result;
    } finally {
      await store.close();
    }
  });
}

/** The writes ratio on an open store, in organization `orgId` (which gains a workflow and the task states). */
export async function measureWrites(store: Store, orgId: string, options: { batches: number; batchSize: number }): Promise<WritesResult> {
  if (OWNER_BATCH_SQL === UPSERT_BATCH_SQL) throw new Error('the owner variant of the batch statement could not be derived');
  const workflowExecId = randomUUID();
  await store.withOrg(orgId, (tx) => tx.workflows.upsert({ workflowExecId, workflowId: 'bench', status: 'running' }));
  const batch = (): UpsertTaskState[] =>
    Array.from({ length: options.batchSize }, () => ({
      taskExecId: randomUUID(),
      taskId: 'step',
      workflowExecId,
      workflowId: 'bench',
      component: 'task' as const,
      status: 'running' as const,
      input: { n: 1 },
    }));
  const viaStore = () => store.withOrg(orgId, (tx) => tx.tasks.upsertMany(batch()));
  // The same rows as the store sends them (its JSON shape), in a transaction of the same
  // shape as withOrg's: BEGIN travels with the statement, COMMIT follows. What differs is
  // only the tenancy: role, setting, policies, trigger, validation, session reset.
  const floor = () =>
    store.db.withSession(async (session) => {
      await session.pipeline([BEGIN, { sql: OWNER_BATCH_SQL, params: [JSON.stringify(batch().map(batchColumns)), orgId], prepare: true }]);
      await session.exec('commit');
    });
  // Warm-up: the store's path runs more JavaScript than the floor's, and is measured once
  // the JIT has compiled it (about 30 batches here), as it would be in a running engine.
  await alternatingP50(30, viaStore, floor);
  // 300 batches by default: with 100 the p50 ratio wandered by +-0.04 between runs here,
  // with 300 by +-0.01 (a batch is ~5 ms, so this is still seconds).
  const { subjectMs, floorMs } = await alternatingP50(options.batches, viaStore, floor);
  return {
    batchSize: options.batchSize,
    storePerRowMs: subjectMs / options.batchSize,
    floorPerRowMs: floorMs / options.batchSize,
    ratio: subjectMs / floorMs,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { batches: { type: 'string', default: '300' }, 'batch-size': { type: 'string', default: '100' }, url: { type: 'string' } },
  });
  const url = serverUrlOr(values.url);
  await runWritesBench({ url, batches: Number(values.batches), batchSize: Number(values['batch-size']), log: (line) => console.log(line) });
}

runWhenInvoked(import.meta.url, main);
