/**
 * Rate-limit counters across crashes of the server (PostgreSQL, on a server of the test's own).
 * The counters are UNLOGGED, which PostgreSQL empties in crash recovery: a key limited to 5 an
 * hour was admitted 20 times in one hour across 3 crashes. verify_api_key now also saves every
 * 64th of the limit's counts (every count below a limit of 128) in a logged table, and a counter
 * a crash emptied starts again from there: a crash re-admits at most a 64th of a key's limit.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from 'engine-store';
import { ownServerAvailable, startOwnServer, type OwnServer } from '../support/own-server.ts';

const LIMIT = 5;
const CRASHES = 3;

describe.runIf(ownServerAvailable())('rate-limit counters across server crashes (PostgreSQL)', () => {
  let server: OwnServer;

  beforeAll(async () => {
    server = await startOwnServer();
  }, 60_000);

  afterAll(() => server?.dispose());

  async function withStore<T>(work: (store: Store) => Promise<T>): Promise<T> {
    const store = await openStore({ url: server.url, migrate: true, poolSize: 2 });
    try {
      return await work(store);
    } finally {
      await store.close();
    }
  }

  it(`a key limited to ${LIMIT} an hour is admitted ${LIMIT} times in all across ${CRASHES} crashes (immediate shutdowns)`, async () => {
    const key = await withStore(async (store) => {
      const org = await store.organizations.create({ name: 'Crashes' });
      return store.withOrg(org.id, async (tx) => {
        const user = await tx.users.create({ email: 'crashes@example.com', role: 'customer' });
        return (await tx.apiKeys.issue({ userId: user.id, name: 'limited', rateLimitPerHour: LIMIT })).key;
      });
    });
    // Every round in one hour window (the limit is per hour): close to the turn of an hour, wait for it.
    const toNextHour = 3_600_000 - (Date.now() % 3_600_000);
    if (toNextHour < 60_000) await new Promise((resolve) => setTimeout(resolve, toNextHour + 1_000));
    const hour = new Date().getUTCHours();
    let admitted = 0;
    for (let round = 0; round <= CRASHES; round++) {
      await withStore(async (store) => {
        for (let i = 0; i < LIMIT + 2; i++) {
          const verified = await store.verifyApiKey(key);
          if (verified.ok) admitted++;
          else expect(verified.reason).toBe('RATE_LIMITED');
        }
      });
      if (round < CRASHES) server.crashAndRestart();
    }
    expect(new Date().getUTCHours(), 'all in one hour window').toBe(hour);
    expect(admitted).toBe(LIMIT);
  }, 240_000);

  it('a key limited to 6,400 an hour loses at most a 64th of its limit (100 counts) per crash, and its counter goes on from the saved count', async () => {
    const { key, apiKeyId } = await withStore(async (store) => {
      const org = await store.organizations.create({ name: 'Crashes, high limit' });
      return store.withOrg(org.id, async (tx) => {
        const user = await tx.users.create({ email: 'crashes-high@example.com', role: 'customer' });
        const issued = await tx.apiKeys.issue({ userId: user.id, name: 'high', rateLimitPerHour: 6_400 });
        return { key: issued.key, apiKeyId: issued.apiKey.id };
      });
    });
    const toNextHour = 3_600_000 - (Date.now() % 3_600_000);
    if (toNextHour < 60_000) await new Promise((resolve) => setTimeout(resolve, toNextHour + 1_000));
    const hour = new Date().getUTCHours();
    let admitted = 0;
    for (let round = 0; round < 2; round++) {
      const remaining = await withStore(async (store) => {
        let last = -1;
        for (let i = 0; i < 250; i++) {
          const verified = await store.verifyApiKey(key);
          expect(verified.ok).toBe(true);
          if (verified.ok) last = verified.rateLimit.remaining;
          admitted++;
        }
        return last;
      });
      if (round === 0) {
        expect(remaining).toBe(6_400 - 250);
        server.crashAndRestart();
      } else {
        // 250 counted before the crash, 200 of them saved (every 100th): the counter went on from 200.
        expect(remaining).toBe(6_400 - 200 - 250);
      }
    }
    expect(new Date().getUTCHours(), 'all in one hour window').toBe(hour);
    const saved = await withStore(
      async (store) =>
        (await store.db.query<{ n: number }>('select request_count as n from api_key_usage_saved where api_key_id = $1', [apiKeyId])).rows,
    );
    expect(saved).toEqual([{ n: 400 }]);
    expect(admitted).toBe(500);
  }, 240_000);
});
