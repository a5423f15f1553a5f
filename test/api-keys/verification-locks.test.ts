/**
 * Key verification under a tenant's locks and a busy tenant pool (the tenant boundary's
 * "verification row locks" route; test/tenancy/tenant-boundary.test.ts points here).
 *
 * A tenant may lock its own key row (FOR UPDATE through tx.kysely in withOrg, or any lock its
 * login may take with plain SQL) and keep its scope open; it may fill the tenant pool with scopes
 * that wait. Neither may hold up a verification, of that key or any other: verify_api_key never
 * waits on a row lock a tenant can take, runs on a pool of its own, and a lock it does meet (an
 * operator's DDL) ends it within its own short limits with a typed error.
 *
 * Every wait is raced against a timer while the lock is still held: a verification that waited
 * on the lock would lose the race (and the test would then release the lock, not hang).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, storeOver, type IssuedKey, type Store, type Verification } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';
import { connectAsTenant } from '../support/leaked-login.ts';
import { scopeEntryOf } from '../../engine/infra/store/store.ts';

const tag = () => randomBytes(4).toString('hex');

/** Longer than any verification takes here, far shorter than a wait on a held lock (forever). */
const PROMPT_MS = 3_000;

/** `work`'s outcome if it settles within `ms`, else 'pending' (work keeps running). */
async function within<T>(ms: number, work: Promise<T>): Promise<{ value: T } | { error: unknown } | 'pending'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'pending'>((resolve) => {
    timer = setTimeout(() => resolve('pending'), ms);
  });
  try {
    return await Promise.race([
      work.then(
        (value) => ({ value }),
        (error: unknown) => ({ error }),
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A promise with its resolver, to hold a scope open until the test lets it go. */
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { opened, open };
}

function outcome(result: Verification): string {
  return result.ok ? 'OK' : result.reason;
}

describe.each(withCitus(backends))('verification under tenant locks ($name)', (backend) => {
  let database: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
  });

  afterAll(async () => {
    await store?.close();
    await database?.dispose();
  });

  async function freshKey(rateLimitPerHour = 1_000): Promise<{ orgId: string } & IssuedKey> {
    const org = await store.organizations.create({ name: `Org ${tag()}` });
    const issued = await store.withOrg(org.id, async (tx) => {
      const user = await tx.users.create({ email: `u-${tag()}@example.com`, role: 'admin' });
      return tx.apiKeys.issue({ userId: user.id, name: `key ${tag()}`, rateLimitPerHour });
    });
    return { orgId: org.id, ...issued };
  }

  async function counted(apiKeyId: string): Promise<number> {
    const { rows } = await store.db.query<{ n: number }>(
      'select coalesce(sum(request_count), 0)::int as n from api_key_usage where api_key_id = $1',
      [apiKeyId],
    );
    return rows[0]!.n;
  }

  it('the verification options are checked: a pool of no connections or a limit meaning "none" is refused', async () => {
    for (const verifyPoolSize of [0, -1, 1.5, Number.NaN, 1_001]) {
      await expectStoreError(() => storeOver(store.db, { verifyPoolSize }), 'INVALID_INPUT', 'verifyPoolSize');
    }
    for (const verifyTimeouts of [{ lockMs: 0 }, { statementMs: -1 }, { lockMs: 1.5 }, { statementMs: Number.NaN }]) {
      await expectStoreError(() => storeOver(store.db, { verifyTimeouts }), 'INVALID_INPUT', /^(lockMs|statementMs)$/);
    }
  });

  describe.runIf(backend.name !== 'pglite')('on a server', () => {
    it('a tenant holding its own key row FOR UPDATE in an open withOrg scope does not hold up the key: answers, and counts exactly', async () => {
      const { orgId, key, apiKey } = await freshKey(5);
      const locked = gate();
      const release = gate();
      const holder = store.withOrg(orgId, async (tx) => {
        await tx.kysely.selectFrom('api_keys').selectAll().where('id', '=', apiKey.id).forUpdate().execute();
        locked.open();
        await release.opened;
      });
      try {
        await locked.opened;
        // Seven at once against a limit of five, while the row is locked: exactly five admitted.
        const started = Date.now();
        const answered = await within(PROMPT_MS, Promise.all(Array.from({ length: 7 }, () => store.verifyApiKey(key))));
        expect(answered === 'pending' ? 'still waiting on the tenant lock' : 'answered').toBe('answered');
        expect(Date.now() - started).toBeLessThan(PROMPT_MS);
        if (answered === 'pending' || 'error' in answered) throw (answered as { error: unknown }).error;
        const outcomes = answered.value.map(outcome).sort();
        expect(outcomes).toEqual(['OK', 'OK', 'OK', 'OK', 'OK', 'RATE_LIMITED', 'RATE_LIMITED']);
        const principals = answered.value.flatMap((result) => (result.ok ? [result.principal] : []));
        expect(new Set(principals.map((principal) => principal.orgId))).toEqual(new Set([orgId]));
        expect(await counted(apiKey.id)).toBe(5);
      } finally {
        release.open();
        await holder;
      }
      // last_used_at was skipped while the row was held, not waited for; the limit still holds.
      const { rows } = await store.db.query<{ last_used_at: Date | null }>('select last_used_at from api_keys where id = $1', [apiKey.id]);
      expect(rows[0]!.last_used_at).toBeNull();
      expect(outcome(await store.verifyApiKey(key))).toBe('RATE_LIMITED');
      expect(await counted(apiKey.id)).toBe(5);
    });

    it('an uncommitted change to the key in an open scope (rename) does not hold up its verification', async () => {
      const { orgId, key, apiKey } = await freshKey();
      const changed = gate();
      const release = gate();
      const holder = store.withOrg(orgId, async (tx) => {
        await tx.kysely
          .updateTable('api_keys')
          .set({ name: `renamed ${tag()}` })
          .where('id', '=', apiKey.id)
          .execute();
        changed.open();
        await release.opened;
      });
      try {
        await changed.opened;
        const answered = await within(PROMPT_MS, store.verifyApiKey(key));
        expect(answered === 'pending' ? 'still waiting on the tenant lock' : 'answered').toBe('answered');
        expect(answered !== 'pending' && 'value' in answered && outcome(answered.value)).toBe('OK');
        expect(await counted(apiKey.id)).toBe(1);
      } finally {
        release.open();
        await holder;
      }
    });

    describe('a leaked tenant login', () => {
      let leaked: pg.Client;

      beforeAll(async () => {
        leaked = await connectAsTenant(database.url!);
      });
      afterAll(async () => {
        await leaked?.end();
      });

      // FOR KEY SHARE is left out: it conflicts with neither of verification's writes.
      it.each(['for update', 'for no key update', 'for share'])(
        'holding its key row with select ... %s does not hold up the verification of that key',
        async (strength) => {
          const { orgId, key, apiKey } = await freshKey(3);
          await leaked.query('begin');
          try {
            // A leaked login alone enters no organization: this is SQL that got into a real scope
            // of the key's organization, with the store's signature of that scope.
            const { expiresAt, proof } = scopeEntryOf(store).signer.sign(orgId);
            await leaked.query(
              `select set_config('citus.propagate_set_commands', 'local', true), public.enter_org_scope($1::uuid, $2::bigint, $3::bytea)`,
              [orgId, expiresAt, proof],
            );
            // With its organization, as Citus needs to route a row lock to one shard.
            const { rows } = await leaked.query(`select id from api_keys where org_id = $1 and id = $2 ${strength}`, [orgId, apiKey.id]);
            expect(rows).toHaveLength(1);
            const answered = await within(PROMPT_MS, Promise.all(Array.from({ length: 4 }, () => store.verifyApiKey(key))));
            expect(answered === 'pending' ? 'still waiting on the tenant lock' : 'answered').toBe('answered');
            if (answered === 'pending' || 'error' in answered) throw (answered as { error: unknown }).error;
            expect(answered.value.map(outcome).sort()).toEqual(['OK', 'OK', 'OK', 'RATE_LIMITED']);
            expect(await counted(apiKey.id)).toBe(3);
          } finally {
            await leaked.query('rollback');
          }
        },
      );
    });

    it('a lock an operator holds on the counters ends the verification at its lock_timeout with LOCK_TIMEOUT, and nothing is counted', async () => {
      const { key, apiKey } = await freshKey();
      expect(outcome(await store.verifyApiKey(key))).toBe('OK');
      const owner = new pg.Client({ connectionString: database.url });
      await owner.connect();
      try {
        await owner.query('begin');
        await owner.query('lock table api_key_usage in access exclusive mode');
        const started = Date.now();
        const answered = await within(PROMPT_MS, store.verifyApiKey(key));
        expect(answered === 'pending' ? 'still waiting on the lock' : 'answered').toBe('answered');
        expect(Date.now() - started).toBeLessThan(PROMPT_MS);
        await expectStoreError(Promise.reject((answered as { error?: unknown }).error ?? new Error('verified')), 'LOCK_TIMEOUT');
      } finally {
        await owner.query('rollback');
        await owner.end();
      }
      expect(outcome(await store.verifyApiKey(key))).toBe('OK');
      expect(await counted(apiKey.id)).toBe(2);
    });

    it('a verification that outlasts its statement_timeout fails with TIMEOUT, even while its lock_timeout is longer', async () => {
      const limited = await openStore({ url: database.url!, poolSize: 2, verifyTimeouts: { statementMs: 1_000, lockMs: 60_000 } });
      const { key, apiKey } = await freshKey();
      const owner = new pg.Client({ connectionString: database.url });
      await owner.connect();
      try {
        await owner.query('begin');
        await owner.query('lock table api_key_usage in access exclusive mode');
        const answered = await within(PROMPT_MS, limited.verifyApiKey(key));
        expect(answered === 'pending' ? 'still waiting on the lock' : 'answered').toBe('answered');
        await expectStoreError(Promise.reject((answered as { error?: unknown }).error ?? new Error('verified')), 'TIMEOUT');
      } finally {
        await owner.query('rollback');
        await owner.end();
        await limited.close();
      }
      expect(await counted(apiKey.id)).toBe(0);
      expect(outcome(await store.verifyApiKey(key))).toBe('OK');
    });

    it('a tenant pool full of open scopes does not starve verification: it has a pool of its own', async () => {
      // One organization may take the whole tenant pool here: the pool full is the point.
      const small = await openStore({ url: database.url!, poolSize: 2, orgPoolShare: 1 });
      const { orgId, key } = await freshKey();
      const inside = [gate(), gate()];
      const release = gate();
      const holders = inside.map((entered) =>
        small.withOrg(orgId, async (tx) => {
          await tx.users.list();
          entered.open();
          await release.opened;
        }),
      );
      try {
        await Promise.all(inside.map((entered) => entered.opened));
        const answered = await within(PROMPT_MS, small.verifyApiKey(key));
        expect(answered === 'pending' ? 'still waiting for a connection' : 'answered').toBe('answered');
        expect(answered !== 'pending' && 'value' in answered && outcome(answered.value)).toBe('OK');
      } finally {
        release.open();
        await Promise.all(holders);
        await small.close();
      }
    });
  });
});
