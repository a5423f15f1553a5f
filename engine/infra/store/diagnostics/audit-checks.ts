/**
 * What doctor says about the audit trail (migration 20261205120000): warnings, since nothing is
 * wrong with the data, but the trail grows or lands where prune cannot drop it cheaply.
 * - no retention configured: every event is kept forever;
 * - events older than the retention (and the month prune removes at once): prune has not run;
 * - events in the default partition: months without a partition of their own, which prune can
 *   only delete row by row;
 * - next month without its partition: its events will land in the default partition.
 */
import type { Database } from '../connection/database.ts';
import type { Finding } from './doctor.ts';

/** Prune removes whole months: events up to a month past the retention are not overdue yet. */
const MONTH_OF_SLACK_DAYS = 31;

interface AuditFacts {
  keep_days: number | null;
  overdue: boolean;
  in_default: string;
  next_month_partition: boolean;
}

export async function checkAuditTrail(db: Database, findings: Finding[]): Promise<void> {
  const { rows: present } = await db.query<{ present: boolean }>(
    `select to_regclass('public.audit_events') is not null and to_regclass('public.audit_retention') is not null as present`,
  );
  if (!present[0]!.present) return;
  // Simple statements, one fact each: Citus plans no correlated subquery over its tables.
  const { rows: retention } = await db.query<{ keep_days: number }>('select keep_days from public.audit_retention where id = 1');
  const keepDays = retention[0]?.keep_days ?? null;
  const { rows: overdue } = await db.query<{ one: number }>(
    `select 1 as one from public.audit_events where occurred_at < now() - make_interval(days => $1::int) limit 1`,
    [(keepDays ?? 0) + MONTH_OF_SLACK_DAYS],
  );
  const { rows: inDefault } = await db.query<{ n: string }>('select count(*)::text as n from public.audit_events_default');
  const { rows: next } = await db.query<{ present: boolean }>(
    `select to_regclass('public.audit_events_' || to_char(date_trunc('month', now() at time zone 'UTC') + interval '1 month', '"y"YYYY"m"MM')) is not null as present`,
  );
  const facts: AuditFacts = {
    keep_days: keepDays,
    overdue: keepDays !== null && overdue.length > 0,
    in_default: inDefault[0]!.n,
    next_month_partition: next[0]!.present,
  };
  if (facts.keep_days === null) {
    findings.push({
      code: 'AUDIT_RETENTION_NOT_SET',
      severity: 'warning',
      message:
        'the audit trail has no retention: its events are kept forever. Set one (engine-store audit retention --days 400) and run engine-store audit prune monthly',
      object: 'audit_retention',
    });
  } else if (facts.overdue) {
    findings.push({
      code: 'AUDIT_RETENTION_OVERDUE',
      severity: 'warning',
      message: `the audit trail holds events older than its retention (${facts.keep_days} days): run engine-store audit prune`,
      object: 'audit_events',
    });
  }
  if (facts.in_default !== '0') {
    findings.push({
      code: 'AUDIT_DEFAULT_PARTITION',
      severity: 'warning',
      message: `${facts.in_default} audit event(s) sit in audit_events_default (months without a partition of their own): prune removes them row by row, not by dropping a month. Run engine-store audit partitions before each month starts`,
      object: 'audit_events_default',
    });
  }
  if (!facts.next_month_partition) {
    findings.push({
      code: 'AUDIT_PARTITION_MISSING',
      severity: 'warning',
      message:
        'next month has no audit partition yet: its events would land in audit_events_default. Run engine-store audit partitions (prune makes them too)',
      object: 'audit_events',
    });
  }
}
