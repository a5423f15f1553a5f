/**
 * The audit trail under concurrency and crashes (PostgreSQL; concurrency on Citus too): appends serialize per organization
 * only, never deadlock with the writes they record, and a process killed mid-transaction leaves
 * each change with its event or neither. Refused verifications add counts, not rows.
 */
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, storeOver, type Store } from 'engine-store';
import { createServerDatabase, serverUrl, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { wrongSecretOf } from '../support/keys.ts';

/**
 * `writers` writers in each of `organizations` organizations at once, each `rounds` transactions
 * of two audited writes in an order the others cross; then every event is there and every chain
 * verifies.
 */
async function writeConcurrently(store: Store, shape: { organizations: number; writers: number; rounds: number }): Promise<void> {
  const orgs = await Promise.all(Array.from({ length: shape.organizations }, (_, i) => store.organizations.create({ name: `Load ${i}` })));
  const outcomes = await Promise.allSettled(
    orgs.flatMap((org) =>
      Array.from({ length: shape.writers }, async (_, writer) => {
        for (let round = 0; round < shape.rounds; round += 1) {
          await store.withOrg(org.id, async (tx) => {
            const user = await tx.users.create({ email: `w${writer}-r${round}@load.example`, role: 'customer' });
            await tx.users.changeRole(user.id, 'manager');
          });
        }
      }),
    ),
  );
  expect(outcomes.filter((outcome) => outcome.status === 'rejected')).toEqual([]);
  const expected = 1 + shape.writers * shape.rounds * 2;
  for (const org of orgs) {
    expect((await store.audit.list(org.id, { limit: 500 })).items).toHaveLength(expected);
    expect(await store.audit.verify({ orgId: org.id })).toMatchObject({ ok: true, events: expected });
  }
}

const [citus] = withCitus([]);

describe.skipIf(!citus)('audit trail under load (Citus)', () => {
  let database: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    database = await citus!.createMigrated();
    store = await storeOver(database.db, { operator: 'load-test' });
  }, 120_000);
  afterAll(async () => {
    await database?.dispose();
  });

  it('8 writers in one organization and 8 organizations at once, on the workers: every chain valid, no deadlock', async () => {
    await writeConcurrently(store, { organizations: 8, writers: 8, rounds: 4 });
  }, 120_000);
});

describe.skipIf(!serverUrl)('audit trail under load (PostgreSQL)', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let store: Store;

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    store = await openStore({ url: server.url, tenantPoolSize: 16, orgPoolShare: 0.5, operator: 'load-test' });
  });
  afterAll(async () => {
    await store?.close();
    await server?.drop();
  });

  const count = async (sql: string, params: unknown[]) => Number((await store.db.query<{ n: string }>(sql, params)).rows[0]!.n);

  it('8 writers in one organization and 8 organizations at once: every chain valid, no deadlock, every event there', async () => {
    await writeConcurrently(store, { organizations: 8, writers: 8, rounds: 4 });
  }, 120_000);

  it('a process killed mid-transaction leaves each change with its event, or neither', async () => {
    const org = await store.organizations.create({ name: 'Killed Writer' });
    const child = fork(join(import.meta.dirname, '..', 'support', 'audit-writer-process.ts'), [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, AUDIT_DATABASE_URL: server.url, AUDIT_ORG_ID: org.id },
      stdio: 'ignore',
      serialization: 'json',
    } as never);
    await new Promise<void>((resolve, reject) => {
      child.on('message', (message: { committed: number }) => {
        if (message.committed >= 40) resolve();
      });
      child.on('exit', (code) => reject(new Error(`the writer exited early (${code})`)));
    });
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    // One statement, one snapshot: a commit the process sent before it died may still land, with its events.
    const { rows } = await store.db.query<{ users: number; managers: number; created: number; changed: number }>(
      `select (select count(*)::int from users where org_id = $1) as users,
              (select count(*)::int from users where org_id = $1 and role = 'manager') as managers,
              (select count(*)::int from audit_events where org_id = $1 and action = 'user.created') as created,
              (select count(*)::int from audit_events where org_id = $1 and action = 'user.role_changed') as changed`,
      [org.id],
    );
    const { users, managers, created, changed } = rows[0]!;
    expect(users).toBeGreaterThanOrEqual(40);
    expect([managers, created, changed]).toEqual([users, users, users]);
    expect((await store.audit.verify({ orgId: org.id })).ok).toBe(true);
  }, 60_000);

  it('10,000 wrong secrets for one key leave one event a minute, with the attempts counted', async () => {
    const org = await store.organizations.create({ name: 'Flooded' });
    const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'target@flood.example', role: 'admin' }));
    const issued = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'target' }));
    const wrong = wrongSecretOf(issued.key);
    const startedMinute = Math.floor(Date.now() / 60_000);
    const ATTEMPTS = 10_000;
    for (let sent = 0; sent < ATTEMPTS; sent += 100) {
      const results = await Promise.all(Array.from({ length: 100 }, () => store.verifyApiKey(wrong)));
      expect(results.every((result) => !result.ok && result.reason === 'NOT_FOUND')).toBe(true);
    }
    const minutes = Math.floor(Date.now() / 60_000) - startedMinute + 1;
    const events = (await store.audit.list(org.id, { action: 'api_key.auth_failed', limit: 500 })).items;
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events.length).toBeLessThanOrEqual(minutes);
    expect(events.every((event) => event.target.id === issued.apiKey.id && event.changes.reason === 'wrong_secret')).toBe(true);
    expect(events.reduce((sum, event) => sum + (event.attempts ?? 0), 0)).toBe(ATTEMPTS);
    expect(await count('select count(*) as n from api_key_auth_failures where org_id = $1', [org.id])).toBe(events.length);
    // The key itself still works, and a success writes nothing.
    const before = await count('select count(*) as n from audit_events where org_id = $1', [org.id]);
    expect((await store.verifyApiKey(issued.key)).ok).toBe(true);
    expect(await count('select count(*) as n from audit_events where org_id = $1', [org.id])).toBe(before);
  }, 120_000);

  it('records a revoked key once a minute and the first refusal of a rate-limited window once', async () => {
    const org = await store.organizations.create({ name: 'Refusals' });
    const user = await store.withOrg(org.id, (tx) => tx.users.create({ email: 'r@refusals.example', role: 'admin' }));
    const limited = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'limited', rateLimitPerHour: 2 }));
    const revoked = await store.withOrg(org.id, (tx) => tx.apiKeys.issue({ userId: user.id, name: 'revoked' }));
    await store.withOrg(org.id, (tx) => tx.apiKeys.revoke(revoked.apiKey.id));
    for (let i = 0; i < 5; i += 1) {
      await store.verifyApiKey(limited.key);
      expect(await store.verifyApiKey(revoked.key)).toMatchObject({ ok: false, reason: 'REVOKED' });
    }
    const failures = (await store.audit.list(org.id, { action: 'api_key.auth_failed', order: 'asc' })).items;
    const byKey = (id: string) => failures.filter((event) => event.target.id === id);
    expect(byKey(revoked.apiKey.id).map((event) => [event.changes.reason, event.actor])).toEqual([
      ['revoked', { kind: 'system', id: 'verify_api_key' }],
    ]);
    expect(byKey(revoked.apiKey.id)[0]!.attempts).toBe(5);
    expect(byKey(limited.apiKey.id).map((event) => [event.changes.reason, event.attempts])).toEqual([['rate_limited', 3]]);
  });
});
