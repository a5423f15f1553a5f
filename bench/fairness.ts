/**
 * One organization's overload against another's reads (issue #23): 50 callers of a busy
 * organization keep scopes open for 200 ms each, over and over, on a tenant pool of 5; a quiet
 * organization's `readOrg` p99 is measured while they do, against its p99 with no load, in the
 * same run. The goal is at most 2x. With the busy organization's share of the pool bounded
 * (orgPoolShare, default half), the quiet one always finds a connection; with a share of the
 * whole pool (`--share 1`) it queues behind the busy one, as it did before the share existed.
 *
 *   npx tsx bench/fairness.ts [--share 0.5] [--reads 300] [--url URL]
 */
import { parseArgs } from 'node:util';
import { openStore, isStoreError } from 'engine-store';
import { percentile, serverUrlOr, withScratchDatabase, runWhenInvoked } from './support.ts';

const POOL_SIZE = 5;
const BUSY_CALLERS = 50;
const HOLD_MS = 200;

export interface FairnessResult {
  unloadedP99Ms: number;
  loadedP99Ms: number;
  ratio: number;
  busyScopes: number;
  busyRefused: number;
}

export async function runFairnessBench(options: {
  url: string;
  share: number;
  reads: number;
  log: (line: string) => void;
}): Promise<FairnessResult> {
  return withScratchDatabase(options.url, 'fairness', async (url) => {
    const store = await openStore({ url, migrate: true, poolSize: POOL_SIZE, orgPoolShare: options.share });
    try {
      const busy = (await store.organizations.create({ name: 'Busy' })).id;
      const quiet = (await store.organizations.create({ name: 'Quiet' })).id;
      const readQuiet = async (): Promise<number[]> => {
        const samples: number[] = [];
        for (let i = 0; i < options.reads; i++) {
          const started = performance.now();
          await store.readOrg(quiet).workflows.list();
          samples.push(performance.now() - started);
        }
        return samples;
      };
      await readQuiet(); // warm-up
      const unloaded = await readQuiet();
      let running = true;
      let busyScopes = 0;
      let busyRefused = 0;
      const callers = Array.from({ length: BUSY_CALLERS }, async () => {
        while (running) {
          try {
            await store.withOrg(busy, async (tx) => {
              await tx.users.list();
              await new Promise((resolve) => setTimeout(resolve, HOLD_MS));
            });
            busyScopes++;
          } catch (error) {
            if (!isStoreError(error, 'POOL_EXHAUSTED')) throw error;
            busyRefused++;
          }
        }
      });
      await new Promise((resolve) => setTimeout(resolve, 500)); // the busy organization fills its share
      const loaded = await readQuiet();
      running = false;
      await Promise.all(callers);
      const unloadedP99Ms = percentile(unloaded, 0.99);
      const loadedP99Ms = percentile(loaded, 0.99);
      const result = { unloadedP99Ms, loadedP99Ms, ratio: loadedP99Ms / unloadedP99Ms, busyScopes, busyRefused };
      options.log(
        `quiet organization's readOrg p99: ${loadedP99Ms.toFixed(3)} ms under load, ${unloadedP99Ms.toFixed(3)} ms without, ` +
          `${result.ratio.toFixed(2)}x (goal: at most 2x); busy organization: ${busyScopes} scopes done, ${busyRefused} refused (POOL_EXHAUSTED)`,
      );
      return result;
    } finally {
      await store.close();
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { share: { type: 'string', default: '0.5' }, reads: { type: 'string', default: '300' }, url: { type: 'string' } },
  });
  await runFairnessBench({
    url: serverUrlOr(values.url),
    share: Number(values.share),
    reads: Number(values.reads),
    log: (line) => console.log(line),
  });
}

runWhenInvoked(import.meta.url, main);
