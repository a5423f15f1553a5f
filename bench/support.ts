/** What the benchmarks share: scratch databases, percentiles, and running as a script. */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { openDatabase, type Queryable } from '../engine/infra/store/connection/database.ts';
import { withDatabaseName } from '../test/support/servers.ts';

export { serverUrlOr } from '../test/support/servers.ts';

/**
 * `count` organizations named `<label> org <n>`, each with one user and one API key, written as
 * the owner in three statements (the API's per-call cost is not what the benchmarks measure).
 * The keys are as verification finds them: a prefix registered in api_key_prefixes and a 32-byte
 * digest; nobody holds their secrets. Statistics are refreshed afterwards, so that the planner
 * sees tables of production's shape rather than of one row.
 */
export async function seedKeyedOrganizations(db: Queryable, label: string, count: number): Promise<void> {
  await db.query(
    `insert into organizations (name, temporal_namespace)
     select $1 || ' org ' || g, $1 || '-org-' || g from generate_series(1, $2::int) g`,
    [label, count],
  );
  await db.query(
    `insert into users (org_id, email, role)
     select id, 'owner@' || temporal_namespace || '.example', 'manager' from organizations where name like $1 || ' org %'`,
    [label],
  );
  await db.query(
    `with made as (
       select u.org_id, u.id as user_id, substr(md5(u.org_id::text), 1, 12) as prefix
         from users u join organizations o on o.id = u.org_id
        where o.name like $1 || ' org %')
     , prefixes as (insert into api_key_prefixes (prefix, org_id) select prefix, org_id from made)
     insert into api_keys (org_id, user_id, prefix, key_hash, name)
     select org_id, user_id, prefix, sha256(prefix::bytea), 'seeded' from made`,
    [label],
  );
  await db.query('analyze organizations, users, api_keys, api_key_prefixes');
}

/**
 * Whether `ratio`, as the tables print it (two decimals), is at most `goal`: a row that reads
 * 1.10x against a goal of 1.10x has met it, whatever the third decimal.
 */
export function withinGoal(ratio: number, goal: number): boolean {
  return Number(ratio.toFixed(2)) <= goal;
}

/** `operation` run `iterations` times, one after another: each call's latency, in ms. */
export async function timeEach(iterations: number, operation: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < iterations; i += 1) {
    const started = performance.now();
    await operation();
    samples.push(performance.now() - started);
  }
  return samples;
}

/** Nearest-rank percentile, in ms; 0 for no samples. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? 0;
}

/**
 * Runs `work` on a new database `engine_store_bench_<label>_<pid>` beside the admin URL's, and
 * drops it afterwards, also on failure.
 */
export async function withScratchDatabase<T>(adminUrl: string, label: string, work: (url: string) => Promise<T>): Promise<T> {
  const name = `engine_store_bench_${label}_${process.pid}`;
  const admin = await openDatabase({ url: adminUrl, poolSize: 1 });
  try {
    await admin.exec(`drop database if exists ${name} with (force)`);
    await admin.exec(`create database ${name}`);
    return await work(withDatabaseName(adminUrl, name));
  } finally {
    await admin.exec(`drop database if exists ${name} with (force)`).catch(() => undefined);
    await admin.close();
  }
}

/**
 * Times `subject` and `floor` alternately, `iterations` times each, and returns each one's p50 in
 * ms. Alternating (and swapping which goes first) makes drift in a noisy machine's load hit
 * both alike, so that their ratio means something even when the absolute figures wander.
 */
export async function alternatingP50(
  iterations: number,
  subject: () => Promise<unknown>,
  floor: () => Promise<unknown>,
): Promise<{ subjectMs: number; floorMs: number }> {
  const subjectSamples: number[] = [];
  const floorSamples: number[] = [];
  const time = async (operation: () => Promise<unknown>, samples: number[]) => {
    const started = performance.now();
    await operation();
    samples.push(performance.now() - started);
  };
  for (let i = 0; i < iterations; i += 1) {
    if (i % 2 === 0) {
      await time(subject, subjectSamples);
      await time(floor, floorSamples);
    } else {
      await time(floor, floorSamples);
      await time(subject, subjectSamples);
    }
  }
  return { subjectMs: percentile(subjectSamples, 0.5), floorMs: percentile(floorSamples, 0.5) };
}

/**
 * Runs `main` when the module at `moduleUrl` is the script node was started with (not when
 * run-all.ts imports it), printing a failure in one line (`stack`: the whole stack) with exit 1.
 */
export function runWhenInvoked(moduleUrl: string, main: () => Promise<void>, { stack = false } = {}): void {
  const invokedPath = process.argv[1];
  if (invokedPath === undefined || moduleUrl !== pathToFileURL(realpathSync(invokedPath)).href) return;
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? (stack ? (error.stack ?? error.message) : error.message) : String(error));
    process.exitCode = 1;
  });
}
