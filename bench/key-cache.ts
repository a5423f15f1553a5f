/**
 * The key cache (openStore's keyCache): how much faster a cached verification is than the
 * database path, and how long a revocation takes to reach other processes.
 *
 * - Speed: `store.verifyApiKey(key)` with the cache on, a key already held, against the same call
 *   on a store without it (the database path, as bench/verify measures it), alternating, p50 of
 *   each. Goal: the cached call at least 20x faster.
 * - Propagation: 4 processes (test/support/key-cache-process.ts), each answering a key from
 *   memory in a loop that yields to I/O between calls, as a server's requests do. The key is
 *   revoked; each process reports when it first refused it. Measured from the moment the
 *   revoking transaction's COMMIT returned (the change is visible to everyone from then on), over
 *   `--trials` keys. Goal: every refusal within 100 ms (maxStalenessMs, the default).
 *
 *   npx tsx bench/key-cache.ts [--iterations 20000] [--trials 10] [--url postgres://...]
 */
import { parseArgs } from 'node:util';
import { openStore, type Store } from 'engine-store';
import { CacheProcess } from '../test/support/key-cache-process-client.ts';
import { alternatingP50, percentile, runWhenInvoked, seedKeyedOrganizations, serverUrlOr, withScratchDatabase } from './support.ts';

export interface KeyCacheBenchResult {
  cachedP50Ms: number;
  databaseP50Ms: number;
  /** databaseP50Ms / cachedP50Ms: the goal is at least 20. */
  speedup: number;
  /** Revocation to refusal, ms, one sample per process and trial. */
  propagationP50Ms: number;
  propagationMaxMs: number;
  samples: number;
}

const PROCESSES = 4;

async function issueKey(owner: Store, label: string): Promise<{ key: string; orgId: string; apiKeyId: string }> {
  const org = await owner.organizations.create({ name: `Bench cache ${label}` });
  return owner.withOrg(org.id, async (tx) => {
    const user = await tx.users.create({ email: `cache-${label}@bench.example`, role: 'manager' });
    const { key, apiKey } = await tx.apiKeys.issue({ userId: user.id, name: 'bench', rateLimitPerHour: 1_000_000 });
    return { key, orgId: org.id, apiKeyId: apiKey.id };
  });
}

export async function runKeyCacheBench(options: {
  url: string;
  iterations: number;
  trials: number;
  log: (line: string) => void;
}): Promise<KeyCacheBenchResult> {
  return withScratchDatabase(options.url, 'key_cache', async (url) => {
    const owner = await openStore({ url, migrate: true });
    const cached = await openStore({ url, keyCache: { maxKeys: 10_000 } });
    try {
      // Tables of production's shape, as bench/verify has them.
      await seedKeyedOrganizations(owner.db, 'bench', 1_000);
      const { key } = await issueKey(owner, 'speed');
      const viaCache = async () => {
        if (!(await cached.verifyApiKey(key)).ok) throw new Error('verification failed');
      };
      const viaDatabase = async () => {
        if (!(await owner.verifyApiKey(key)).ok) throw new Error('verification failed');
      };
      options.log('warming up');
      await alternatingP50(1_000, viaCache, viaDatabase);
      const speed = await alternatingP50(options.iterations, viaCache, viaDatabase);
      options.log(`cached p50 ${(speed.subjectMs * 1000).toFixed(1)} us, database path p50 ${speed.floorMs.toFixed(3)} ms`);

      options.log(`starting ${PROCESSES} processes`);
      const processes = Array.from({ length: PROCESSES }, () => new CacheProcess(url));
      const delays: number[] = [];
      try {
        for (const started of processes) await started.next();
        for (let trial = 0; trial < options.trials; trial += 1) {
          const issued = await issueKey(owner, `trial-${trial}`);
          for (const watcher of processes) {
            const reply = await watcher.ask({ watch: issued.key });
            if (!reply.watching) throw new Error(`a process did not start watching: ${JSON.stringify(reply)}`);
          }
          // Every process answers the key from memory by now (its first lease is long taken).
          await new Promise((resolve) => setTimeout(resolve, 50));
          const refusals = processes.map((watcher) => watcher.next());
          await owner.withOrg(issued.orgId, (tx) => tx.apiKeys.revoke(issued.apiKeyId));
          const committedAt = performance.timeOrigin + performance.now();
          for (const refusal of await Promise.all(refusals)) {
            if (refusal.reason !== 'REVOKED') throw new Error(`a process refused the key with ${refusal.reason}, not REVOKED`);
            delays.push(Math.max(0, refusal.refusedAt! - committedAt));
          }
          options.log(`trial ${trial + 1}/${options.trials}: slowest process ${Math.max(...delays.slice(-PROCESSES)).toFixed(1)} ms`);
        }
      } finally {
        await Promise.all(processes.map((watcher) => watcher.close()));
      }
      return {
        cachedP50Ms: speed.subjectMs,
        databaseP50Ms: speed.floorMs,
        speedup: speed.floorMs / speed.subjectMs,
        propagationP50Ms: percentile(delays, 0.5),
        propagationMaxMs: Math.max(...delays),
        samples: delays.length,
      };
    } finally {
      await cached.close();
      await owner.close();
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { iterations: { type: 'string', default: '20000' }, trials: { type: 'string', default: '10' }, url: { type: 'string' } },
  });
  const result = await runKeyCacheBench({
    url: serverUrlOr(values.url),
    iterations: Number(values.iterations),
    trials: Number(values.trials),
    log: (line) => console.error(line),
  });
  console.log(
    `cached verification p50 ${(result.cachedP50Ms * 1000).toFixed(1)} us against the database path's ${result.databaseP50Ms.toFixed(3)} ms: ${result.speedup.toFixed(1)}x faster (goal: at least 20x)`,
  );
  console.log(
    `revocation reached ${PROCESSES} processes in p50 ${result.propagationP50Ms.toFixed(1)} ms, at most ${result.propagationMaxMs.toFixed(1)} ms (${result.samples} samples; goal: at most 100 ms)`,
  );
}

runWhenInvoked(import.meta.url, main);
