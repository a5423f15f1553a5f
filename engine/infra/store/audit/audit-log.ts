/**
 * Reading an organization's audit trail: newest first by default, keyset-paginated on the chain's
 * sequence number, filtered by time, action, actor or target. The same statement serves a tenant
 * scope (row-level security confines it to the scope's organization) and an operator (the owner's
 * connection, which also reads deleted organizations and the role mapping's chain).
 */
import { z } from 'zod/v4';
import type { Queryable } from '../connection/database.ts';
import { run } from '../connection/run.ts';
import { StoreError } from '../errors.ts';
import { DEFAULT_PAGE_SIZE, type Page } from '../repositories/pagination.ts';
import { inputObject, pageSize, parseObject } from '../repositories/validation.ts';

export type AuditActorKind = 'operator' | 'user' | 'api_key' | 'system';

export interface AuditEvent {
  orgId: string;
  /** The event's place in its organization's chain: 1, 2, 3... */
  seq: number;
  occurredAt: Date;
  actor: { kind: AuditActorKind; id: string };
  /** A stable dotted name, such as `api_key.revoked` (the README lists them). */
  action: string;
  target: { kind: string; id: string };
  /** The fields that changed, each with its value before and after (only `after` for a creation, only `before` for a purge). */
  changes: Record<string, unknown>;
  /** What the caller said about the request (`requestId`, `ip`, `userAgent`), or null. */
  context: Record<string, unknown> | null;
  /** SHA-256 of the previous event's hash and this event's content, in hex. */
  hash: string;
  prevHash: string;
  /**
   * For `api_key.auth_failed`: the attempts counted in the event's period so far. A live count,
   * outside the chain (the event is written once, at the first attempt).
   */
  attempts?: number;
}

export interface ListAuditEvents {
  /** The `nextCursor` of the previous page. */
  after?: string;
  /** Events at or after this time. */
  since?: Date | string;
  /** Events before this time. */
  until?: Date | string;
  action?: string;
  /** The actor's id: a user or key id, an operator's name, a database role. */
  actorId?: string;
  /** The target's id: an organization, user or key id, a role. */
  targetId?: string;
  /** 1 to 500, default 50. */
  limit?: number;
  /** `desc` (default, newest first) or `asc` (oldest first: an export that resumes with `after`). */
  order?: 'asc' | 'desc';
}

interface AuditEventRow {
  org_id: string;
  seq: string;
  occurred_at: Date;
  actor_kind: AuditActorKind;
  actor_id: string;
  action: string;
  target_kind: string;
  target_id: string;
  changes: Record<string, unknown>;
  context: Record<string, unknown> | null;
  hash: string;
  prev_hash: string;
  attempts: number | null;
}

const instant = z.union([z.date(), z.iso.datetime({ offset: true })]).transform((value) => new Date(value));
/** The list options' checks, shared with the command line's flags. */
export const auditCursor = z.string().regex(/^[1-9][0-9]{0,15}$/, 'is not a cursor returned by this store (the seq of an event)');
export const auditAction = z.string().regex(/^[a-z_]+\.[a-z_]+$/, 'is not an action name such as api_key.revoked');
export const auditId = z.string().min(1).max(200);
export const auditOrder = z.enum(['asc', 'desc']);
export const auditHead = z.string().regex(/^[0-9a-f]{64}$/, 'is not a head printed by audit head (64 hex digits)');
export const retentionDays = z.number().int().min(1).max(36_500);
const LIST_OPTIONS = inputObject({
  after: auditCursor.optional(),
  since: instant.optional(),
  until: instant.optional(),
  action: auditAction.optional(),
  actorId: auditId.optional(),
  targetId: auditId.optional(),
  limit: pageSize.optional(),
  order: auditOrder.optional(),
});

const statement = (order: 'asc' | 'desc') => `
  select e.org_id::text as org_id, e.seq::text as seq, e.occurred_at, e.actor_kind, e.actor_id, e.action, e.target_kind, e.target_id,
         e.changes, e.context, encode(e.hash, 'hex') as hash, encode(e.prev_hash, 'hex') as prev_hash,
         case when e.action = 'api_key.auth_failed' then
           (select f.attempts from api_key_auth_failures f
             where f.org_id = e.org_id and f.api_key_id = e.target_id::uuid and f.reason = e.changes ->> 'reason'
               and f.period_start = (e.changes ->> 'period_start')::timestamptz) end as attempts
    from audit_events e
   where e.org_id = $1 and ($2::bigint is null or e.seq ${order === 'desc' ? '<' : '>'} $2::bigint)
     and ($3::timestamptz is null or e.occurred_at >= $3) and ($4::timestamptz is null or e.occurred_at < $4)
     and ($5::text is null or e.action = $5) and ($6::text is null or e.actor_id = $6) and ($7::text is null or e.target_id = $7)
   order by e.seq ${order}
   limit $8`;
const LIST = { asc: statement('asc'), desc: statement('desc') };

function toEvent(row: AuditEventRow): AuditEvent {
  return {
    orgId: row.org_id,
    seq: Number(row.seq),
    occurredAt: row.occurred_at,
    actor: { kind: row.actor_kind, id: row.actor_id },
    action: row.action,
    target: { kind: row.target_kind, id: row.target_id },
    changes: row.changes,
    context: row.context,
    hash: row.hash,
    prevHash: row.prev_hash,
    ...(row.attempts === null ? {} : { attempts: row.attempts }),
  };
}

/** One organization's audit trail. */
export class AuditLog {
  constructor(
    private readonly db: Queryable,
    readonly orgId: string,
  ) {}

  /**
   * @example
   * const page = await store.readOrg(orgId).audit.list({ action: 'api_key.revoked', limit: 20 });
   */
  async list(request: ListAuditEvents = {}): Promise<Page<AuditEvent>> {
    const options = parseObject(LIST_OPTIONS, request, 'audit list options');
    const limit = options.limit ?? DEFAULT_PAGE_SIZE;
    if (options.since && options.until && options.since > options.until) {
      throw new StoreError('INVALID_INPUT', 'since is after until', { field: 'since', reason: 'empty_range' });
    }
    const { rows } = await run<AuditEventRow>(this.db, LIST[options.order ?? 'desc'], [
      this.orgId,
      options.after ?? null,
      options.since ?? null,
      options.until ?? null,
      options.action ?? null,
      options.actorId ?? null,
      options.targetId ?? null,
      limit + 1,
    ]);
    const items = rows.slice(0, limit).map(toEvent);
    return rows.length > limit ? { items, nextCursor: String(items.at(-1)!.seq) } : { items };
  }
}
