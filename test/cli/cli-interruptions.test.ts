/**
 * `engine-store migrate` interrupted, as an operator sees it (PostgreSQL server, real
 * processes): Ctrl-C during a long index build, and the server going away mid-run. Each time
 * the process says where it stopped and how to continue, with the exit code the README gives,
 * never a stack trace; and nothing of the run is left on the server.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type Database, type Session } from '../../engine/infra/store/connection/database.ts';
import { migrateUp } from '../../engine/infra/store/migrator/runner.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { startCli } from '../support/cli.ts';

const INDEXES = '20261128120300_index_existing_tables_by_org';
/** Advisory locks are the server's: only this test's database counts (other files migrate meanwhile). */
const THIS_DATABASE = '(select oid from pg_database where datname = current_database())';

/** Starts the CLI on the server database `url`. */
function start(args: string[], url: string): ReturnType<typeof startCli> {
  return startCli(args, { DATABASE_URL: url });
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let tries = 0; !(await check()); tries += 1) {
    if (tries > 1_000) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe.skipIf(!serverUrl)('engine-store migrate, interrupted', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let operator: Database;

  beforeEach(async () => {
    server = await createServerDatabase();
    operator = await openDatabase({ url: server.url, poolSize: 3 });
    const previous = await openDatabase({ url: server.url, poolSize: 1 });
    await migrateUp(previous, { to: '20261128120200_key_existing_tables_by_org' });
    await previous.close();
  });
  afterEach(async () => {
    await operator?.close();
    await server?.drop();
  });

  /** Runs `work` while a writer's transaction is open: a concurrent index build waits for it. */
  async function withWriterOpen(work: (writer: Session) => Promise<void>): Promise<void> {
    await operator.withSession(async (writer) => {
      await writer.exec('begin; lock table workflow_states in row exclusive mode');
      try {
        await work(writer);
      } finally {
        await writer.exec('rollback').catch(() => undefined);
      }
    });
  }

  const buildWaiting = async () =>
    (
      await operator.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity where datname = current_database() and query ilike 'create index concurrently%' and wait_event_type = 'Lock'`,
      )
    ).rows[0]!.n > 0;

  async function leftOnServer(): Promise<{ statements: number; locks: number }> {
    const { rows } = await operator.query<{ statements: number; locks: number }>(
      `select (select count(*)::int from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query ilike '%concurrently%' and state = 'active') as statements,
              (select count(*)::int from pg_locks where locktype = 'advisory' and database = ${THIS_DATABASE}) as locks`,
    );
    return rows[0]!;
  }

  it('Ctrl-C cancels the index build on the server, releases the lock, exits 130 saying where it stopped; status and up take it from there', async () => {
    await withWriterOpen(async () => {
      const run = start(['migrate', 'up'], server.url);
      await until(buildWaiting, 'the index build waits');
      process.kill(run.pid, 'SIGINT');
      const exit = await run.exited;
      expect(exit.code).toBe(130);
      expect(exit.stderr).toMatch(/SIGINT: stopping the migration run/);
      expect(exit.stderr).toMatch(
        new RegExp(
          `error \\[MIGRATION_INTERRUPTED\\] migration ${INDEXES} \\(up\\) was stopped during statement 3 of 21 \\(line \\d+\\), which was cancelled; .*partly applied.*run engine-store migrate up to finish it`,
        ),
      );
      expect(exit.stderr).not.toMatch(/\n\s+at /);
    });
    expect(await leftOnServer()).toEqual({ statements: 0, locks: 0 });

    const status = start(['migrate', 'status'], server.url);
    const shown = await status.exited;
    expect(shown.stdout).toMatch(new RegExp(`partly applied\\s+${INDEXES}\\s+\\(resumes at statement 1 of 21\\)`));
    expect(shown.stdout).toMatch(/run engine-store migrate up to finish it, or migrate down to revert it/);

    const up = await start(['migrate', 'up'], server.url).exited;
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(new RegExp(`↑ ${INDEXES} \\(outside a transaction\\), resumed after 0 of its 21 statements`));
    expect((await start(['migrate', 'status', '--json'], server.url).exited).stdout).toMatch(/"upToDate": true/);
  }, 120_000);

  it('the server ending the connection mid-run: CONNECTION_LOST, exit 3, no stack trace; up finishes the migration', async () => {
    await withWriterOpen(async () => {
      const run = start(['migrate', 'up'], server.url);
      await until(buildWaiting, 'the index build waits');
      await operator.query(
        `select pg_terminate_backend(pid, 5000) from pg_locks where locktype = 'advisory' and database = ${THIS_DATABASE}`,
      );
      const exit = await run.exited;
      expect(exit.code).toBe(3);
      expect(exit.stderr).toMatch(
        new RegExp(`error \\[CONNECTION_LOST\\] the connection to .* was lost .*in migration ${INDEXES} \\(up\\).*partly applied`),
      );
      expect(exit.stderr).not.toMatch(/\n\s+at /);
    });
    expect(await leftOnServer()).toEqual({ statements: 0, locks: 0 });
    const up = await start(['migrate', 'up'], server.url).exited;
    expect(up.code).toBe(0);
  }, 120_000);
});
