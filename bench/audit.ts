/**
 * What the audit trail costs, each figure against a floor of the same run:
 * - verification p50 with the trail's capture on, against the same in a second database seeded
 *   alike with the capture off, one call in each by turns: a success writes no event, so the goal
 *   is 1.05x at most;
 * - an audited operator action (`users.create` in withOrg) against the same, in the same way;
 * - `audit prune` of a month of `--prune-events` events (default 1,000,000 over 1,000
 *   organizations): how long its removal holds locks (goal: under a second), and how long the
 *   whole prune takes.
 *
 *   npx tsx bench/audit.ts [--iterations 2000] [--prune-events 1000000] [--url postgres://postgres@127.0.0.1:5432/test]
 *
 * --url is an admin connection: a scratch database is created beside it and dropped at the end.
 */
import { parseArgs } from 'node:util';
import { openStore, type Store } from 'engine-store';
import { AUDIT_CAPTURE_TRIGGERS } from '../engine/infra/store/citus/layout.ts';
import { alternatingP50, runWhenInvoked, seedKeyedOrganizations, serverUrlOr, withScratchDatabase } from './support.ts';

export interface AuditBenchResult {
  verifyAuditedP50Ms: number;
  verifyUnauditedP50Ms: number;
  verifyRatio: number;
  createAuditedP50Ms: number;
  createUnauditedP50Ms: number;
  createRatio: number;
  prune: { events: number; lockedMs: number; partitionLockedMs: number; totalMs: number; chainsCut: number };
}

/** The capture triggers switched on or off: off for the unaudited database, and while prune's organizations are seeded (the owner may). */
async function setCapture(store: Store, on: boolean): Promise<void> {
  for (const { table, trigger } of AUDIT_CAPTURE_TRIGGERS) {
    await store.db.query(`alter table ${table} ${on ? 'enable' : 'disable'} trigger ${trigger}`);
  }
}

/**
 * `events` events of a past month (June 2026) over `orgs` organizations, written as the owner in
 * one statement: what prune removes. Their hashes are placeholders: prune reads seq and time.
 */
async function seedPastMonth(store: Store, events: number, orgs: number): Promise<void> {
  await store.db.query(`select audit_ensure_partitions('2026-06-01', 1)`);
  const perOrg = Math.ceil(events / orgs);
  await store.db.query(
    `insert into audit_events (org_id, seq, occurred_at, actor_kind, actor_id, action, target_kind, target_id, changes, context, prev_hash, hash)
     select o.id, s, timestamptz '2026-06-01' + (s * interval '1 second'), 'system', 'bench', 'user.created', 'user', s::text, '{}', null,
            sha256(''), sha256(s::text::bytea)
       from (select id from organizations where name like 'prune org %' order by id) o, generate_series(1, $1::int) s`,
    [perOrg],
  );
  await store.db.query(
    `insert into audit_heads (org_id, seq, hash, occurred_at)
     select id, $1::int, sha256($1::text::bytea), timestamptz '2026-06-01' + ($1::int * interval '1 second')
       from organizations where name like 'prune org %'
     on conflict (org_id) do nothing`,
    [perOrg],
  );
  await store.db.query('analyze audit_events');
}

/** An organization with an admin and a key in `store`; a verification of the key, and a `users.create` in the organization. */
async function benchOrganization(store: Store) {
  const org = await store.organizations.create({ name: 'Bench Audit' });
  const key = await store.withOrg(org.id, async (tx) => {
    const user = await tx.users.create({ email: 'bench@audit.example', role: 'admin' });
    return (await tx.apiKeys.issue({ userId: user.id, name: 'bench', rateLimitPerHour: 1_000_000 })).key;
  });
  let made = 0;
  return {
    verify: async () => {
      const result = await store.verifyApiKey(key);
      if (!result.ok) throw new Error(`verification failed: ${result.reason}`);
    },
    create: () =>
      store.withOrg(org.id, (tx) => tx.users.create({ email: `u${(made += 1)}@audit.example`, role: 'customer' }), {
        context: { requestId: `bench-${made}` },
      }),
  };
}

export async function runAuditBench(options: {
  url: string;
  iterations: number;
  pruneEvents: number;
  log: (line: string) => void;
}): Promise<AuditBenchResult> {
  // Each operation is compared across two databases seeded alike, the capture off in the second,
  // one call in each by turns: switching the capture in one database (ALTER TABLE) makes every
  // statement on the table be planned again, and blocks of calls between switches let the
  // machine's drift fall on one side.
  return withScratchDatabase(options.url, 'audit', (url) =>
    withScratchDatabase(options.url, 'audit_off', async (unauditedUrl) => {
      const store = await openStore({ url, migrate: true, operator: 'bench' });
      const unaudited = await openStore({ url: unauditedUrl, migrate: true, operator: 'bench' });
      try {
        await setCapture(unaudited, false);
        await seedKeyedOrganizations(store.db, 'bench', 1_000);
        await seedKeyedOrganizations(unaudited.db, 'bench', 1_000);
        const on = await benchOrganization(store);
        const off = await benchOrganization(unaudited);
        options.log('warming up');
        await alternatingP50(300, on.verify, off.verify);
        await alternatingP50(300, on.create, off.create);

        options.log('verification, audited and not, by turns');
        const verified = await alternatingP50(options.iterations, on.verify, off.verify);
        options.log('users.create, audited and not, by turns');
        const created = await alternatingP50(options.iterations, on.create, off.create);

        options.log(`seeding a past month of ${options.pruneEvents.toLocaleString('en-US')} events over 1,000 organizations`);
        // Their creation unrecorded: the month seeded below is their whole history.
        await setCapture(store, false);
        await seedKeyedOrganizations(store.db, 'prune', 1_000);
        await setCapture(store, true);
        await seedPastMonth(store, options.pruneEvents, 1_000);
        const started = performance.now();
        const pruned = await store.audit.prune({ before: new Date('2026-07-01T00:00:00Z') });
        const totalMs = performance.now() - started;
        options.log(
          `pruned ${pruned.eventsRemoved} events: locks on the trail ${pruned.lockedMs.toFixed(1)} ms, on the months ${pruned.partitionLockedMs.toFixed(1)} ms, in all ${totalMs.toFixed(0)} ms`,
        );

        return {
          verifyAuditedP50Ms: verified.subjectMs,
          verifyUnauditedP50Ms: verified.floorMs,
          verifyRatio: verified.subjectMs / verified.floorMs,
          createAuditedP50Ms: created.subjectMs,
          createUnauditedP50Ms: created.floorMs,
          createRatio: created.subjectMs / created.floorMs,
          prune: {
            events: pruned.eventsRemoved,
            lockedMs: pruned.lockedMs,
            partitionLockedMs: pruned.partitionLockedMs,
            totalMs,
            chainsCut: pruned.chainsCut,
          },
        };
      } finally {
        await unaudited.close();
        await store.close();
      }
    }),
  );
}

runWhenInvoked(import.meta.url, async () => {
  const { values } = parseArgs({
    options: {
      iterations: { type: 'string', default: '2000' },
      'prune-events': { type: 'string', default: '1000000' },
      url: { type: 'string' },
    },
  });
  const result = await runAuditBench({
    url: serverUrlOr(values.url),
    iterations: Number(values.iterations),
    pruneEvents: Number(values['prune-events']),
    log: (line) => console.error(`  ${line}`),
  });
  console.log(
    [
      `verify p50: audited ${result.verifyAuditedP50Ms.toFixed(3)} ms, unaudited ${result.verifyUnauditedP50Ms.toFixed(3)} ms: ${result.verifyRatio.toFixed(2)}x (goal <= 1.05x)`,
      `users.create p50: audited ${result.createAuditedP50Ms.toFixed(3)} ms, unaudited ${result.createUnauditedP50Ms.toFixed(3)} ms: ${result.createRatio.toFixed(2)}x (goal <= 1.30x)`,
      `prune of ${result.prune.events.toLocaleString('en-US')} events: locks on the trail ${result.prune.lockedMs.toFixed(1)} ms (goal < 1000 ms), on the months emptied ${result.prune.partitionLockedMs.toFixed(1)} ms, whole prune ${result.prune.totalMs.toFixed(0)} ms, ${result.prune.chainsCut} chains cut`,
    ].join('\n'),
  );
});
