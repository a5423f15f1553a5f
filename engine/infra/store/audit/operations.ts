/**
 * The audit trail as operators reach it (`store.audit`, the CLI's `audit` commands): through the
 * owner's connection, across organizations, including deleted ones and the role mapping's chain.
 * Tenants read their own organization's events through `readOrg(orgId).audit` instead.
 */
import type { Database } from '../connection/database.ts';
import { parseInput, uuid } from '../repositories/validation.ts';
import type { Page } from '../repositories/pagination.ts';
import { AuditLog, type AuditEvent, type ListAuditEvents } from './audit-log.ts';
import { auditHead, verifyAuditChains, type ChainHead, type ChainReport } from './chain.ts';
import { ensurePartitions, pruneAudit, retentionDays, setRetentionDays, type PruneOptions, type PruneReport } from './retention.ts';

export class AuditOperations {
  constructor(private readonly db: Database) {}

  /** Any organization's events (the nil organization's: the role mapping's). */
  list(orgId: string, request: ListAuditEvents = {}): Promise<Page<AuditEvent>> {
    return new AuditLog(this.db, parseInput(uuid, orgId, 'orgId')).list(request);
  }

  /** Recomputes the chains (all, or `orgId`'s); with `head`, checks that the chain still holds it. */
  verify(options: { orgId?: string; head?: string; onProgress?: (events: number) => void } = {}): Promise<ChainReport> {
    const { orgId, head, onProgress } = options;
    return verifyAuditChains(this.db, {
      ...(orgId === undefined ? {} : { orgId: parseInput(uuid, orgId, 'orgId') }),
      ...(head === undefined ? {} : { head }),
      ...(onProgress === undefined ? {} : { onProgress }),
    });
  }

  head(orgId: string): Promise<ChainHead> {
    return auditHead(this.db, parseInput(uuid, orgId, 'orgId'));
  }

  prune(options: PruneOptions = {}): Promise<PruneReport> {
    return pruneAudit(this.db, options);
  }

  /** How many days events are kept, if configured. */
  retentionDays(): Promise<number | undefined> {
    return retentionDays(this.db);
  }

  setRetentionDays(days: number): Promise<void> {
    return setRetentionDays(this.db, days);
  }

  /** Makes the coming months' partitions where missing; returns those it made. */
  ensurePartitions(): Promise<string[]> {
    return ensurePartitions(this.db);
  }
}
