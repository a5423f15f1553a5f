/**
 * Organization-scoped listing: the newest 50 workflow states of one organization, page 1 and
 * page 100, through the store (readOrg: its own read-only transaction as app_tenant under
 * row-level security, one round trip) against the same SQL run by the owner without row-level
 * security, prepared like the store's, on the same pool in the same run.
 *
 *   npx tsx bench/listing.ts [--rows 1000000] [--orgs 1000] [--iterations 1000] [--url URL]
 *
 * The rows are skewed like real tenants: one organization holds 20% of them, the others share
 * the rest. Both the large organization and a typical one are measured.
 */
import { parseArgs } from 'node:util';
import { openStore, type Store } from 'engine-store';
import { alternatingP50, withScratchDatabase, serverUrlOr, runWhenInvoked } from './support.ts';

export interface ListingCase {
  label: string;
  storeP50Ms: number;
  floorP50Ms: number;
  ratio: number;
}

/** Calls of each, untimed, before the timed ones (see the warm-up below). */
const WARM_UP_CALLS = 3000;

const COLUMNS = `workflow_exec_id, org_id, workflow_id, status, input, output, error, usage, created_at, updated_at,
  (extract(epoch from created_at) * 1000000)::bigint::text as cursor_micros`;

async function seed(store: Store, rows: number, orgs: number, log: (line: string) => void): Promise<{ large: string; typical: string }> {
  await store.db.query(
    `insert into organizations (name, temporal_namespace)
     select 'bench org ' || g, 'bench-org-' || g from generate_series(1, $1) g`,
    [orgs],
  );
  const batch = 100_000;
  for (let done = 0; done < rows; done += batch) {
    const count = Math.min(batch, rows - done);
    // Every fifth row goes to the first organization (20%); the rest spread over the others.
    await store.db.query(
      `with orgs as (select array_agg(id order by name) as ids from organizations where name like 'bench org %')
       insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, input, created_at, updated_at)
       select orgs.ids[case when g % 5 = 0 then 1 else 2 + (g % ($3 - 1)) end],
              gen_random_uuid(), 'workflow-' || (g % 50), 'success', jsonb_build_object('n', g),
              now() - (g || ' seconds')::interval, now()
       from orgs, generate_series($1::int, $1::int + $2::int - 1) g`,
      [done, count, orgs],
    );
    log(`seeded ${done + count}/${rows} workflow states`);
  }
  await store.db.query('analyze workflow_states');
  const { rows: picked } = await store.db.query<{ large: string; typical: string }>(
    `select (select id from organizations where name = 'bench org 1') as large,
            (select id from organizations where name = 'bench org 2') as typical`,
  );
  return picked[0]!;
}

/** The cursor of page `page` (1-based), found by walking the pages through the store. */
async function cursorOfPage(store: Store, orgId: string, page: number): Promise<string | undefined> {
  let after: string | undefined;
  for (let i = 1; i < page; i += 1) {
    after = (await store.readOrg(orgId).workflows.list({ limit: 50, ...(after ? { after } : {}) })).nextCursor;
    if (!after) return undefined;
  }
  return after;
}

/**
 * Page `page` of organization `orgId`'s newest workflow states, 50 a page, through readOrg against
 * the owner's SQL, on an open store; undefined when the organization has no such page.
 */
export async function measureListing(
  store: Store,
  orgId: string,
  options: { page: number; iterations: number; label: string },
): Promise<ListingCase | undefined> {
  const after = await cursorOfPage(store, orgId, options.page);
  if (options.page > 1 && !after) return undefined;
  const keyset = after ? Buffer.from(after, 'base64url').toString('utf8').split('.') : undefined;
  const floorSql = `select ${COLUMNS} from workflow_states where org_id = $1
    ${keyset ? `and (created_at, workflow_exec_id) < (timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3::uuid)` : ''}
    order by created_at desc, workflow_exec_id desc limit 51`;
  const floorParams = keyset ? [orgId, keyset[0], keyset[1]] : [orgId];
  const viaStore = () => store.readOrg(orgId).workflows.list({ limit: 50, ...(after ? { after } : {}) });
  const floor = () => store.db.query(floorSql, floorParams, { prepare: true });
  // Warm-up to the steady state of a long-running process: both paths keep getting faster over
  // their first few thousand calls, the store's longer one for longer (measured by blocks of
  // 1,000 calls: 1.18x its floor in the first, 1.10x in the second, 1.07x to 1.09x from the
  // fourth on). 500 calls measured it 0.03x to 0.08x above where it settles.
  await alternatingP50(WARM_UP_CALLS, viaStore, floor);
  const { subjectMs: storeP50Ms, floorMs: floorP50Ms } = await alternatingP50(options.iterations, viaStore, floor);
  return { label: options.label, storeP50Ms, floorP50Ms, ratio: storeP50Ms / floorP50Ms };
}

export async function runListingBench(options: {
  url: string;
  rows: number;
  orgs: number;
  iterations: number;
  log: (line: string) => void;
}): Promise<ListingCase[]> {
  return withScratchDatabase(options.url, 'listing', async (url) => {
    const store = await openStore({ url, poolSize: 4, migrate: true });
    try {
      const { large, typical } = await seed(store, options.rows, options.orgs, options.log);
      const cases: ListingCase[] = [];
      for (const [orgLabel, orgId] of [
        ['large org (20%)', large],
        ['typical org', typical],
      ] as const) {
        for (const page of [1, 100]) {
          const result = await measureListing(store, orgId, { page, iterations: options.iterations, label: `${orgLabel}, page ${page}` });
          if (!result) continue; // a small organization has no page 100
          options.log(
            `${result.label}: store ${result.storeP50Ms.toFixed(3)} ms, owner SQL ${result.floorP50Ms.toFixed(3)} ms, ${result.ratio.toFixed(2)}x`,
          );
          cases.push(result);
        }
      }
      return cases;
    } finally {
      await store.close();
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '1000000' },
      orgs: { type: 'string', default: '1000' },
      iterations: { type: 'string', default: '1000' },
      url: { type: 'string' },
    },
  });
  const url = serverUrlOr(values.url);
  await runListingBench({
    url,
    rows: Number(values.rows),
    orgs: Number(values.orgs),
    iterations: Number(values.iterations),
    log: (line) => console.log(line),
  });
}

runWhenInvoked(import.meta.url, main);
