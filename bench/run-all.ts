/**
 * Every benchmark, one table: each row a measurement beside a floor measured in the same run
 * (the machines here are noisy, so only ratios mean something).
 *
 *   npm run bench [-- --rows 1000000 --orgs 1000 --listing-iterations 1000 --batches 300 --iterations 3000 --prune-events 1000000 --n 200000 --url URL --check]
 *
 * Each row with a goal says whether this run met it (`met`: yes or MISSED). With --check, a
 * missed goal makes the run exit 1 (for a CI job that watches the goals; the machines here are
 * noisy, so a single miss calls for another run before a conclusion).
 */
import { parseArgs } from 'node:util';
import { runListingBench } from './listing.ts';
import { runMigrateUnderLoad } from './migrate-under-load.ts';
import { runVerifyBench } from './verify.ts';
import { runKeyCacheBench } from './key-cache.ts';
import { runAuditBench } from './audit.ts';
import { runWritesBench } from './writes.ts';
import { serverUrlOr, withinGoal } from './support.ts';

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '200000' },
    iterations: { type: 'string', default: '3000' },
    'listing-iterations': { type: 'string', default: '1000' },
    rows: { type: 'string', default: '1000000' },
    orgs: { type: 'string', default: '1000' },
    batches: { type: 'string', default: '300' },
    'prune-events': { type: 'string', default: '1000000' },
    url: { type: 'string' },
    check: { type: 'boolean', default: false },
  },
});
const url = serverUrlOr(values.url);
const log = (line: string) => console.error(`  ${line}`);

interface Row {
  benchmark: string;
  measured: string;
  floor: string;
  ratio: string;
  goal: string;
  /** Whether this run met the goal: '' where the row is context, not a goal. */
  met: string;
}

/** The `met` cell of a row whose goal is `met`. */
const verdict = (met: boolean): string => (met ? 'yes' : 'MISSED');

const rows: Row[] = [];

console.error(`org-scoped listing (${values.rows} workflow states over ${values.orgs} organizations)`);
for (const listing of await runListingBench({
  url,
  rows: Number(values.rows),
  orgs: Number(values.orgs),
  iterations: Number(values['listing-iterations']),
  log,
})) {
  rows.push({
    benchmark: `list newest 50, ${listing.label}`,
    measured: `readOrg ${listing.storeP50Ms.toFixed(3)} ms`,
    floor: `owner SQL ${listing.floorP50Ms.toFixed(3)} ms`,
    ratio: `${listing.ratio.toFixed(2)}x`,
    goal: '<= 1.10x',
    met: verdict(withinGoal(listing.ratio, 1.1)),
  });
}

console.error('task state inserts');
const writes = await runWritesBench({ url, batches: Number(values.batches), batchSize: 100, log });
rows.push({
  benchmark: 'upsert task states, per row (batches of 100)',
  measured: `withOrg ${writes.storePerRowMs.toFixed(3)} ms`,
  floor: `owner, same statement ${writes.floorPerRowMs.toFixed(3)} ms`,
  ratio: `${writes.ratio.toFixed(2)}x`,
  goal: '<= 1.15x',
  met: verdict(withinGoal(writes.ratio, 1.15)),
});

console.error('API key verification');
const verify = await runVerifyBench({ url, iterations: Number(values.iterations), log });
rows.push({
  benchmark: 'verify API key (p50)',
  measured: `${verify.verifyP50Ms.toFixed(3)} ms`,
  floor: `SELECT 1 ${verify.floorP50Ms.toFixed(3)} ms`,
  ratio: `${verify.ratio.toFixed(2)}x`,
  goal: '(context)',
  met: '',
});
if (verify.leastWork) {
  rows.push({
    benchmark: 'verify API key against the least work (p50)',
    measured: `${verify.verifyP50Ms.toFixed(3)} ms`,
    floor: `key lookup + counted request only ${verify.leastWork.p50Ms.toFixed(3)} ms`,
    ratio: `${verify.leastWork.verifyRatio.toFixed(2)}x`,
    goal: '<= 1.30x',
    met: verdict(withinGoal(verify.leastWork.verifyRatio, 1.3)),
  });
}

console.error('key cache: cached against the database path, and revocation across 4 processes');
const cache = await runKeyCacheBench({ url, iterations: Number(values.iterations) * 4, trials: 10, log });
rows.push({
  benchmark: 'verify API key, cached (p50)',
  measured: `${(cache.cachedP50Ms * 1000).toFixed(1)} us`,
  floor: `database path ${cache.databaseP50Ms.toFixed(3)} ms`,
  ratio: `${cache.speedup.toFixed(1)}x faster`,
  goal: '>= 20x faster',
  met: verdict(cache.speedup >= 20),
});
rows.push({
  benchmark: `key cache: revocation seen by 4 processes (${cache.samples} samples)`,
  measured: `p50 ${cache.propagationP50Ms.toFixed(1)} ms, max ${cache.propagationMaxMs.toFixed(1)} ms`,
  floor: '',
  ratio: '',
  goal: 'max <= 100 ms',
  met: verdict(cache.propagationMaxMs <= 100),
});

console.error(`audit trail: verification and users.create with and without it, prune of ${values['prune-events']} events`);
const audit = await runAuditBench({ url, iterations: Number(values.iterations), pruneEvents: Number(values['prune-events']), log });
rows.push({
  benchmark: 'verify API key, audit trail on (p50)',
  measured: `${audit.verifyAuditedP50Ms.toFixed(3)} ms`,
  floor: `capture off ${audit.verifyUnauditedP50Ms.toFixed(3)} ms`,
  ratio: `${audit.verifyRatio.toFixed(2)}x`,
  goal: '<= 1.05x',
  met: verdict(withinGoal(audit.verifyRatio, 1.05)),
});
rows.push({
  benchmark: 'users.create in withOrg, audited (p50)',
  measured: `${audit.createAuditedP50Ms.toFixed(3)} ms`,
  floor: `capture off ${audit.createUnauditedP50Ms.toFixed(3)} ms`,
  ratio: `${audit.createRatio.toFixed(2)}x`,
  goal: '<= 1.30x',
  met: verdict(withinGoal(audit.createRatio, 1.3)),
});
rows.push({
  benchmark: `audit prune of a month of ${audit.prune.events.toLocaleString('en-US')} events (locks held)`,
  measured: `${audit.prune.lockedMs.toFixed(1)} ms (months emptied first: ${audit.prune.partitionLockedMs.toFixed(0)} ms on them; whole prune ${(audit.prune.totalMs / 1000).toFixed(1)} s)`,
  floor: '',
  ratio: '',
  goal: '< 1000 ms',
  met: verdict(audit.prune.lockedMs < 1000),
});

console.error(`migrate under load (n = ${values.n})`);
const migrate = await runMigrateUnderLoad({ n: Number(values.n), url, log });
rows.push({
  benchmark: `migrate under load, n=${values.n} (writer p99)`,
  measured: `${migrate.p99Ms.toFixed(1)} ms (longest stall ${migrate.longestStallMs.toFixed(1)} ms, ${migrate.lost} rows lost)`,
  floor: `writer alone ${migrate.baselineP99Ms.toFixed(1)} ms`,
  ratio: `${(migrate.p99Ms / migrate.baselineP99Ms).toFixed(2)}x`,
  goal: 'stall < 200 ms, 0 lost',
  met: verdict(migrate.longestStallMs < 200 && migrate.lost === 0),
});

const columns = Object.keys(rows[0]!) as (keyof Row)[];
const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => row[column].length)));
const line = (cells: string[]) => `| ${cells.map((cell, index) => cell.padEnd(widths[index]!)).join(' | ')} |`;
console.log(line(columns));
console.log(line(widths.map((width) => '-'.repeat(width))));
for (const row of rows) console.log(line(columns.map((column) => row[column])));
const missed = rows.filter((row) => row.met === 'MISSED');
if (missed.length > 0) console.error(`goals missed in this run: ${missed.map((row) => row.benchmark).join('; ')}`);
if (migrate.lost > 0 || (values.check && missed.length > 0)) process.exitCode = 1;
