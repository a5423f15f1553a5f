/**
 * Writes: inserting task states in batches through withOrg (app_tenant, row-level security,
 * the inactive-organization trigger, the repository's validation) against plain inserts of the
 * same rows by the owner in one transaction per batch, on the same pool in the same run. Both
 * send one statement per row, so the ratio is the cost per row of the tenant machinery.
 *
 *   npx tsx bench/writes.ts [--batches 40] [--batch-size 100] [--url URL]
 */
import { randomUUID } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { openStore } from '../engine/infra/store/index.ts';
import { percentile, withScratchDatabase } from './support.ts';

export interface WritesResult {
  storePerRowMs: number;
  floorPerRowMs: number;
  ratio: number;
}

export async function runWritesBench(options: { url: string; batches: number; batchSize: number; log: (line: string) => void }): Promise<WritesResult> {
  return withScratchDatabase(options.url, 'writes', async (url) => {
    const store = await openStore({ url, poolSize: 2, migrate: true });
    try {
      const org = await store.organizations.create({ name: 'Bench Writes' });
      const workflowExecId = randomUUID();
      await store.withOrg(org.id, (tx) => tx.workflows.upsert({ workflowExecId, workflowId: 'bench', status: 'running' }));
      const task = () => ({ taskExecId: randomUUID(), taskId: 'step', workflowExecId, workflowId: 'bench', component: 'task' as const, status: 'running' as const, input: { n: 1 } });

      const viaStore = async () => {
        await store.withOrg(org.id, async (tx) => {
          for (let i = 0; i < options.batchSize; i += 1) await tx.tasks.upsert(task());
        });
      };
      const floor = async () => {
        await store.db.withSession(async (session) => {
          await session.query('begin');
          for (let i = 0; i < options.batchSize; i += 1) {
            const row = task();
            await session.query(
              `insert into task_states (org_id, task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, input)
               values ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)`,
              [org.id, row.taskExecId, row.taskId, row.workflowExecId, row.workflowId, row.component, row.status, JSON.stringify(row.input)],
            );
          }
          await session.query('commit');
        });
      };
      const time = async (operation: () => Promise<void>) => {
        const started = performance.now();
        await operation();
        return (performance.now() - started) / options.batchSize;
      };
      await viaStore();
      await floor();
      const storeSamples: number[] = [];
      const floorSamples: number[] = [];
      // Interleaved batches, so drift in the machine's load hits both alike.
      for (let batch = 0; batch < options.batches; batch += 1) {
        storeSamples.push(await time(viaStore));
        floorSamples.push(await time(floor));
      }
      const result = {
        storePerRowMs: percentile(storeSamples, 0.5),
        floorPerRowMs: percentile(floorSamples, 0.5),
        ratio: percentile(storeSamples, 0.5) / percentile(floorSamples, 0.5),
      };
      options.log(
        `per row, batches of ${options.batchSize}: withOrg ${result.storePerRowMs.toFixed(3)} ms, owner inserts ${result.floorPerRowMs.toFixed(3)} ms, ${result.ratio.toFixed(2)}x`,
      );
      return result;
    } finally {
      await store.close();
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { batches: { type: 'string', default: '40' }, 'batch-size': { type: 'string', default: '100' }, url: { type: 'string' } },
  });
  const url = values.url ?? (process.env.TEST_DATABASE_URL || process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test');
  await runWritesBench({ url, batches: Number(values.batches), batchSize: Number(values['batch-size']), log: (line) => console.log(line) });
}

const invokedPath = process.argv[1];
if (invokedPath !== undefined && import.meta.url === pathToFileURL(realpathSync(invokedPath)).href) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exitCode = 1;
  });
}
