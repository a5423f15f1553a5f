/**
 * Cost as the store grows: the same three figures at each size, each against a floor measured
 * beside it in the same run (only ratios compare across sizes on a noisy machine):
 *
 * - listing: the newest 50 workflow states of one organization through readOrg, against the
 *   owner's SQL (bench/listing.ts);
 * - verification: store.verifyApiKey of one key, against SELECT 1 on the same store;
 * - writes: task states in batches of 100 through withOrg, against the owner's statement
 *   (bench/writes.ts).
 *
 * Sizes: 1,000, 10,000 and 100,000 organizations, each with a user and an API key, over
 * 1,000,000 workflow states; with --large also 1,000 organizations over 10,000,000 states
 * (about 10 minutes of seeding here). The measured organization holds 2,000 states at every
 * size, so that its own page is the same work; the rest are spread over the others. Growth is the
 * largest size's ratio over the smallest's, per figure (goal: at most 1.1x).
 *
 *   npx tsx bench/scale.ts [--large] [--iterations 2000] [--url postgres://postgres@127.0.0.1:5432/test]
 */
import { parseArgs } from 'node:util';
import { openStore, type Store } from 'engine-store';
import { measureListing } from './listing.ts';
import { measureWrites } from './writes.ts';
import { alternatingP50, runWhenInvoked, seedKeyedOrganizations, serverUrlOr, withinGoal, withScratchDatabase } from './support.ts';

export interface ScaleSize {
  orgs: number;
  states: number;
}

export interface ScaleResult extends ScaleSize {
  listingP50Ms: number;
  listingRatio: number;
  verifyP50Ms: number;
  /** verifyApiKey p50 over SELECT 1 p50, same pool, same run. */
  verifyRatio: number;
  writesRatio: number;
  seedSeconds: number;
}

export const DEFAULT_SIZES: readonly ScaleSize[] = [
  { orgs: 1_000, states: 1_000_000 },
  { orgs: 10_000, states: 1_000_000 },
  { orgs: 100_000, states: 1_000_000 },
];
export const LARGE_SIZE: ScaleSize = { orgs: 1_000, states: 10_000_000 };

/** States of the measured organization at every size. */
const MEASURED_ORG_STATES = 2_000;
const BATCH = 200_000;

/**
 * Organizations, each with one user and one API key, and workflow states; then the measured
 * organization's key, issued through the API.
 */
async function seed(store: Store, size: ScaleSize, log: (line: string) => void): Promise<{ orgId: string; key: string }> {
  if (size.states < MEASURED_ORG_STATES || size.orgs < 2)
    throw new Error('a size needs two organizations and the states of the measured one');
  await seedKeyedOrganizations(store.db, 'scale', size.orgs);
  log(`${size.orgs.toLocaleString('en-US')} organizations, users and keys`);
  const { rows } = await store.db.query<{ id: string }>(`select id from organizations where name = 'scale org 1'`);
  const orgId = rows[0]!.id;
  for (let done = 0; done < size.states; done += BATCH) {
    const count = Math.min(BATCH, size.states - done);
    // The first MEASURED_ORG_STATES rows go to the measured organization, the rest round the others.
    await store.db.query(
      `with orgs as (select array_agg(id order by name) as ids from organizations where name like 'scale org %' and name <> 'scale org 1')
       insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, input, created_at, updated_at)
       select case when g < $4::int then $3::uuid else orgs.ids[1 + (g % cardinality(orgs.ids))] end,
              gen_random_uuid(), 'workflow-' || (g % 50), 'success', jsonb_build_object('n', g),
              now() - (g || ' seconds')::interval, now()
         from orgs, generate_series($1::int, $1::int + $2::int - 1) g`,
      [done, count, orgId, MEASURED_ORG_STATES],
    );
    log(`seeded ${(done + count).toLocaleString('en-US')}/${size.states.toLocaleString('en-US')} workflow states`);
  }
  await store.db.exec('vacuum analyze');
  const key = await store.withOrg(orgId, async (tx) => {
    const user = await tx.users.create({ email: 'bench@scale.example', role: 'manager' });
    return (await tx.apiKeys.issue({ userId: user.id, name: 'bench', rateLimitPerHour: 1_000_000 })).key;
  });
  return { orgId, key };
}

export async function measureScale(options: {
  url: string;
  size: ScaleSize;
  iterations: number;
  log: (line: string) => void;
}): Promise<ScaleResult> {
  const { size, iterations, log } = options;
  return withScratchDatabase(options.url, `scale_${size.orgs}_${size.states}`, async (url) => {
    const store = await openStore({ url, poolSize: 4, verifyPoolSize: 4, migrate: true });
    try {
      const seeding = performance.now();
      const { orgId, key } = await seed(store, size, log);
      const seedSeconds = (performance.now() - seeding) / 1000;
      const listing = (await measureListing(store, orgId, { page: 1, iterations, label: 'page 1' }))!;
      const verify = async () => {
        const result = await store.verifyApiKey(key);
        if (!result.ok) throw new Error(`verification failed: ${result.reason}`);
      };
      const selectOne = () => store.db.query('select 1');
      await alternatingP50(1_000, verify, selectOne);
      const verified = await alternatingP50(iterations, verify, selectOne);
      const writes = await measureWrites(store, orgId, { batches: 200, batchSize: 100 });
      const result: ScaleResult = {
        ...size,
        listingP50Ms: listing.storeP50Ms,
        listingRatio: listing.ratio,
        verifyP50Ms: verified.subjectMs,
        verifyRatio: verified.subjectMs / verified.floorMs,
        writesRatio: writes.ratio,
        seedSeconds,
      };
      log(
        `${describe(size)}: listing ${result.listingP50Ms.toFixed(3)} ms (${result.listingRatio.toFixed(2)}x), ` +
          `verify ${result.verifyP50Ms.toFixed(3)} ms (${result.verifyRatio.toFixed(2)}x SELECT 1), writes ${result.writesRatio.toFixed(2)}x`,
      );
      return result;
    } finally {
      await store.close();
    }
  });
}

const describe = (size: ScaleSize) => `${size.orgs.toLocaleString('en-US')} orgs, ${size.states.toLocaleString('en-US')} workflow states`;

/** The figure at the largest size over the smallest, per figure. */
export function growth(results: readonly ScaleResult[], figure: 'listingRatio' | 'verifyRatio' | 'writesRatio'): number {
  return results.at(-1)![figure] / results[0]![figure];
}

/** The Markdown table of docs/benchmarks.md: one row per size, then the growth and the goal. */
export function scaleTable(groups: readonly (readonly ScaleResult[])[]): string {
  const lines = [
    '| size | listing p50 (x owner SQL) | verify p50 (x SELECT 1) | writes (x owner) | seeding |',
    '| --- | --- | --- | --- | --- |',
  ];
  for (const results of groups) {
    for (const result of results) {
      lines.push(
        `| ${describe(result)} | ${result.listingP50Ms.toFixed(3)} ms (${result.listingRatio.toFixed(2)}x) | ` +
          `${result.verifyP50Ms.toFixed(3)} ms (${result.verifyRatio.toFixed(2)}x) | ${result.writesRatio.toFixed(2)}x | ${Math.round(result.seedSeconds)} s |`,
      );
    }
    if (results.length > 1) {
      const cell = (figure: 'listingRatio' | 'verifyRatio' | 'writesRatio') => {
        const value = growth(results, figure);
        return `${value.toFixed(2)}x ${withinGoal(value, 1.1) ? '(met)' : '(MISSED)'}`;
      };
      lines.push(
        `| growth, ${describe(results[0]!)} to ${describe(results.at(-1)!)} (goal <= 1.10x) | ${cell('listingRatio')} | ${cell('verifyRatio')} | ${cell('writesRatio')} | |`,
      );
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { large: { type: 'boolean', default: false }, iterations: { type: 'string', default: '2000' }, url: { type: 'string' } },
  });
  const iterations = Number(values.iterations);
  if (!Number.isInteger(iterations) || iterations < 10) throw new Error('--iterations must be a whole number of at least 10');
  const url = serverUrlOr(values.url);
  const log = (line: string) => console.error(`  ${line}`);
  const byOrgs: ScaleResult[] = [];
  for (const size of DEFAULT_SIZES) {
    console.error(describe(size));
    byOrgs.push(await measureScale({ url, size, iterations, log }));
  }
  const groups: ScaleResult[][] = [byOrgs];
  if (values.large) {
    console.error(describe(LARGE_SIZE));
    groups.push([byOrgs[0]!, await measureScale({ url, size: LARGE_SIZE, iterations, log })]);
  }
  console.log(scaleTable(groups));
}

runWhenInvoked(import.meta.url, main);
