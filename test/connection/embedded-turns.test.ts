/**
 * The embedded database is one connection, taken in turns: a call waits for its turn no longer
 * than a call on a server waits for a pooled connection, then fails with POOL_EXHAUSTED (reason
 * pool_full). Before, a key verification was seen waiting 19.9 s behind ten scopes, with no
 * limit at all. A call that gave up leaves the queue: the calls behind it, and the store, go on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, storeOver, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';

const TURN_WAIT_MS = 400;

describe('turns on the embedded database', () => {
  let store: Store;
  let orgId: string;
  let key: string;

  beforeAll(async () => {
    const db = await openDatabase({ dataDir: 'memory://', deadlineMs: TURN_WAIT_MS });
    store = await storeOver(db, { migrate: true });
    orgId = (await store.organizations.create({ name: 'Turns' })).id;
    key = await store.withOrg(orgId, async (tx) => {
      const user = await tx.users.create({ email: 'turns@example.com', role: 'customer' });
      return (await tx.apiKeys.issue({ userId: user.id, name: 'turns' })).key;
    });
  }, 60_000);

  afterAll(async () => {
    await store?.close();
  });

  /** Ten scopes that hold the connection, one after the other, for `holdMs` each. */
  function busyScopes(holdMs: number): Promise<unknown> {
    return Promise.all(
      Array.from({ length: 10 }, () =>
        store.withOrg(orgId, async (tx) => {
          await tx.users.list();
          await new Promise((resolve) => setTimeout(resolve, holdMs));
        }),
      ),
    );
  }

  it('a verification behind ten long scopes fails with POOL_EXHAUSTED pool_full within its wait, and so do the scopes whose turn did not come', async () => {
    const scopes = busyScopes(150).then(
      () => 'all',
      (error: unknown) => error,
    );
    const started = performance.now();
    const error = await expectStoreError(store.verifyApiKey(key), 'POOL_EXHAUSTED');
    const waited = performance.now() - started;
    expect(error.details).toMatchObject({ reason: 'pool_full' });
    expect(error.message).toMatch(/embedded database/);
    expect(waited).toBeGreaterThanOrEqual(TURN_WAIT_MS - 20);
    expect(waited).toBeLessThan(TURN_WAIT_MS + 1_000);
    // The scopes queued with it wait as long, and those whose turn did not come fail alike.
    const outcome = await scopes;
    expect(outcome).toMatchObject({ code: 'POOL_EXHAUSTED', details: { reason: 'pool_full' } });
  });

  it('the queue goes on after calls gave up: the next calls run at once, in order', async () => {
    const order: string[] = [];
    await Promise.all([
      store
        .readOrg(orgId)
        .users.list()
        .then(() => order.push('read')),
      store.verifyApiKey(key).then((result) => order.push(result.ok ? 'verified' : 'refused')),
      store.withOrg(orgId, (tx) => tx.users.list()).then(() => order.push('scope')),
    ]);
    expect(order).toEqual(['read', 'verified', 'scope']);
  });

  it('calls that wait less than the bound all get their turn', async () => {
    const results = await Promise.all(
      Array.from({ length: 5 }, () =>
        store.withOrg(orgId, async (tx) => {
          await new Promise((resolve) => setTimeout(resolve, 40));
          return (await tx.users.list()).items.length;
        }),
      ),
    );
    expect(results).toEqual([1, 1, 1, 1, 1]);
  });
});
