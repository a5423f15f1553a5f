/**
 * What the audit tests do behind the store's back: an owner who edits the trail with its
 * triggers off (as a superuser can), and history written as the database would have written it
 * months ago (the trail takes its times from the clock, so a test cannot wait for them).
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Database } from '../../engine/infra/store/connection/database.ts';
import { GENESIS } from '../../engine/infra/store/audit/chain.ts';

/**
 * Runs `statements` as the owner with every trigger off, in one transaction: on Citus on the
 * workers too, where the shards' triggers run (SET LOCAL, propagated; a placeholder elsewhere).
 */
export async function tamper(db: Database, ...statements: string[]): Promise<void> {
  await db.withSession((session) =>
    session.pipeline([
      { sql: 'begin', rows: false },
      { sql: `select set_config('citus.propagate_set_commands', 'local', true)`, rows: false },
      { sql: 'set local session_replication_role = replica', rows: false },
      ...statements.map((sql) => ({ sql, rows: false })),
      { sql: 'commit', rows: false },
    ]),
  );
}

/**
 * Appends `user.created` events at the given times to `orgId`'s chain, each hashed here, in
 * JavaScript, from the content the migration's audit_event_content() renders: an implementation
 * of the chain apart from audit_append(), which verify must accept as the same.
 */
// The digests go as bytea: a parameter the server types as the column's domain (sha256_digest)
// is one the embedded database's driver does not know, and sends as text.
export async function backdatedEvents(db: Database, orgId: string, times: readonly string[]): Promise<void> {
  for (const time of times) {
    const { rows: heads } = await db.query<{ seq: string; hash: Uint8Array }>(
      'select seq::text as seq, hash from audit_heads where org_id = $1',
      [orgId],
    );
    const seq = heads[0] ? Number(heads[0].seq) + 1 : 1;
    const prev = heads[0] ? Buffer.from(heads[0].hash) : GENESIS;
    const target = randomUUID();
    const changes = JSON.stringify({ email: { after: `then-${seq}@example.com` } });
    const { rows } = await db.query<{ content: string }>(
      `select audit_event_content($1, $2, $3, 'system', 'planted', 'user.created', 'user', $4, $5::jsonb, null) as content`,
      [orgId, seq, time, target, changes],
    );
    const hash = createHash('sha256').update(prev).update(rows[0]!.content, 'utf8').digest();
    await db.query(
      `insert into audit_events (org_id, seq, occurred_at, actor_kind, actor_id, action, target_kind, target_id, changes, context, prev_hash, hash)
       values ($1, $2, $3, 'system', 'planted', 'user.created', 'user', $4, $5::jsonb, null, $6::bytea, $7::bytea)`,
      [orgId, seq, time, target, changes, prev, hash],
    );
    await db.query(
      `insert into audit_heads (org_id, seq, hash, occurred_at) values ($1, $2, $3::bytea, $4)
       on conflict (org_id) do update set seq = excluded.seq, hash = excluded.hash, occurred_at = excluded.occurred_at`,
      [orgId, seq, hash, time],
    );
  }
}
