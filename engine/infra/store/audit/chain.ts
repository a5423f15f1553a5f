/**
 * Checking the audit chains (migration 20261205120000): every organization's events, in order,
 * each hash recomputed here from the stored columns. The content is rendered by PostgreSQL's own
 * functions in this statement (not by a function of the schema, which whoever edited the rows
 * could also have replaced), hashed here with the previous event's hash, and compared.
 *
 * What each finding means:
 * - `content`: the event's hash does not cover its columns: a row was edited.
 * - `link`: its prev_hash is not the hash of the event before it: one was inserted, removed or
 *   edited together with its own hash, or two were swapped.
 * - `gap`: numbers are missing: events were deleted (not by prune, which records its cuts).
 * - `order`: a number repeats or goes back: an event was inserted or renumbered.
 * - `head`: the chain ends before, or elsewhere than, where audit_heads says it does: its last
 *   events were deleted.
 * - `start`: the chain starts after seq 1 where no `audit.pruned` event says it was cut there.
 *
 * An owner who rewrites a chain's tail and its head together leaves a chain that checks: keep
 * `audit head` outside the database, and `audit verify --head` proves the chain still holds it.
 */
import { createHash } from 'node:crypto';
import type { Queryable } from '../connection/database.ts';
import { run } from '../connection/run.ts';
import { StoreError } from '../errors.ts';

/** The hash before an organization's first event. */
export const GENESIS = Buffer.alloc(32);

/** The nil organization: the chain of the role mapping, which belongs to no organization. */
export const GLOBAL_CHAIN = '00000000-0000-0000-0000-000000000000';

/**
 * audit_event_content() of the migration, written out with pg_catalog's functions only: the two
 * must render the same text (the chain tests check that they do).
 */
export const CONTENT_SQL = `pg_catalog.json_build_array(e.org_id::text, e.seq, (extract(epoch from e.occurred_at) * 1000000)::int8,
  e.actor_kind, e.actor_id, e.action, e.target_kind, e.target_id, e.changes, e.context)::text`;

/** Events read per round trip. */
const BATCH = 5000;

export type ChainBreak = 'content' | 'link' | 'gap' | 'order' | 'head' | 'start';

export interface ChainFinding {
  orgId: string;
  /** The first event that does not check (for `head`, the seq the head names). */
  seq: number;
  reason: ChainBreak;
  message: string;
}

export interface ChainReport {
  ok: boolean;
  organizations: number;
  events: number;
  /** The first finding of each organization whose chain is broken. */
  findings: ChainFinding[];
  /** With `head`: whether the chain holds it (as an event or as a cut that prune recorded). */
  headFound?: boolean;
}

export interface ChainHead {
  orgId: string;
  seq: number;
  hash: string;
  occurredAt: Date;
}

interface EventRow {
  org_id: string;
  seq: string;
  /** As text, at the server's full precision: the keyset's third column. */
  occurred_at: string;
  action: string;
  changes: { seq?: unknown; hash?: unknown } | null;
  prev_hash: Uint8Array;
  hash: Uint8Array;
  content: string;
}

interface HeadRow {
  org_id: string;
  seq: string;
  hash: Uint8Array;
  occurred_at: Date;
}

/** One organization's chain, fed event by event. */
class ChainCheck {
  #expectedSeq = 0;
  #prev: Buffer | undefined;
  #firstSeq = 0;
  #firstPrev: Buffer | undefined;
  #cuts = new Map<number, string>();
  #hashes = new Set<string>();
  finding: ChainFinding | undefined;
  events = 0;

  constructor(
    readonly orgId: string,
    private readonly wantHead: string | undefined,
  ) {}

  add(row: EventRow): void {
    this.events += 1;
    if (this.finding) return;
    const seq = Number(row.seq);
    const hash = Buffer.from(row.hash);
    const prev = Buffer.from(row.prev_hash);
    if (this.#prev === undefined) {
      this.#firstSeq = seq;
      this.#firstPrev = prev;
      if (seq === 1 && !prev.equals(GENESIS)) return this.#fail(seq, 'link', 'the first event does not start from the genesis hash');
    } else if (seq <= this.#expectedSeq - 1) {
      return this.#fail(seq, 'order', `seq ${seq} comes after seq ${this.#expectedSeq - 1}`);
    } else if (seq !== this.#expectedSeq) {
      return this.#fail(this.#expectedSeq, 'gap', `events ${this.#expectedSeq} to ${seq - 1} are missing`);
    } else if (!prev.equals(this.#prev)) {
      return this.#fail(seq, 'link', `event ${seq} does not follow the hash of event ${seq - 1}`);
    }
    const computed = createHash('sha256').update(prev).update(row.content, 'utf8').digest();
    if (!computed.equals(hash)) return this.#fail(seq, 'content', `event ${seq} was changed after it was written`);
    if (row.action === 'audit.pruned' && row.changes && typeof row.changes.hash === 'string') {
      this.#cuts.set(Number(row.changes.seq), row.changes.hash);
    }
    if (this.wantHead !== undefined) this.#hashes.add(hash.toString('hex'));
    this.#prev = hash;
    this.#expectedSeq = seq + 1;
  }

  /** After the last event: the chain's start and end, against the prune cuts and audit_heads. */
  finish(head: HeadRow | undefined): void {
    if (this.finding) return;
    if (this.#firstSeq > 1) {
      const cut = this.#cuts.get(this.#firstSeq - 1);
      if (cut === undefined || cut !== this.#firstPrev!.toString('hex')) {
        return this.#fail(this.#firstSeq, 'start', `events before ${this.#firstSeq} are missing, and no prune recorded a cut there`);
      }
    }
    const headSeq = head ? Number(head.seq) : 0;
    if (headSeq !== this.#expectedSeq - 1 || (head && this.#prev && !Buffer.from(head.hash).equals(this.#prev))) {
      this.#fail(headSeq, 'head', `the chain ends at event ${this.#expectedSeq - 1}, but its head is event ${headSeq}`);
    }
  }

  holds(hash: string): boolean {
    return this.#hashes.has(hash) || [...this.#cuts.values()].includes(hash);
  }

  #fail(seq: number, reason: ChainBreak, message: string): void {
    this.finding = { orgId: this.orgId, seq, reason, message };
  }
}

/**
 * Recomputes the chains of every organization, or of `orgId`; with `head`, also whether that
 * organization's chain holds that hash. Reads through the owner's connection.
 *
 * @example
 * const report = await verifyAuditChains(store.db, { orgId });
 */
export async function verifyAuditChains(
  db: Queryable,
  options: { orgId?: string; head?: string; onProgress?: (events: number) => void } = {},
): Promise<ChainReport> {
  const { orgId, head } = options;
  if (head !== undefined && (orgId === undefined || !/^[0-9a-f]{64}$/.test(head))) {
    throw new StoreError('INVALID_INPUT', 'head must be a hash printed by audit head (64 hex digits), with its organization', {
      field: 'head',
      reason: 'bad_head',
    });
  }
  const { rows: headRows } = await run<HeadRow>(
    db,
    'select org_id::text as org_id, seq::text as seq, hash, occurred_at from audit_heads where $1::uuid is null or org_id = $1 order by org_id',
    [orgId ?? null],
    { prepare: false },
  );
  const heads = new Map(headRows.map((row) => [row.org_id, row]));
  const report: ChainReport = { ok: true, organizations: 0, events: 0, findings: [] };
  const checks = new Map<string, ChainCheck>();
  let current: ChainCheck | undefined;
  const close = (check: ChainCheck | undefined) => {
    if (!check) return;
    check.finish(heads.get(check.orgId));
    heads.delete(check.orgId);
    if (check.finding) report.findings.push(check.finding);
  };
  // Keyset on the primary key: a repeated seq (an inserted row) is read, in time order, not skipped.
  let after: [string, string, string] = [orgId ?? '00000000-0000-0000-0000-000000000000', '0', '-infinity'];
  for (;;) {
    const { rows } = await run<EventRow>(
      db,
      `select e.org_id::text as org_id, e.seq::text as seq, e.occurred_at::text as occurred_at, e.action, e.changes, e.prev_hash, e.hash, ${CONTENT_SQL} as content
         from audit_events e
        where (e.org_id, e.seq, e.occurred_at) > ($1::uuid, $2::bigint, $3::timestamptz) and ($4::uuid is null or e.org_id = $4)
        order by e.org_id, e.seq, e.occurred_at
        limit ${BATCH}`,
      [after[0], after[1], after[2], orgId ?? null],
      { prepare: false },
    );
    for (const row of rows) {
      if (current?.orgId !== row.org_id) {
        close(current);
        current = new ChainCheck(row.org_id, head);
        checks.set(row.org_id, current);
        report.organizations += 1;
      }
      current.add(row);
      report.events += 1;
    }
    options.onProgress?.(report.events);
    if (rows.length < BATCH) break;
    const last = rows.at(-1)!;
    after = [last.org_id, last.seq, last.occurred_at];
  }
  close(current);
  // Heads whose chains have no event left at all.
  for (const orphan of heads.values()) {
    if (Number(orphan.seq) === 0) continue;
    report.organizations += 1;
    report.findings.push({
      orgId: orphan.org_id,
      seq: Number(orphan.seq),
      reason: 'head',
      message: `every event up to ${orphan.seq} is missing`,
    });
  }
  report.findings.sort((a, b) => a.orgId.localeCompare(b.orgId));
  report.ok = report.findings.length === 0;
  if (head !== undefined) {
    report.headFound = checks.get(orgId!)?.holds(head) ?? false;
    report.ok &&= report.headFound;
  }
  return report;
}

/** The head of organization `orgId`'s chain: keep it outside the database, to check later with verify --head. */
export async function auditHead(db: Queryable, orgId: string): Promise<ChainHead> {
  const { rows } = await run<HeadRow>(
    db,
    'select org_id::text as org_id, seq::text as seq, hash, occurred_at from audit_heads where org_id = $1',
    [orgId],
    { prepare: false },
  );
  if (!rows[0] || Number(rows[0].seq) === 0) throw new StoreError('NOT_FOUND', 'this organization has no audit events');
  return {
    orgId: rows[0].org_id,
    seq: Number(rows[0].seq),
    hash: Buffer.from(rows[0].hash).toString('hex'),
    occurredAt: rows[0].occurred_at,
  };
}
