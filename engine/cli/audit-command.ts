/** `engine-store audit ...`: the audit trail, for operators (see engine/infra/store/audit/). */
import type { Command } from 'commander';
import type { AuditEvent, ListAuditEvents } from '../infra/store/audit/audit-log.ts';
import type { ChainReport } from '../infra/store/audit/chain.ts';
import { withStore } from './with-database.ts';
import { given, read } from './flags.ts';
import { EXIT, pageLines, type Output } from './output.ts';

const describe = (event: AuditEvent) =>
  `${event.seq}  ${event.occurredAt.toISOString()}  ${event.action}  by ${event.actor.kind}:${event.actor.id}  ` +
  `on ${event.target.kind}:${event.target.id}  ${JSON.stringify(event.changes)}${event.attempts === undefined ? '' : `  attempts=${event.attempts}`}`;

/** How often verify says how far it got, in events. */
const PROGRESS_EVERY = 100_000;

interface ListFlags {
  org: string;
  after?: string;
  since?: Date;
  until?: Date;
  action?: string;
  actorId?: string;
  targetId?: string;
  limit?: number;
  order?: 'asc' | 'desc';
}

export function addAuditCommand(program: Command, output: Output): void {
  const audit = program.command('audit').description('read, check and prune the audit trail');

  audit
    .command('list')
    .description("list an organization's audit events, newest first; with --json, every matching event as a JSON line")
    .requiredOption('--org <id>', 'organization id (00000000-0000-0000-0000-000000000000: the role mapping)', read('--org'))
    .option('--after <cursor>', 'continue after this event (the seq of the last one seen)', read('--audit-after', '--after'))
    .option('--since <date>', 'events at or after this time', read('--since'))
    .option('--until <date>', 'events before this time', read('--until'))
    .option('--action <action>', 'only this action, such as api_key.revoked', read('--action'))
    .option('--actor-id <id>', "only this actor's events", read('--actor-id'))
    .option('--target-id <id>', 'only events about this target', read('--target-id'))
    .option('--limit <n>', 'page size (1-500)', read('--limit'))
    .option(
      '--order <order>',
      'desc (newest first, the default) or asc (oldest first: an export that resumes with --after)',
      read('--order'),
    )
    .action(async (options: ListFlags, command: Command) => {
      await withStore(command, output, async (store) => {
        const request: ListAuditEvents = given({
          after: options.after,
          since: options.since,
          until: options.until,
          action: options.action,
          actorId: options.actorId,
          targetId: options.targetId,
          limit: options.limit,
          order: options.order,
        });
        if (!output.json) {
          const page = await store.audit.list(options.org, request);
          output.result(page, () => pageLines(page, describe));
          return;
        }
        // JSON lines, page after page, each written as it comes: an export of any size in
        // bounded memory, which a SIEM resumes with --after and the last seq it stored.
        let after = request.after;
        do {
          const page = await store.audit.list(options.org, { ...request, ...(after ? { after } : {}) });
          for (const event of page.items) process.stdout.write(`${JSON.stringify(event)}\n`);
          after = page.nextCursor;
        } while (after);
      });
    });

  audit
    .command('verify')
    .description('recompute the audit chains and name the first broken event of each; exits 9 when one is broken')
    .option('--org <id>', 'only this organization', read('--org'))
    .option('--head <hash>', 'also prove the chain still holds this head (printed earlier by audit head); needs --org', read('--head'))
    .action(async (options: { org?: string; head?: string }, command: Command) => {
      await withStore(command, output, async (store) => {
        let reported = 0;
        const report = await store.audit.verify({
          ...given({ orgId: options.org, head: options.head }),
          onProgress: (events) => {
            if (events - reported < PROGRESS_EVERY) return;
            reported = events;
            output.progress(`checked ${events.toLocaleString('en-US')} events`);
          },
        });
        output.result(report, () => verifyLines(report, options.head));
        if (!report.ok) process.exitCode = EXIT.doctorFindings;
      });
    });

  audit
    .command('head')
    .description("print the head of an organization's chain (seq and hash), to keep outside the database")
    .requiredOption('--org <id>', 'organization id', read('--org'))
    .action(async (options: { org: string }, command: Command) => {
      await withStore(command, output, async (store) => {
        const head = await store.audit.head(options.org);
        output.result(head, () => [`${head.orgId}  seq ${head.seq}  ${head.hash}  ${head.occurredAt.toISOString()}`]);
      });
    });

  audit
    .command('prune')
    .description('remove every whole month of events before a date (default: now minus the retention), recording where each chain was cut')
    .option('--before <date>', 'remove the months that end on or before the month of this date', read('--before'))
    .action(async (options: { before?: Date }, command: Command) => {
      await withStore(command, output, async (store) => {
        const report = await store.audit.prune(given({ before: options.before }));
        output.result(report, () => [
          `pruned ${report.eventsRemoved.toLocaleString('en-US')} event(s) before ${report.cut.toISOString()}: ` +
            `${report.partitionsDropped.length} month(s) dropped, ${report.chainsCut} chain(s) cut, ` +
            `locks held ${report.lockedMs.toFixed(1)} ms on the trail (${report.partitionLockedMs.toFixed(1)} ms on the months emptied)`,
        ]);
      });
    });

  audit
    .command('retention')
    .description('show, or set with --days, how many days events are kept (prune and doctor use it)')
    .option('--days <n>', 'keep events this many days (1-36500)', read('--days'))
    .action(async (options: { days?: number }, command: Command) => {
      await withStore(command, output, async (store) => {
        if (options.days !== undefined) await store.audit.setRetentionDays(options.days);
        const days = await store.audit.retentionDays();
        output.result({ days: days ?? null }, () => [days === undefined ? 'retention: not configured' : `retention: ${days} days`]);
      });
    });

  audit
    .command('partitions')
    .description("make the coming months' partitions of the trail where missing (prune does too)")
    .action(async (_options: object, command: Command) => {
      await withStore(command, output, async (store) => {
        const made = await store.audit.ensurePartitions();
        output.result({ made }, () => (made.length ? made.map((name) => `made ${name}`) : ['every coming month has its partition']));
      });
    });
}

function verifyLines(report: ChainReport, head: string | undefined): string[] {
  const lines = report.findings.map((finding) => `broken ${finding.orgId} at seq ${finding.seq} (${finding.reason}): ${finding.message}`);
  if (head !== undefined) lines.push(report.headFound ? `the chain holds head ${head}` : `the chain does not hold head ${head}`);
  lines.push(`${report.events.toLocaleString('en-US')} event(s) in ${report.organizations} chain(s): ${report.ok ? 'ok' : 'BROKEN'}`);
  return lines;
}
