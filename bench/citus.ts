/**
 * The store on Citus against the store on one server, in the same run, on the same data:
 *
 * - listing (readOrg, newest 50 workflow states of a typical organization) and API key
 *   verification, p50, each on the cluster against the same call on the single server;
 * - writes spread over many organizations (concurrent withOrg upserts into random organizations),
 *   throughput on the single server, on the cluster with 1 worker and with 2 workers: does
 *   adding a worker scale?
 *
 *   npx tsx bench/citus.ts [--orgs 200] [--rows-per-org 200] [--iterations 1000] [--seconds 10]
 *     [--url postgres://postgres@127.0.0.1:5432/test] [--citus-url postgres://postgres@127.0.0.1:5460/citus]
 *
 * --url is an admin connection to the single server; --citus-url names the cluster's
 * coordinator (../shared/citus/cluster.sh start prints it). Scratch databases are created and
 * dropped on both. On this project's machine every node shares the same 2 cores, so the worker
 * figures say what coordination costs, not what more hardware would bring.
 */
import { parseArgs } from 'node:util';
import { distributeOnCitus } from '../engine/infra/store/citus/distribute.ts';
import { openDatabase } from '../engine/infra/store/connection/database.ts';
import { openStore, type Store } from 'engine-store';
import { migrateUp } from '../engine/infra/store/migrator/runner.ts';
import { createCitusDatabase } from '../test/support/citus.ts';
import { alternatingP50, withScratchDatabase, serverUrlOr } from './support.ts';

interface Options {
  orgs: number;
  rowsPerOrg: number;
  iterations: number;
  seconds: number;
  url: string;
  citusUrl: string;
}

interface Prepared {
  store: Store;
  typicalOrg: string;
  key: string;
  orgIds: string[];
}

const CONCURRENCY = 8;

/** WorkflowStatesRepository.list's first page, as the owner runs it: org_id given, no scope. */
const LIST_SQL = `select workflow_exec_id, org_id, workflow_id, status, input, output, error, usage, created_at, updated_at,
  (extract(epoch from created_at at time zone 'UTC') * 1000000)::bigint::text as cursor_micros from workflow_states
  where org_id = $1::uuid order by created_at desc, workflow_exec_id desc limit 51`;

/** Refuses to time two listings that do not return the same, non-empty page. */
async function sameRows(
  cluster: () => Promise<{ items: readonly { workflowExecId: string }[] }>,
  single: () => Promise<{ items: readonly { workflowExecId: string }[] }>,
) {
  const ids = async (list: typeof cluster) => (await list()).items.map((item) => item.workflowExecId).join(',');
  const [onCluster, onSingle] = [await ids(cluster), await ids(single)];
  if (onSingle === '' || onCluster !== onSingle) {
    throw new Error(
      `the cluster's listing is not the single server's (${onCluster.split(',').filter(Boolean).length} rows against ${onSingle.split(',').filter(Boolean).length}): nothing to compare`,
    );
  }
}

/** The same organizations, workflow states and API key, in the same way, on either backend. */
async function prepare(url: string, options: Options): Promise<Prepared> {
  const store = await openStore({ url, poolSize: CONCURRENCY + 2 });
  await store.db.exec(`
    insert into organizations (id, name, temporal_namespace)
      select md5('org' || k)::uuid, 'Bench org ' || k, 'bench-org-' || k from generate_series(1, ${options.orgs}) k;
    insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, created_at)
      select md5('org' || k)::uuid, md5('wf' || k || '-' || i)::uuid, 'flow-' || (i % 10), 'running', now() - i * interval '1 second'
        from generate_series(1, ${options.orgs}) k, generate_series(1, ${options.rowsPerOrg}) i;
  `);
  await store.db.exec('analyze');
  const { rows } = await store.db.query<{ id: string }>('select id from organizations where name like $1 order by id', ['Bench org %']);
  const orgIds = rows.map((row) => row.id);
  const typicalOrg = orgIds[Math.floor(orgIds.length / 2)]!;
  const key = await store.withOrg(typicalOrg, async (tx) => {
    const user = await tx.users.create({ email: 'bench@citus.example', role: 'manager' });
    return (await tx.apiKeys.issue({ userId: user.id, name: 'bench', rateLimitPerHour: 1_000_000 })).key;
  });
  return { store, typicalOrg, key, orgIds };
}

/** Upserts of new workflow states into random organizations, CONCURRENCY at a time, for `seconds`. */
async function writeThroughput(prepared: Prepared, seconds: number): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < deadline) {
        const org = prepared.orgIds[Math.floor(Math.random() * prepared.orgIds.length)]!;
        await prepared.store.withOrg(org, (tx) =>
          tx.workflows.upsert({ workflowExecId: crypto.randomUUID(), workflowId: 'bench-write', status: 'running' }),
        );
        done += 1;
      }
    }),
  );
  return done / seconds;
}

async function onCluster<T>(
  options: Options,
  workers: number,
  work: (prepared: Prepared) => Promise<T>,
  log: (line: string) => void,
): Promise<T> {
  const cluster = await createCitusDatabase({ base: options.citusUrl, workers });
  try {
    const owner = await openDatabase({ url: cluster.url, poolSize: 2 });
    try {
      await migrateUp(owner);
      await distributeOnCitus(owner);
    } finally {
      await owner.close();
    }
    log(`cluster with ${workers} worker(s): distributed; loading ${options.orgs} organizations x ${options.rowsPerOrg} workflow states`);
    const prepared = await prepare(cluster.url, options);
    try {
      return await work(prepared);
    } finally {
      await prepared.store.close();
    }
  } finally {
    await cluster.drop();
  }
}

export async function runCitusBench(options: Options, log: (line: string) => void) {
  return withScratchDatabase(options.url, 'citus_single', async (singleUrl) => {
    const single = await openDatabase({ url: singleUrl, poolSize: 2 });
    await migrateUp(single).finally(() => single.close());
    log(`single server: loading ${options.orgs} organizations x ${options.rowsPerOrg} workflow states`);
    const one = await prepare(singleUrl, options);
    try {
      const list = (prepared: Prepared) => () => prepared.store.readOrg(prepared.typicalOrg).workflows.list({ limit: 50 });
      // The owner's own statement on the cluster, org_id given, no scope: what any read through
      // the coordinator costs, alone (one task, no transaction block on the worker) and in a
      // transaction block (BEGIN and COMMIT reach the worker: two more round trips), which a
      // scope needs for its SET LOCALs to reach the worker at all.
      const ownerList = (prepared: Prepared) => () => prepared.store.db.query(LIST_SQL, [prepared.typicalOrg], { prepare: true });
      const ownerListInBlock = (prepared: Prepared) => () =>
        prepared.store.db.withSession((session) =>
          session.pipeline([
            { sql: 'begin isolation level read committed', prepare: true, rows: false },
            { sql: LIST_SQL, params: [prepared.typicalOrg], prepare: true },
            { sql: 'commit', prepare: true, rows: false },
          ]),
        );
      const verify = (prepared: Prepared) => async () => {
        const result = await prepared.store.verifyApiKey(prepared.key);
        if (!result.ok) throw new Error(`verification failed: ${result.reason}`);
      };
      const results = await onCluster(
        options,
        2,
        async (cluster) => {
          // The same page on both, and not an empty one: a scope whose settings do not reach the
          // worker reads nothing there, and an empty read is fast (11-30's 1.34x was one).
          await sameRows(list(cluster), list(one));
          // Warm both, then alternate cluster and single server call by call.
          await alternatingP50(100, list(cluster), list(one));
          const listing = await alternatingP50(options.iterations, list(cluster), list(one));
          await alternatingP50(100, ownerList(cluster), list(one));
          const ownerListing = await alternatingP50(options.iterations, ownerList(cluster), list(one));
          await alternatingP50(100, ownerListInBlock(cluster), list(one));
          const ownerListingInBlock = await alternatingP50(options.iterations, ownerListInBlock(cluster), list(one));
          await alternatingP50(100, verify(cluster), verify(one));
          const verification = await alternatingP50(options.iterations, verify(cluster), verify(one));
          log(`listing p50: cluster ${listing.subjectMs.toFixed(3)} ms, single server ${listing.floorMs.toFixed(3)} ms`);
          log(`verify p50: cluster ${verification.subjectMs.toFixed(3)} ms, single server ${verification.floorMs.toFixed(3)} ms`);
          const singleWrites = await writeThroughput(one, options.seconds);
          const twoWorkerWrites = await writeThroughput(cluster, options.seconds);
          log(`writes: single server ${singleWrites.toFixed(0)}/s, cluster with 2 workers ${twoWorkerWrites.toFixed(0)}/s`);
          return { listing, ownerListing, ownerListingInBlock, verification, singleWrites, twoWorkerWrites };
        },
        log,
      );
      const oneWorkerWrites = await onCluster(options, 1, (cluster) => writeThroughput(cluster, options.seconds), log);
      log(`writes: cluster with 1 worker ${oneWorkerWrites.toFixed(0)}/s`);
      return { ...results, oneWorkerWrites };
    } finally {
      await one.store.close();
    }
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      orgs: { type: 'string', default: '200' },
      'rows-per-org': { type: 'string', default: '200' },
      iterations: { type: 'string', default: '1000' },
      seconds: { type: 'string', default: '10' },
      url: { type: 'string' },
      'citus-url': { type: 'string' },
    },
  });
  const whole = (name: string, value: string, min: number) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number < min) throw new Error(`--${name} must be a whole number of at least ${min}`);
    return number;
  };
  const options: Options = {
    orgs: whole('orgs', values.orgs, 2),
    rowsPerOrg: whole('rows-per-org', values['rows-per-org'], 1),
    iterations: whole('iterations', values.iterations, 10),
    seconds: whole('seconds', values.seconds, 1),
    url: serverUrlOr(values.url),
    citusUrl: values['citus-url'] ?? (process.env.TEST_CITUS_URL || 'postgres://postgres@127.0.0.1:5460/citus'),
  };
  const log = (line: string) => console.error(line);
  const r = await runCitusBench(options, log);
  const rows = [
    [
      'list newest 50, typical org (readOrg, p50)',
      `${r.listing.subjectMs.toFixed(3)} ms`,
      `${r.listing.floorMs.toFixed(3)} ms`,
      `${(r.listing.subjectMs / r.listing.floorMs).toFixed(2)}x`,
    ],
    [
      "list, the owner's statement on the cluster, no scope (p50)",
      `${r.ownerListing.subjectMs.toFixed(3)} ms`,
      `${r.ownerListing.floorMs.toFixed(3)} ms`,
      `${(r.ownerListing.subjectMs / r.ownerListing.floorMs).toFixed(2)}x`,
    ],
    [
      '  same, in BEGIN ... COMMIT (p50)',
      `${r.ownerListingInBlock.subjectMs.toFixed(3)} ms`,
      `${r.ownerListingInBlock.floorMs.toFixed(3)} ms`,
      `${(r.ownerListingInBlock.subjectMs / r.ownerListingInBlock.floorMs).toFixed(2)}x`,
    ],
    [
      'verify API key (p50)',
      `${r.verification.subjectMs.toFixed(3)} ms`,
      `${r.verification.floorMs.toFixed(3)} ms`,
      `${(r.verification.subjectMs / r.verification.floorMs).toFixed(2)}x`,
    ],
    [
      `writes over ${options.orgs} orgs, ${CONCURRENCY} callers, 2 workers`,
      `${r.twoWorkerWrites.toFixed(0)}/s`,
      `${r.singleWrites.toFixed(0)}/s`,
      `${(r.twoWorkerWrites / r.singleWrites).toFixed(2)}x`,
    ],
    [
      `same, 1 worker`,
      `${r.oneWorkerWrites.toFixed(0)}/s`,
      `${r.singleWrites.toFixed(0)}/s`,
      `${(r.oneWorkerWrites / r.singleWrites).toFixed(2)}x`,
    ],
    [
      '2 workers against 1',
      `${r.twoWorkerWrites.toFixed(0)}/s`,
      `${r.oneWorkerWrites.toFixed(0)}/s`,
      `${(r.twoWorkerWrites / r.oneWorkerWrites).toFixed(2)}x`,
    ],
  ];
  console.log('| benchmark | Citus | single server (same run) | ratio |');
  console.log('| --- | --- | --- | --- |');
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
