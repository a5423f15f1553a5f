/**
 * An event's canonical content, which its hash covers, rendered two ways that must agree byte for
 * byte: audit_event_content(), which audit_append() hashes at commit, and chain.ts's CONTENT_SQL,
 * which `audit verify` renders from the stored columns. Both are json_build_array; they also
 * match jsonb_build_array's rendering, which the content was made with before (migration
 * 20261205120000 says why it changed), so a chain written either way verifies.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTENT_SQL } from '../../engine/infra/store/audit/chain.ts';
import { backends, type TestDatabase } from '../support/backends.ts';

interface Event {
  orgId: string;
  seq: number;
  occurredAt: { text: string; micros: number };
  actorKind: string;
  actorId: string;
  action: string;
  targetKind: string;
  targetId: string;
  changes: unknown;
  context: unknown;
}

/** Text as PostgreSQL stores it: any Unicode but NUL. */
const text = (maxLength: number) => fc.string({ unit: 'binary', maxLength }).map((value) => value.replaceAll('\u0000', ''));
const awkward = fc.constantFrom('say "hi" \\', 'tab\t line\n', '\u0001\u001f\u007f', 'é✓ 😀', 'line\u2028end', '\\u0000', '');

const events: fc.Arbitrary<Event> = fc.record({
  orgId: fc.uuid(),
  seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  // Microseconds included: the content carries the time as Unix microseconds.
  occurredAt: fc
    .tuple(
      fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2200-01-01T00:00:00Z'), noInvalidDate: true }),
      fc.integer({ min: 0, max: 999 }),
    )
    .map(([date, micros]) => ({
      text: `${date.toISOString().slice(0, -1)}${String(micros).padStart(3, '0')}Z`,
      micros: date.getTime() * 1000 + micros,
    })),
  actorKind: fc.constantFrom('operator', 'user', 'api_key', 'system'),
  actorId: fc.oneof(awkward, text(40)),
  action: fc.constantFrom('user.created', 'api_key.revoked', 'audit.pruned'),
  targetKind: fc.oneof(awkward, text(10)),
  targetId: fc.oneof(awkward, text(40)),
  // Numbers as JSON has them (jsonb keeps 1.50 and -0 as written, and so does its output).
  changes: fc.dictionary(
    fc.oneof(awkward, text(12)),
    fc.oneof(fc.jsonValue({ maxDepth: 3 }), awkward, fc.constantFrom(1.5, -0, 1e21, 2 ** 53 + 2)),
  ),
  context: fc.option(fc.dictionary(text(12), fc.oneof(text(30), fc.integer())), { nil: null }),
});

describe.each(backends)('the canonical content of an audit event on $name', (backend) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await backend.createMigrated();
  });

  afterAll(async () => {
    await database?.dispose();
  });

  it('is the same text from audit_event_content(), from audit verify, and from jsonb_build_array', async () => {
    await fc.assert(
      fc.asyncProperty(events, async (event) => {
        const { rows } = await database.db.query<{ appended: string; verified: string; jsonb: string }>(
          `select audit_event_content(e.org_id, e.seq, e.occurred_at, e.actor_kind, e.actor_id, e.action, e.target_kind, e.target_id, e.changes, e.context) as appended,
                  ${CONTENT_SQL} as verified,
                  jsonb_build_array(e.org_id::text, e.seq, (extract(epoch from e.occurred_at) * 1000000)::int8,
                    e.actor_kind, e.actor_id, e.action, e.target_kind, e.target_id, e.changes, e.context)::text as jsonb
             from (select $1::uuid as org_id, $2::bigint as seq, $3::timestamptz as occurred_at, $4::text as actor_kind, $5::text as actor_id,
                          $6::text as action, $7::text as target_kind, $8::text as target_id, $9::jsonb as changes, $10::jsonb as context) e`,
          [
            event.orgId,
            event.seq,
            event.occurredAt.text,
            event.actorKind,
            event.actorId,
            event.action,
            event.targetKind,
            event.targetId,
            JSON.stringify(event.changes),
            event.context === null ? null : JSON.stringify(event.context),
          ],
        );
        const { appended, verified, jsonb } = rows[0]!;
        expect(verified).toBe(appended);
        expect(jsonb).toBe(appended);
        // The content holds what it was given, in order (not a constant that would match itself).
        expect(JSON.parse(appended)).toEqual([
          event.orgId,
          event.seq,
          event.occurredAt.micros,
          event.actorKind,
          event.actorId,
          event.action,
          event.targetKind,
          event.targetId,
          JSON.parse(JSON.stringify(event.changes)),
          event.context,
        ]);
      }),
      { numRuns: 150 },
    );
  });
});
