/** `engine-store migrate up|down|status`: the migration runner on the command line. */
import { Option, type Command } from 'commander';
import {
  DEFAULT_LOCK_RETRIES,
  DEFAULT_LOCK_TIMEOUT,
  migrateDown,
  migrateUp,
  migrationStatus,
  type MigrationStatus,
} from '../infra/store/migrator/runner.ts';
import { withDatabase } from './with-database.ts';
import { read } from './flags.ts';
import { EXIT, type Output } from './output.ts';

/** The lock options of both directions. */
const lockTimeoutOption = () =>
  new Option('--lock-timeout <duration>', 'lock_timeout of each migration statement that takes a strong lock')
    .argParser(read('--lock-timeout'))
    .default(DEFAULT_LOCK_TIMEOUT);
const lockRetriesOption = () =>
  new Option('--lock-retries <n>', 'times to retry after a lock timeout, with back-off')
    .argParser(read('--lock-retries'))
    .default(DEFAULT_LOCK_RETRIES);

export function addMigrateCommand(program: Command, output: Output): void {
  const migrate = program.command('migrate').description('apply, revert or inspect schema migrations');

  migrate
    .command('up')
    .description('apply pending migrations, in order (makes the embedded database where there is none)')
    .option('--to <name>', 'stop after this migration', read('--to'))
    .option('--create-database', 'on a server, create the database the URL names if it does not exist (the login needs CREATEDB)')
    .addOption(lockTimeoutOption())
    .addOption(lockRetriesOption())
    .action(async (options: { to?: string; createDatabase?: boolean; lockTimeout: string; lockRetries: number }, command: Command) => {
      await withDatabase(
        command,
        output,
        (db) =>
          untilSignal(async (signal) => {
            const steps = await migrateUp(db, {
              to: options.to,
              lockTimeout: options.lockTimeout,
              lockRetries: options.lockRetries,
              log: output.progress,
              signal,
            });
            output.result({ applied: steps }, () => [`${steps.length} migration(s) applied`]);
          }),
        { creates: true, createsOnServer: options.createDatabase === true },
      );
    });

  migrate
    .command('down')
    .description(
      'revert the last N applied migrations (default 1), newest first, or those after --to. Every step is checked ' +
        'before the first: a run that a step would refuse is refused whole, with the list. A revert that was ' +
        'interrupted is finished first and is not one of the N; --to names the end state, so the same command run ' +
        'again after an interruption ends in the same place',
    )
    .argument('[n]', 'how many migrations to revert (default 1)', read('<n>'))
    .option('--to <name>', 'revert every migration applied after this one, which stays applied', read('--to'))
    .addOption(lockTimeoutOption())
    .addOption(lockRetriesOption())
    .option('--force', 'revert even where a step drops a table that holds rows (the rows are lost)')
    .action(
      async (
        count: number | undefined,
        options: { to?: string; lockTimeout: string; lockRetries: number; force?: boolean },
        command: Command,
      ) => {
        await withDatabase(command, output, (db) =>
          untilSignal(async (signal) => {
            const steps = await migrateDown(db, {
              ...(count !== undefined ? { count } : {}),
              ...(options.to !== undefined ? { to: options.to } : {}),
              force: options.force === true,
              lockTimeout: options.lockTimeout,
              lockRetries: options.lockRetries,
              log: output.progress,
              signal,
            });
            output.result({ reverted: steps }, () => [`${steps.length} migration(s) reverted`]);
          }),
        );
      },
    );

  migrate
    .command('status')
    .description('list migrations: applied, pending, edited since applied, or missing')
    .action(async (_options: object, command: Command) => {
      await withDatabase(command, output, async (db) => {
        const status = await migrationStatus(db);
        output.result(status, () => statusLines(status));
        // Pending migrations are normal; edited or missing ones are a problem to fix.
        if (status.migrations.some((entry) => entry.state === 'edited' || entry.state === 'missing')) {
          process.exitCode = EXIT.migrationsInconsistent;
        }
      });
    });
}

/**
 * Runs a migration with Ctrl-C and SIGTERM wired to its stop signal: the runner cancels the
 * statement in flight, stops before the next one, releases its lock and fails with
 * MIGRATION_INTERRUPTED saying where it stopped. A second signal ends the process at once.
 */
async function untilSignal(work: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const stop = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (stop.signal.aborted) process.exit(EXIT.interrupted);
    process.stderr.write(
      `engine-store: ${name}: stopping the migration run (cancelling the statement in flight); send it again to quit at once\n`,
    );
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await work(stop.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function statusLines(status: MigrationStatus): string[] {
  const count = (state: string) => status.migrations.filter((entry) => entry.state === state).length;
  const width = Math.max(0, ...status.migrations.map((entry) => entry.name.length));
  const lines = [`database: ${status.location}`];
  const stateWidth = Math.max(8, ...status.migrations.map((entry) => entry.state.length));
  for (const entry of status.migrations) {
    const when = entry.appliedAt ? `  ${entry.appliedAt} (${entry.durationMs} ms)` : '';
    const progress = entry.progress ? `  (resumes at statement ${entry.progress.done + 1} of ${entry.progress.of})` : '';
    lines.push(`  ${entry.state.replace('_', ' ').padEnd(stateWidth)} ${entry.name.padEnd(width)}${when}${progress}`);
    if (entry.hint) lines.push(`    ${entry.hint}`);
  }
  const problems = count('edited') + count('missing');
  const interrupted = count('partly_applied') + count('partly_reverted');
  lines.push(
    `${count('applied')} applied, ${count('pending')} pending` +
      (interrupted > 0 ? `, ${interrupted} interrupted` : '') +
      (problems > 0
        ? `, ${count('edited')} edited, ${count('missing')} missing: fix before migrating`
        : status.upToDate
          ? ': up to date'
          : ''),
  );
  return lines;
}
