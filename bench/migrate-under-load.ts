/**
 * Migrate under load: applies the multi-tenancy migrations of the engine's existing tables (the
 * rollout's expand step, up to END_OF_EXPAND) to a seeded database while a single-tenant writer
 * keeps inserting and updating rows, and measures what the writer feels (latency, longest stall)
 * and whether any row goes missing.
 *
 *   npx tsx bench/migrate-under-load.ts [--n 200000] [--url postgres://postgres@127.0.0.1:5432/test] [--migrations DIR]
 *
 * --url is an admin connection: the benchmark creates its own scratch database
 * `engine_store_bench_<pid>` on that server and drops it at the end, also on failure.
 * --migrations measures another directory of migrations (say a patched copy) instead of the store's.
 * `runMigrateUnderLoad` is the same run as a function, for bench/run-all.ts.
 */
import { createHash, randomUUID } from 'node:crypto';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { DEFAULT_ORG_ID } from 'engine-store';
import { openDatabase, redactUrl, withDatabaseName, type Database } from '../engine/infra/store/connection/database.ts';
import { migrateUp } from '../engine/infra/store/migrator/runner.ts';
import { MIGRATIONS_DIR } from '../engine/infra/store/migrator/migration-files.ts';
import { percentile, serverUrlOr, runWhenInvoked } from './support.ts';

/** The last migration before the ones that rework the existing tables: the seeding happens here. */
const BEFORE_TENANCY = '20261128120000_add_multitenant_schema';
/**
 * The end of the rollout's expand step: the migrations a live single-tenant engine runs under.
 * After it comes row-level security, which needs an engine that passes its organization (the
 * writer here does not), so it is not part of this measurement (see the README's rollout).
 */
const END_OF_EXPAND = '20261128120400_validate_tenant_foreign_keys';
const DEFAULT_N = 200_000;
const TABLES = ['workflow_states', 'task_states', 'schedules'] as const;
type Table = (typeof TABLES)[number];

/** Rows per seeding statement: large enough to be fast, small enough to report progress. */
const SEED_BATCH = 50_000;
const BASELINE_MS = 3_000;
/** The writer keeps going this long after the migration, so a slow tail is seen too. */
const TAIL_MS = 1_000;
/** Concurrent writer connections; the test machines have two cores. */
const WRITER_CONNECTIONS = 2;
/** The migration under test must never hide a stall longer than this. */
const STALL_BUDGET_MS = 200;

export interface MigrateUnderLoadOptions {
  n: number;
  /** Admin connection to the server; the scratch database is created next to it. */
  url: string;
  log: (line: string) => void;
  /** The migrations to measure; the store's own by default. A patched copy can be tried here. */
  migrationsDir?: string;
}

export interface MigrateUnderLoadResult {
  migrationMs: number;
  longestStallMs: number;
  p99Ms: number;
  writerOps: number;
  baselineP99Ms: number;
  rowsBefore: Record<string, number>;
  rowsAfter: Record<string, number>;
  lost: number;
}

export async function runMigrateUnderLoad(options: MigrateUnderLoadOptions): Promise<MigrateUnderLoadResult> {
  const { n, log } = options;
  if (!Number.isInteger(n) || n < 1) throw new Error(`--n must be a positive whole number (got ${n})`);
  const adminUrl = localUrl(options.url);
  const dbName = `engine_store_bench_${process.pid}`;
  const scratchUrl = withDatabaseName(adminUrl, dbName);
  const admin = await openDatabase({ url: adminUrl, poolSize: 1 });
  // The run applies the migrations in two goes (seeding in between); both must see the same
  // files even if someone edits the migrations meanwhile, or the runner refuses the second go.
  const migrationsDir = snapshotMigrations(options.migrationsDir ?? MIGRATIONS_DIR);
  try {
    await admin.exec(`drop database if exists ${dbName} with (force)`);
    await admin.exec(`create database ${dbName}`);
    log(`scratch database ${redactUrl(scratchUrl)}`);
    const db = await openDatabase({ url: scratchUrl, poolSize: 2 });
    try {
      return await benchmark(db, scratchUrl, migrationsDir, n, log);
    } finally {
      await db.close();
    }
  } finally {
    // WITH (FORCE) ends any connection a failure left behind (writer, pool), so the drop cannot hang.
    await admin
      .exec(`drop database if exists ${dbName} with (force)`)
      .catch((error: unknown) => log(`could not drop ${dbName}: ${String(error)}`));
    await admin.close();
    rmSync(migrationsDir, { recursive: true, force: true });
  }
}

function snapshotMigrations(source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'engine-store-bench-migrations-'));
  cpSync(source, dir, { recursive: true });
  return dir;
}

async function benchmark(
  db: Database,
  scratchUrl: string,
  dir: string,
  n: number,
  log: (line: string) => void,
): Promise<MigrateUnderLoadResult> {
  await migrateUp(db, { dir, to: BEFORE_TENANCY });
  await seed(db, n, log);
  // The seeding's WAL (and an earlier benchmark's) is flushed now, so that the checkpoints the
  // migration meets are the ones its own WAL brings on, not a debt from before it started.
  await db.exec('checkpoint');

  log(`baseline: writer alone for ${BASELINE_MS / 1000} s, no migration`);
  const baselineWriter = await startWriter(scratchUrl, n);
  await sleep(BASELINE_MS);
  const baseline = await baselineWriter.stop();
  const baselineP99Ms = percentile(latencies(baseline.samples), 0.99);
  logBreakdown(baseline.samples, () => 'baseline (no migration)', log);

  // Counted after the baseline, whose inserts are part of "before".
  const rowsBefore = await countRows(db);
  const checkpointsBefore = await checkpointCount(db);
  log(`migrating under load (${WRITER_CONNECTIONS} writer connections)`);
  const timeline = new MigrationTimeline();
  const writer = await startWriter(scratchUrl, n);
  let migrationMs: number;
  let stats: WriterStats;
  try {
    const started = performance.now();
    await migrateUp(db, {
      dir,
      to: END_OF_EXPAND,
      log: (line) => log(`  [${((performance.now() - started) / 1000).toFixed(2)} s] ${timeline.note(line)}`),
    });
    migrationMs = performance.now() - started;
    timeline.finish();
    await sleep(TAIL_MS);
  } finally {
    // Also on failure: the writer must not outlive the migration.
    stats = await writer.stop();
  }
  const rowsAfter = await countRows(db);
  const lost = reportRows(rowsBefore, rowsAfter, stats.inserted, log);
  const misplaced = await countOutsideDefaultOrg(db);
  log(`rows outside the default organization ${DEFAULT_ORG_ID}: ${misplaced}`);

  const all = latencies(stats.samples);
  const p99Ms = percentile(all, 0.99);
  const stallStep = timeline.stepAt(stats.longest.startedAt);
  log('writer latency by migration step:');
  logBreakdown(stats.samples, (sample) => timeline.stepAt(sample.startedAt), log);
  log(`migration: ${ms(migrationMs)}`);
  // Checkpoints during the run make the writer's commits wait for the disk: the long stalls
  // of a large run come from there, not from locks. A larger max_wal_size avoids them.
  const { rows: walSetting } = await db.query<{ max_wal_size: string }>('show max_wal_size');
  const checkpoints = (await checkpointCount(db)) - checkpointsBefore;
  log(`checkpoints during the migration: ${checkpoints} (max_wal_size ${walSetting[0]?.max_wal_size})`);
  log(`writer: ${all.length} ops, ${stats.errors.size === 0 ? 'no errors' : `errors: ${describeErrors(stats.errors)}`}`);
  log(`  longest stall ${ms(stats.longest.ms)} (${stats.longest.kind}, during ${stallStep})`);
  log(`  p50 ${ms(percentile(all, 0.5))}, p99 ${ms(p99Ms)} vs baseline p99 ${ms(baselineP99Ms)} (x${(p99Ms / baselineP99Ms).toFixed(1)})`);
  if (stats.longest.ms > STALL_BUDGET_MS) log(`  WARNING: the longest stall exceeds the ${STALL_BUDGET_MS} ms budget`);
  if (misplaced > 0) throw new Error(`${misplaced} rows do not belong to the default organization`);
  const failed = [...stats.errors.values()].reduce((sum, count) => sum + count, 0);
  // Failed writes are not lost rows (they were never committed), but an engine that errors
  // during the rollout is a finding too, so the summary names them.
  log(
    `migrate-under-load n=${n}: migration ${ms(migrationMs)}, ${all.length} writer ops (${failed} failed), ` +
      `longest stall ${ms(stats.longest.ms)}, p99 ${ms(p99Ms)} (baseline ${ms(baselineP99Ms)}), ` +
      `rows ${lost === 0 ? 'all kept' : `${lost} LOST`}`,
  );
  return { migrationMs, longestStallMs: stats.longest.ms, p99Ms, writerOps: all.length, baselineP99Ms, rowsBefore, rowsAfter, lost };
}

// ---------------------------------------------------------------------------------------------
// Seeding

/**
 * N workflow executions and 3 tasks each, generated by the server (no data over the wire).
 * Ids are md5-derived so that tasks can name their workflow and parent without a lookup, and so
 * that the writer can pick an existing workflow by number (`seededWorkflowId`).
 */
async function seed(db: Database, n: number, log: (line: string) => void): Promise<void> {
  await seedTable(db, 'workflow_states', n, SEED_WORKFLOWS, log);
  // Task j belongs to workflow j/3; the 2nd and 3rd task of a workflow are children of the task
  // before them, so parents always come in an earlier or the same statement.
  await seedTable(db, 'task_states', 3 * n, SEED_TASKS, log);
  await db.exec('analyze');
}

const STATUSES = `(array['pending', 'running', 'success', 'success', 'success', 'failed', 'canceled'])`;

const SEED_WORKFLOWS = `
  insert into workflow_states (workflow_exec_id, workflow_id, status, input, output, error, created_at, updated_at)
  select md5('workflow-' || i)::uuid,
         'wf-def-' || (i % 50),
         ${STATUSES}[1 + i % 7],
         jsonb_build_object('order', i, 'customer', 'c-' || (i % 1000), 'items', jsonb_build_array(i % 7, i % 11, i % 13)),
         case when i % 7 between 2 and 4 then jsonb_build_object('total', i * 3, 'ok', true) end,
         case when i % 7 = 5 then jsonb_build_object('message', 'timeout after ' || (i % 60) || ' s') end,
         now() - make_interval(secs => $3 - i),
         now() - make_interval(secs => $3 - i)
  from generate_series($1::bigint, $2::bigint) as i`;

const SEED_TASKS = `
  insert into task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type,
                           agent_id, tool_id, parent_state_id, input, output, created_at, updated_at)
  select md5('task-' || j)::uuid,
         'step-' || (j % 3),
         md5('workflow-' || (j / 3))::uuid,
         'wf-def-' || ((j / 3) % 50),
         (array['agent', 'tool', 'task'])[1 + j % 3],
         ${STATUSES}[1 + (j / 3 + j % 3) % 7],
         case when j % 3 = 0 then 'basic' else 'parallel' end,
         case when j % 3 = 0 then 'agent-' || (j % 20) end,
         case when j % 3 = 1 then 'tool-' || (j % 30) end,
         case when j % 3 <> 0 then md5('task-' || (j - 1))::uuid end,
         jsonb_build_object('prompt', 'do step ' || (j % 3) || ' of ' || (j / 3), 'attempt', 1 + j % 2),
         case when j % 5 <> 0 then jsonb_build_object('result', md5(j::text)) end,
         now() - make_interval(secs => $3 - j / 3),
         now() - make_interval(secs => $3 - j / 3)
  from generate_series($1::bigint, $2::bigint) as j`;

async function seedTable(db: Database, table: Table, total: number, sql: string, log: (line: string) => void): Promise<void> {
  const started = performance.now();
  for (let from = 0; from < total; from += SEED_BATCH) {
    const to = Math.min(from + SEED_BATCH, total);
    await db.query(sql, [from, to - 1, total]);
    const seconds = (performance.now() - started) / 1000;
    log(`seed ${table}: ${to}/${total} rows (${Math.round((100 * to) / total)}%), ${Math.round(to / seconds)} rows/s`);
  }
}

/** The id `SEED_WORKFLOWS` gives workflow i: PostgreSQL's md5(text)::uuid, computed here. */
function seededWorkflowId(i: number): string {
  const hex = createHash('md5').update(`workflow-${i}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------
// The concurrent writer

interface WriterStats {
  /** One entry per committed or failed operation; `ms` is its latency. */
  samples: Sample[];
  /** The longest single operation: what a user would have seen as a stall. */
  longest: { ms: number; startedAt: number; kind: string };
  inserted: Record<Table, number>;
  /** Error message -> occurrences. */
  errors: Map<string, number>;
}

interface Sample {
  /** performance.now() when the operation began. */
  startedAt: number;
  ms: number;
  kind: string;
}

interface Writer {
  /** Asks the loops to finish their current operation, waits for them, closes the connections. */
  stop(): Promise<WriterStats>;
}

/**
 * What the engine does all day, as an engine that does not know about organizations yet does it:
 * no statement names org_id, so the same SQL works before, during and after the migration.
 * Each connection alternates two short transactions: insert a workflow execution with its first
 * task, and update the status of a random seeded workflow execution.
 */
async function startWriter(url: string, seeded: number): Promise<Writer> {
  const stats: WriterStats = {
    samples: [],
    longest: { ms: 0, startedAt: 0, kind: 'none' },
    inserted: { workflow_states: 0, task_states: 0, schedules: 0 },
    errors: new Map(),
  };
  let stopping = false;
  const clients = await Promise.all(
    Array.from({ length: WRITER_CONNECTIONS }, async () => {
      const client = new pg.Client({ connectionString: url });
      // A connection lost mid-run shows up as a failed operation; without a listener the
      // 'error' event would crash the process.
      client.on('error', () => undefined);
      await client.connect();
      return client;
    }),
  );

  // Runs one operation on `client`, recording its latency whether it commits or fails.
  const timed = async (kind: string, client: pg.Client, operation: () => Promise<void>): Promise<void> => {
    const startedAt = performance.now();
    try {
      await operation();
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      stats.errors.set(message, (stats.errors.get(message) ?? 0) + 1);
      await client.query('rollback').catch(() => undefined);
    }
    const elapsed = performance.now() - startedAt;
    stats.samples.push({ startedAt, ms: elapsed, kind });
    if (elapsed > stats.longest.ms) stats.longest = { ms: elapsed, startedAt, kind };
  };

  const loop = async (client: pg.Client): Promise<void> => {
    const insert = async () => {
      const workflowId = randomUUID();
      await client.query('begin');
      await client.query(
        `insert into workflow_states (workflow_exec_id, workflow_id, status, input) values ($1, 'wf-def-load', 'running', $2)`,
        [workflowId, { source: 'migrate-under-load' }],
      );
      await client.query(
        `insert into task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, input)
         values ($1, 'step-0', $2, 'wf-def-load', 'task', 'running', $3)`,
        [randomUUID(), workflowId, { attempt: 1 }],
      );
      await client.query('commit');
      // Counted only once committed: these are the rows that must be there afterwards.
      stats.inserted.workflow_states += 1;
      stats.inserted.task_states += 1;
    };
    const update = async () => {
      await client.query('begin');
      await client.query(`update workflow_states set status = $2, updated_at = now() where workflow_exec_id = $1`, [
        seededWorkflowId(Math.floor(Math.random() * seeded)),
        Math.random() < 0.5 ? 'success' : 'failed',
      ]);
      await client.query('commit');
    };
    // Bounded: stop() sets `stopping`, and every operation is a few statements long.
    while (!stopping) {
      await timed('insert workflow+task', client, insert);
      if (stopping) break;
      await timed('update workflow status', client, update);
    }
  };

  const loops = clients.map(loop);
  return {
    async stop() {
      stopping = true;
      await Promise.all(loops);
      await Promise.all(clients.map((client) => client.end()));
      return stats;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Measurements and checks

/** Remembers when each migration started, to tell which one a stall happened in. */
class MigrationTimeline {
  private readonly steps: { at: number; name: string }[] = [];

  /** Passes a log line of migrateUp through, noting the "↑ <name>" lines. */
  note(line: string): string {
    const match = /^↑ (\S+)/.exec(line);
    if (match?.[1]) this.steps.push({ at: performance.now(), name: match[1] });
    return line;
  }

  /** Marks the end of the migration run: later samples belong to the tail. */
  finish(): void {
    this.steps.push({ at: performance.now(), name: 'after the migration' });
  }

  stepAt(time: number): string {
    const step = this.steps.filter((candidate) => candidate.at <= time).at(-1);
    return step ? step.name : 'before the first migration';
  }
}

/** Checkpoints the server has started so far (PostgreSQL 15-16 keep them in pg_stat_bgwriter). */
async function checkpointCount(db: Database): Promise<number> {
  const { rows } = await db.query<{ n: number }>('select (checkpoints_timed + checkpoints_req)::int as n from pg_stat_bgwriter');
  return rows[0]?.n ?? 0;
}

async function countRows(db: Database): Promise<Record<Table, number>> {
  const counts = {} as Record<Table, number>;
  for (const table of TABLES) {
    const { rows } = await db.query<{ count: number }>(`select count(*) as count from ${table}`);
    counts[table] = rows[0]?.count ?? 0;
  }
  return counts;
}

async function countOutsideDefaultOrg(db: Database): Promise<number> {
  let total = 0;
  for (const table of TABLES) {
    const { rows } = await db.query<{ count: number }>(`select count(*) as count from ${table} where org_id is distinct from $1`, [
      DEFAULT_ORG_ID,
    ]);
    total += rows[0]?.count ?? 0;
  }
  return total;
}

/** Prints before/after per table and returns how many rows are missing (after < before + inserted). */
function reportRows(
  before: Record<Table, number>,
  after: Record<Table, number>,
  inserted: Record<Table, number>,
  log: (line: string) => void,
): number {
  let lost = 0;
  for (const table of TABLES) {
    const expected = before[table] + inserted[table];
    const missing = Math.max(0, expected - after[table]);
    lost += missing;
    const verdict = after[table] === expected ? 'ok' : missing > 0 ? `${missing} LOST` : `${after[table] - expected} unexpected extra`;
    log(`rows ${table}: before ${before[table]} + writer ${inserted[table]} = ${expected}, after ${after[table]}: ${verdict}`);
  }
  return lost;
}

function latencies(samples: Sample[]): number[] {
  return samples.map((sample) => sample.ms);
}

/** One line per (group, kind of operation): ops, p50, p99, max; shows where latency changes. */
function logBreakdown(samples: Sample[], groupOf: (sample: Sample) => string, log: (line: string) => void): void {
  const groups = new Map<string, number[]>();
  for (const sample of samples) {
    const key = `${groupOf(sample)} | ${sample.kind}`;
    const group = groups.get(key) ?? [];
    group.push(sample.ms);
    groups.set(key, group);
  }
  for (const [key, group] of groups) {
    const [where, kind] = key.split(' | ');
    log(
      `  ${where}: ${kind}: ${group.length} ops, p50 ${ms(percentile(group, 0.5))}, p99 ${ms(percentile(group, 0.99))}, max ${ms(group.reduce((a, b) => Math.max(a, b), 0))}`,
    );
  }
}

function describeErrors(errors: Map<string, number>): string {
  return [...errors].map(([message, count]) => `${count}x "${message}"`).join(', ');
}

function ms(value: number): string {
  return value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${value.toFixed(1)} ms`;
}

function sleep(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

/** The benchmark creates and force-drops databases: it only ever talks to this machine. */
function localUrl(url: string): string {
  const host = new URL(url).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(host)) {
    throw new Error(`refusing to run against ${redactUrl(url)}: the benchmark only uses a server on 127.0.0.1`);
  }
  return url;
}

// ---------------------------------------------------------------------------------------------
// Command line

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: String(DEFAULT_N) },
      url: { type: 'string' },
      migrations: { type: 'string' },
    },
  });
  const n = Number(values.n);
  const url = serverUrlOr(values.url);
  // The last line it logs is the one-line summary.
  const result = await runMigrateUnderLoad({ n, url, migrationsDir: values.migrations, log: (line) => console.log(line) });
  if (result.lost > 0) process.exitCode = 1;
}

runWhenInvoked(import.meta.url, main, { stack: true });
