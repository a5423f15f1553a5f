/**
 * The key cache in one process (openStore's keyCache; PostgreSQL only): answers from memory,
 * forgets what changed, fails closed when it cannot prove it hears changes, keeps nothing a
 * notification crossed, stays within maxKeys, and gives back what it leased. The guarantees
 * across processes (exact limits, a killed process, propagation) are in key-cache-processes.test.ts.
 *
 * Each test's database has a fixed verification clock (10:30 of a day in 2030), so that an hour
 * turning during the run cannot split a count over two windows.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { openStore, type QueryEvent, type Store } from 'engine-store';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { countedRequests, fixVerificationClock, issuedKey } from '../support/key-cache-fixtures.ts';
import { connectAsTenant } from '../support/leaked-login.ts';
import { expectStoreError } from '../support/assertions.ts';
import { wrongSecretOf } from '../support/keys.ts';

describe('key cache options', () => {
  it('refuses options of the wrong shape before opening anything', async () => {
    for (const keyCache of [
      null,
      5,
      [],
      {},
      { maxKeys: 0 },
      { maxKeys: 1.5 },
      { maxKeys: 10, maxStalenessMs: 5 },
      { maxKeys: 10, idleReturnMs: 10 },
      { maxKeys: 10, ttl: 1 },
    ]) {
      await expectStoreError(openStore({ dataDir: 'memory://', keyCache: keyCache as never }), 'INVALID_INPUT');
    }
  });

  it('refuses the embedded database, which verifies in its own process already', async () => {
    const error = await expectStoreError(
      openStore({ dataDir: 'memory://', migrate: true, keyCache: { maxKeys: 10 } }),
      'INVALID_INPUT',
      'keyCache',
    );
    expect(error.details.reason).toBe('embedded');
  });
});

describe.skipIf(!serverUrl)('key cache (PostgreSQL)', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let owner: Store;
  const stores: Store[] = [];
  const verifyQueries: QueryEvent[] = [];

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    owner = await openStore({ url: server.url });
    await fixVerificationClock(owner, server.name);
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((store) => store.close()));
    verifyQueries.length = 0;
  });

  afterAll(async () => {
    await owner?.close();
    await server?.drop();
  });

  async function cachingStore(
    options: { maxKeys?: number; maxStalenessMs?: number; idleReturnMs?: number; lockMs?: number } = {},
  ): Promise<Store> {
    const store = await openStore({
      url: server.url,
      keyCache: {
        maxKeys: options.maxKeys ?? 100,
        ...(options.maxStalenessMs ? { maxStalenessMs: options.maxStalenessMs } : {}),
        ...(options.idleReturnMs ? { idleReturnMs: options.idleReturnMs } : {}),
      },
      ...(options.lockMs ? { verifyTimeouts: { lockMs: options.lockMs } } : {}),
      onQuery: (event) => {
        if (event.pool === 'verify') verifyQueries.push(event);
      },
    });
    stores.push(store);
    return store;
  }

  const issued = (input: Parameters<typeof issuedKey>[1] = {}) => issuedKey(owner, input);
  const counted = (apiKeyId: string) => countedRequests(owner, apiKeyId);

  /** Verifies until the cache holds units of the key, so that the next verification is a hit. */
  async function warm(store: Store, key: string): Promise<void> {
    for (let i = 0; i < 10 && store.keyCache!.stats().permitsHeld === 0; i++) expect((await store.verifyApiKey(key)).ok).toBe(true);
    expect(store.keyCache!.stats().permitsHeld).toBeGreaterThan(0);
  }

  /** Verifies, yielding to I/O between tries, until the answer is not OK; fails after `ms`. */
  async function refusedWithin(store: Store, key: string, ms: number) {
    const started = performance.now();
    for (;;) {
      const result = await store.verifyApiKey(key);
      if (!result.ok) return result;
      if (performance.now() - started > ms) throw new Error(`the key was still accepted after ${ms} ms`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  async function listenerPid(): Promise<number> {
    const { rows } = await owner.db.query<{ pid: number }>(
      `select pid from pg_stat_activity where datname = current_database() and application_name = 'engine-store listener'`,
    );
    expect(rows).toHaveLength(1);
    return rows[0]!.pid;
  }

  it('answers repeat verifications from memory, with what the database would say, and counts them in leases', async () => {
    const store = await cachingStore();
    const { key, apiKey, user, org } = await issued();
    const first = await store.verifyApiKey(key);
    await warm(store, key);
    const queriesBefore = verifyQueries.length;
    const { hits } = store.keyCache!.stats();
    const hit = await store.verifyApiKey(key);
    expect(verifyQueries.length).toBe(queriesBefore);
    expect(store.keyCache!.stats().hits).toBe(hits + 1);
    expect(hit).toEqual({
      ok: true,
      principal: {
        orgId: org.id,
        userId: user.id,
        role: 'admin',
        permissions: first.ok ? first.principal.permissions : [],
        apiKeyId: apiKey.id,
      },
      rateLimit: { limit: 100_000, remaining: expect.any(Number), resetsAt: new Date('2030-05-05T11:00:00.000Z') },
    });
    // The database counted every unit leased: those spent and those held.
    const { permitsHeld } = store.keyCache!.stats();
    const spent = store.keyCache!.stats().hits + store.keyCache!.stats().leases;
    expect(await counted(apiKey.id)).toBe(spent + permitsHeld);
    // A caller that changes its answer changes nothing the cache holds.
    if (hit.ok) hit.principal.permissions.push('org:manage' as never);
    const again = await store.verifyApiKey(key);
    expect(again.ok && again.principal.permissions).toEqual(first.ok && first.principal.permissions);
  });

  it('refuses a missing permission from memory without counting it, and a wrong secret at the database', async () => {
    const store = await cachingStore();
    const { key, apiKey } = await issued({ role: 'customer' });
    await warm(store, key);
    const before = await counted(apiKey.id);
    const queries = verifyQueries.length;
    expect(await store.verifyApiKey(key, { permission: 'org:manage' })).toEqual({ ok: false, reason: 'MISSING_PERMISSION' });
    expect(verifyQueries.length).toBe(queries);
    const wrongSecret = wrongSecretOf(key);
    expect(await store.verifyApiKey(wrongSecret)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    // The lease that refused it, and the refusal recorded in the audit trail.
    expect(verifyQueries.length).toBe(queries + 2);
    expect(await counted(apiKey.id)).toBe(before);
    // The key itself is still answered from memory.
    expect((await store.verifyApiKey(key)).ok).toBe(true);
    expect(verifyQueries.length).toBe(queries + 2);
  });

  it('forgets a key when it is revoked, its scopes narrowed, its user suspended, its role mapping or its organization changed', async () => {
    const store = await cachingStore();
    const revoked = await issued();
    await warm(store, revoked.key);
    await owner.withOrg(revoked.org.id, (tx) => tx.apiKeys.revoke(revoked.apiKey.id));
    expect(await refusedWithin(store, revoked.key, 2_000)).toMatchObject({ reason: 'REVOKED' });

    const user = await issued();
    await warm(store, user.key);
    await owner.withOrg(user.org.id, (tx) => tx.users.suspend(user.user.id));
    expect(await refusedWithin(store, user.key, 2_000)).toMatchObject({ reason: 'USER_INACTIVE' });

    const org = await issued();
    await warm(store, org.key);
    await owner.organizations.suspend(org.org.id);
    expect(await refusedWithin(store, org.key, 2_000)).toMatchObject({ reason: 'ORG_INACTIVE' });

    const mapped = await issued({ role: 'customer' });
    await warm(store, mapped.key);
    const permission = 'workflow:read';
    expect((await store.verifyApiKey(mapped.key, { permission })).ok).toBe(true);
    await owner.db.query(`delete from role_permissions where role = 'customer' and permission = $1`, [permission]);
    try {
      await expect.poll(async () => (await store.verifyApiKey(mapped.key, { permission })).ok, { timeout: 2_000, interval: 5 }).toBe(false);
    } finally {
      await owner.db.query(`insert into role_permissions (role, permission) values ('customer', $1)`, [permission]);
    }
  });

  it('empties itself at once when its listening connection is lost, verifies at the database meanwhile, and listens again', async () => {
    const store = await cachingStore();
    const { key } = await issued();
    await warm(store, key);
    await owner.db.query('select pg_terminate_backend($1)', [await listenerPid()]);
    await expect.poll(() => store.keyCache!.stats().state, { timeout: 2_000, interval: 1 }).toBe('connecting');
    expect(store.keyCache!.stats()).toMatchObject({ keys: 0, permitsHeld: 0 });
    const queries = verifyQueries.length;
    expect((await store.verifyApiKey(key)).ok).toBe(true);
    expect(verifyQueries.length).toBeGreaterThan(queries);
    await expect.poll(() => store.keyCache!.stats().state, { timeout: 5_000, interval: 10 }).toBe('listening');
    await warm(store, key);
  });

  it('stops answering from memory within maxStalenessMs when the listening connection goes silent (a partition)', async () => {
    const store = await cachingStore({ maxStalenessMs: 50 });
    const { key } = await issued();
    await warm(store, key);
    const pid = await listenerPid();
    process.kill(pid, 'SIGSTOP');
    try {
      await new Promise((resolve) => setTimeout(resolve, 150));
      const queries = verifyQueries.length;
      expect((await store.verifyApiKey(key)).ok).toBe(true);
      expect(verifyQueries.length).toBe(queries + 1);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Answered again, the pings prove the connection live: hits resume.
    await expect
      .poll(
        async () => {
          const { hits } = store.keyCache!.stats();
          await store.verifyApiKey(key);
          return store.keyCache!.stats().hits > hits;
        },
        { timeout: 5_000, interval: 10 },
      )
      .toBe(true);
  });

  /**
   * A verification of `key` whose lease waits on the key's counter row, which another session
   * holds until `release()`: the cache is drained first, so that it goes to the database.
   */
  async function leaseWaitingOnCounter(store: Store, key: string, apiKeyId: string) {
    await warm(store, key);
    while (store.keyCache!.stats().permitsHeld > 0) await store.verifyApiKey(key);
    const blocker = new pg.Client({ connectionString: server.url });
    await blocker.connect();
    await blocker.query('begin');
    await blocker.query('select from api_key_usage where api_key_id = $1 for update', [apiKeyId]);
    const leasing = store.verifyApiKey(key);
    await expect
      .poll(
        async () =>
          (await owner.db.query(`select from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`)).rowCount,
      )
      .toBe(1);
    return {
      leasing,
      release: async () => {
        await blocker.query('commit');
        await blocker.end();
      },
    };
  }

  it('keeps no lease that a notification about its organization crossed', async () => {
    const store = await cachingStore({ lockMs: 5_000 });
    const { key, apiKey, org } = await issued();
    // The next verification takes a lease of several units, and waits on the counter's row.
    const { leasing, release } = await leaseWaitingOnCounter(store, key, apiKey.id);
    try {
      await owner.withOrg(org.id, (tx) => tx.apiKeys.revoke(apiKey.id));
      // The notification arrives while the lease waits.
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await release();
    }
    // The database read the key before the revocation: this answer is OK, and rightly so.
    expect((await leasing).ok).toBe(true);
    expect(store.keyCache!.stats()).toMatchObject({ keys: 0, permitsHeld: 0 });
    expect(await store.verifyApiKey(key)).toMatchObject({ ok: false, reason: 'REVOKED' });
  });

  it("keeps a caller's deadline while it waits for another caller's lease of the same key", async () => {
    const store = await cachingStore({ lockMs: 5_000 });
    const { key, apiKey } = await issued();
    // The first caller's lease waits on the counter's row, with no deadline of its own.
    const { leasing, release } = await leaseWaitingOnCounter(store, key, apiKey.id);
    const settled: string[] = [];
    const done = () => settled.push('leasing');
    void leasing.then(done, done);
    try {
      // The second waits for that lease, but only as long as its own deadline.
      const error = await expectStoreError(store.verifyApiKey(key, { deadlineMs: 50 }), 'TIMEOUT');
      expect(error.details.reason).toBe('client_deadline');
      expect(settled).toEqual([]);
    } finally {
      await release();
    }
    expect((await leasing).ok).toBe(true);
  });

  it('holds at most maxKeys keys, and gives back the units of those it forgets and of all of them at close', async () => {
    const store = await cachingStore({ maxKeys: 3 });
    const keys = await Promise.all(Array.from({ length: 6 }, () => issued()));
    let verified = 0;
    for (const { key } of keys) {
      for (let i = 0; i < 8; i++) {
        expect((await store.verifyApiKey(key)).ok).toBe(true);
        verified += 1;
      }
      expect(store.keyCache!.stats().keys).toBeLessThanOrEqual(3);
    }
    await store.close();
    // Every unit leased and not spent went back: the counters hold the verifications, no more.
    const totals = await Promise.all(keys.map(({ apiKey }) => counted(apiKey.id)));
    expect(totals.reduce((sum, n) => sum + n, 0)).toBe(verified);
  });

  it('gives back the units of a key left unused for idleReturnMs, and keeps answering it', async () => {
    const store = await cachingStore({ idleReturnMs: 1_000 });
    const { key, apiKey } = await issued();
    await warm(store, key);
    const { hits, leases } = store.keyCache!.stats();
    await expect.poll(() => store.keyCache!.stats().permitsHeld, { timeout: 5_000, interval: 50 }).toBe(0);
    // Whatever the process spent stays counted; nothing it held does.
    await expect.poll(() => counted(apiKey.id), { timeout: 2_000, interval: 20 }).toBe(hits + leases);
    expect(store.keyCache!.stats().keys).toBe(1);
    expect((await store.verifyApiKey(key)).ok).toBe(true);
  });

  it('returns a lease once, and only to whoever took it', async () => {
    const { key, apiKey, org } = await issued();
    const store = await cachingStore();
    await warm(store, key);
    const { rows } = await owner.db.query<{ id: string; permits: number }>('select id, permits from api_key_leases where api_key_id = $1', [
      apiKey.id,
    ]);
    const lease = rows.at(-1)!;
    const tenant = await connectAsTenant(server.url);
    try {
      // The tenant login may call the function, but a lease it did not take gives nothing back.
      const forged = await tenant.query('select return_api_key_permits($1, $2, $3, 1000) as given', [org.id, apiKey.id, randomUUID()]);
      expect(forged.rows[0].given).toBe(0);
      const before = await counted(apiKey.id);
      const given = await tenant.query('select return_api_key_permits($1, $2, $3, 1000) as given', [org.id, apiKey.id, lease.id]);
      expect(given.rows[0].given).toBe(lease.permits);
      expect(await counted(apiKey.id)).toBe(before - lease.permits);
      const twice = await tenant.query('select return_api_key_permits($1, $2, $3, 1000) as given', [org.id, apiKey.id, lease.id]);
      expect(twice.rows[0].given).toBe(0);
      // It reads no lease, and cannot tell which organization a notification is about.
      await expect(tenant.query('select * from api_key_leases')).rejects.toMatchObject({ code: '42501' });
      await expect(tenant.query('select key_cache_tag($1)', [org.id])).rejects.toMatchObject({ code: '42501' });
    } finally {
      await tenant.end();
    }
  });

  it('notifies with a tag that names no organization, user or key, and that this store can compute', async () => {
    const { key, apiKey, org, user } = await issued();
    const tenant = await connectAsTenant(server.url);
    const payloads: string[] = [];
    tenant.on('notification', (message) => payloads.push(message.payload ?? ''));
    try {
      await tenant.query('listen engine_store_key_cache');
      await owner.withOrg(org.id, (tx) => tx.apiKeys.revoke(apiKey.id));
      await expect.poll(() => payloads.length).toBe(1);
    } finally {
      await tenant.end();
    }
    expect(payloads[0]).toMatch(/^[0-9a-f]{32}$/);
    for (const secret of [org.id, user.id, apiKey.id, apiKey.prefix, key])
      expect(payloads[0]).not.toContain(secret.replaceAll('-', '').slice(0, 8));
    const { rows } = await owner.db.query<{ tag: string }>('select key_cache_tag($1) as tag', [org.id]);
    expect(payloads[0]).toBe(rows[0]!.tag);
  });

  it('stops caching when the scope key is replaced, and goes on verifying at the database', async () => {
    // A database of its own: every store on it must be reopened after the rotation.
    const other = await createServerDatabase({ migrated: true });
    const otherOwner = await openStore({ url: other.url });
    try {
      const org = await otherOwner.organizations.create({ name: 'Rotated' });
      const { key } = await otherOwner.withOrg(org.id, async (tx) => {
        const user = await tx.users.create({ email: 'rotated@example.com', role: 'admin' });
        return tx.apiKeys.issue({ userId: user.id, name: 'rotated' });
      });
      let queries = 0;
      const store = await openStore({
        url: other.url,
        keyCache: { maxKeys: 10 },
        // Verifications only: forgetting its keys also gives their units back through this pool.
        onQuery: (event) => (queries += event.pool === 'verify' && event.sql.includes('verify_api_key') ? 1 : 0),
      });
      stores.push(store);
      await warm(store, key);
      await otherOwner.db.query('select rotate_tenant_scope_key()');
      await expect.poll(() => store.keyCache!.stats().state, { timeout: 2_000, interval: 1 }).toBe('disabled');
      expect(store.keyCache!.stats().keys).toBe(0);
      const before = queries;
      expect((await store.verifyApiKey(key)).ok).toBe(true);
      expect(queries).toBe(before + 1);
    } finally {
      await Promise.all(stores.splice(0).map((store) => store.close()));
      await otherOwner.close();
      await other.drop();
    }
  });
});
