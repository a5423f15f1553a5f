/** `engine-store citus distribute`: moves a migrated database onto its Citus cluster. */
import type { Command } from 'commander';
import { distributeOnCitus, type DistributionReport } from '../infra/store/citus/distribute.ts';
import { StoreError } from '../infra/store/errors.ts';
import { withDatabase } from './with-database.ts';
import { targetOf, type GlobalOptions } from './database-target.ts';
import { read } from './flags.ts';
import type { Output } from './output.ts';

export function addCitusCommand(program: Command, output: Output): void {
  const citus = program.command('citus').description('run the store on a Citus cluster');

  citus
    .command('distribute')
    .description('shard the tenant tables by organization and copy the global ones to every node (on the coordinator; idempotent)')
    .option('--shard-count <n>', 'shards per distributed table', read('--shard-count'), 32)
    .action(async (options: { shardCount: number }, command: Command) => {
      if (!('url' in targetOf(command.optsWithGlobals<GlobalOptions>()))) {
        throw new StoreError('INVALID_INPUT', 'citus distribute needs the coordinator: give --database-url or DATABASE_URL', {
          field: '--database-url',
        });
      }
      await withDatabase(command, output, async (db) => {
        const report = await distributeOnCitus(db, { shardCount: options.shardCount, log: output.progress });
        output.result(report, () => reportLines(report));
      });
    });
}

function reportLines(report: DistributionReport): string[] {
  if (report.referenceTables.length === 0 && report.distributedTables.length === 0)
    return [`nothing to do: already distributed over ${report.workers} worker(s)`];
  return [
    `reference tables: ${report.referenceTables.join(', ') || '(already)'}`,
    `distributed by org_id: ${report.distributedTables.join(', ') || '(already)'}`,
    `rows: ${Object.entries(report.rows)
      .map(([table, count]) => `${table} ${count}`)
      .join(', ')}`,
  ];
}
