/** What the benchmarks share: scratch databases, percentiles, and running as a script. */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { openDatabase } from '../engine/infra/store/connection/database.ts';
import { withDatabaseName } from '../test/support/servers.ts';

export { serverUrlOr } from '../test/support/servers.ts';

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
