/**
 * Retention of the audit trail: how long events are kept, and `prune`, which removes whole
 * months. A month with a partition of its own is emptied (TRUNCATE, which locks that partition
 * only) and then dropped (DROP TABLE, which locks audit_events for as long as an empty table
 * takes); rows that landed in the default partition are deleted.
 * Before anything goes, each organization whose chain is cut gets an `audit.pruned` event with
 * the seq and hash of its last removed event, so that `audit verify` still passes: the chain
 * then starts from a cut it recorded itself. Separate transactions: a prune stopped after the
 * first has recorded cuts and removed nothing, which verifies, and one stopped later has
 * emptied some months; running it again removes the rest without recording the same cuts twice.
 */
import type { Database, PipelinedStatement } from '../connection/database.ts';
import { toStoreError } from '../connection/database-errors.ts';
import { run } from '../connection/run.ts';
import { StoreError } from '../errors.ts';

export interface PruneOptions {
  /** Remove the events of every whole month before this time; default: now minus the retention. */
  before?: Date;
  /** How long the removal may wait for its locks, ms (default 5,000). */
  lockTimeoutMs?: number;
}

export interface PruneReport {
  /** Events before this time are gone: the start of the month `before` falls in (UTC). */
  cut: Date;
  /** Chains that got an `audit.pruned` event. */
  chainsCut: number;
  /** Monthly partitions dropped. */
  partitionsDropped: string[];
  /** Events removed, dropped partitions and default partition together. */
  eventsRemoved: number;
  /** How long the removal held locks on audit_events itself (every append and read waits), ms. */
  lockedMs: number;
  /** How long the months' partitions were emptied (only reads of those months wait), ms. */
  partitionLockedMs: number;
}

const MONTHLY = /^audit_events_y(\d{4})m(\d{2})$/;
/**
 * Prunes one at a time: two would each lock heads the other wants. The removals take it for
 * their transaction; the recording of the cuts for the session, across its read and appends.
 */
const PRUNE_LOCK_KEY = `pg_catalog.hashtext('engine_store.audit_prune')`;
const PRUNE_LOCK = `select pg_catalog.pg_advisory_xact_lock(${PRUNE_LOCK_KEY})`;
const PRUNE_SESSION_LOCK = `select pg_catalog.pg_advisory_lock(${PRUNE_LOCK_KEY})`;
const PRUNE_SESSION_UNLOCK = `select pg_catalog.pg_advisory_unlock(${PRUNE_LOCK_KEY})`;
/** Each chain that loses events at `$1`, with its last lost event, unless a prune recorded that cut. */
const CUTS = `select c.org_id::text as org_id, c.seq::text as seq, pg_catalog.encode(e.hash, 'hex') as hash
   from (select org_id, max(seq) as seq from audit_events where occurred_at < $1 group by org_id) c
   join audit_events e on e.org_id = c.org_id and e.seq = c.seq and e.occurred_at < $1
   left join (select org_id, max((changes ->> 'seq')::bigint) as seq from audit_events where action = 'audit.pruned' group by org_id) p
     on p.org_id = c.org_id
  where p.seq is null or p.seq < c.seq
  order by c.org_id`;

export async function retentionDays(db: Database): Promise<number | undefined> {
  const { rows } = await run<{ keep_days: number }>(db, 'select keep_days from audit_retention where id = 1', [], { prepare: false });
  return rows[0]?.keep_days;
}

export async function setRetentionDays(db: Database, days: number): Promise<void> {
  if (!Number.isInteger(days) || days < 1 || days > 36_500) {
    throw new StoreError('INVALID_INPUT', 'retention must be a whole number of days from 1 to 36500', {
      field: 'days',
      reason: 'out_of_range',
    });
  }
  await run(
    db,
    // The time in the row inserted, not a call in the update: Citus refuses a stable function
    // in ON CONFLICT DO UPDATE (audit_retention is a reference table there).
    `insert into audit_retention (id, keep_days, updated_at) values (1, $1, now())
     on conflict on constraint audit_retention_pkey do update set keep_days = excluded.keep_days, updated_at = excluded.updated_at`,
    [days],
    { prepare: false },
  );
}

/** The monthly partitions that exist now (the coming months are made where missing first). */
export async function ensurePartitions(db: Database): Promise<string[]> {
  const { rows } = await run<{ name: string }>(db, `select audit_ensure_partitions(now() - interval '1 month', 5) as name`, [], {
    prepare: false,
  });
  return rows.map((row) => row.name);
}

/** The start of the UTC month `at` falls in. */
function monthStart(at: Date): Date {
  return new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
}

export async function pruneAudit(db: Database, options: PruneOptions = {}): Promise<PruneReport> {
  const lockTimeoutMs = options.lockTimeoutMs ?? 5_000;
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1 || lockTimeoutMs > 600_000) {
    throw new StoreError('INVALID_INPUT', 'lockTimeoutMs must be a whole number of milliseconds from 1 to 600000', {
      field: 'lockTimeoutMs',
    });
  }
  let before = options.before;
  if (before === undefined) {
    const days = await retentionDays(db);
    if (days === undefined) {
      throw new StoreError('INVALID_INPUT', 'no retention is configured: give a date (--before), or set one (audit retention --days N)', {
        field: 'before',
        reason: 'no_retention',
      });
    }
    before = new Date(Date.now() - days * 86_400_000);
  }
  if (!(before instanceof Date) || Number.isNaN(before.getTime())) {
    throw new StoreError('INVALID_INPUT', 'before must be a valid date', { field: 'before', reason: 'invalid_date' });
  }
  if (before.getTime() > Date.now()) {
    throw new StoreError('INVALID_INPUT', 'before is in the future: prune removes past months only', { field: 'before', reason: 'future' });
  }
  const cut = monthStart(before);
  await ensurePartitions(db);

  // 1. The cuts, recorded in each chain that loses events (unless an earlier run recorded them):
  // found in one read, then appended one organization at a time, in one transaction. Joins on
  // org_id and no correlated subquery, so that Citus pushes the read down to the shards; the
  // appends are plain calls, which Citus does not push into a distributed query. The read and
  // the appends under one lock of the session, so that a second prune at the same time reads
  // the cuts after the first recorded them, and records none twice.
  const cuts = await db
    .withSession(async (session) => {
      await session.query(PRUNE_SESSION_LOCK);
      try {
        const { rows } = await session.query<{ org_id: string; seq: string; hash: string }>(CUTS, [cut]);
        if (rows.length > 0) {
          await session.pipeline(
            rows.map((cutAt) => ({
              sql: `select public.audit_append($1::uuid, 'audit.pruned', 'audit', $1::text,
                      pg_catalog.jsonb_build_object('before', $2::timestamptz, 'seq', $3::bigint, 'hash', $4::text))`,
              params: [cutAt.org_id, cut, cutAt.seq, cutAt.hash],
              prepare: true,
              rows: false,
            })),
          );
        }
        return rows;
      } finally {
        await session.query(PRUNE_SESSION_UNLOCK);
      }
    })
    .catch((error: unknown) => {
      throw toStoreError(error);
    });
  const chainsCut = cuts.length;

  // 2. The months, dropped, and what sits in the default partition, deleted.
  const { rows: partitions } = await run<{ name: string }>(
    db,
    `select c.relname as name
       from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'public.audit_events'::regclass`,
    [],
    { prepare: false },
  );
  const doomed = partitions
    .map((partition) => ({ name: partition.name, month: MONTHLY.exec(partition.name) }))
    .filter((partition) => partition.month !== null)
    .filter(({ month }) => Date.UTC(Number(month![1]), Number(month![2]), 1) <= cut.getTime())
    .map(({ name }) => name)
    .sort();
  const counted = doomed.length
    ? await run<{ events: string }>(
        db,
        `select (${doomed.map((name) => `(select count(*) from public.${name})`).join(' + ')})::text as events`,
        [],
        {
          prepare: false,
        },
      )
    : { rows: [{ events: '0' }] };
  const pruning = (statements: PipelinedStatement[]) =>
    db
      .withSession((session) => session.pipeline([...PRUNING, lockTimeout(lockTimeoutMs), ...statements, COMMIT]))
      .catch((error: unknown) => {
        throw toStoreError(error);
      });

  // 2. Each month emptied first, in a transaction of its own: TRUNCATE locks that partition
  // alone (only a read of that month waits), and the files it gives back, gigabytes for a busy
  // month, are unlinked at its commit, which for 10M events took 1.7 s. Stopped here, a month
  // is empty and still there: the next prune drops it.
  const emptying = performance.now();
  for (const name of doomed) await pruning([{ sql: `truncate table public.${name}`, rows: false }]);
  const partitionLockedMs = performance.now() - emptying;

  // 3. The emptied months dropped, and the default partition's old rows deleted: the locks on
  // audit_events itself, held for what an empty table costs to drop.
  const started = performance.now();
  const removed = await pruning([
    ...doomed.map((name) => ({ sql: `drop table public.${name}`, rows: false })),
    { sql: 'delete from audit_events_default where occurred_at < $1', params: [cut], rows: false },
  ]);
  const lockedMs = performance.now() - started;
  const defaultRows = removed.at(-2)!.rowCount ?? 0;
  return {
    cut,
    chainsCut,
    partitionsDropped: doomed,
    eventsRemoved: Number(counted.rows[0]!.events) + defaultRows,
    lockedMs,
    partitionLockedMs,
  };
}

/**
 * The start of each removal: a transaction block of its own, since SET LOCAL is what Citus sends
 * to the workers (with propagate_set_commands 'local'; a placeholder setting elsewhere), where
 * the shards' append-only triggers read engine_store.audit_pruning.
 */
const PRUNING: PipelinedStatement[] = [
  { sql: 'begin', rows: false },
  { sql: PRUNE_LOCK, rows: false },
  { sql: `select pg_catalog.set_config('citus.propagate_set_commands', 'local', true)`, rows: false },
  { sql: 'set local engine_store.audit_pruning = on', rows: false },
];
const COMMIT: PipelinedStatement = { sql: 'commit', rows: false };

function lockTimeout(ms: number): PipelinedStatement {
  return { sql: `select pg_catalog.set_config('lock_timeout', $1, true)`, params: [`${ms}ms`], rows: false };
}
