/**
 * Deadlines on the client (PostgreSQL, on a server of the test's own). With the server frozen
 * (SIGSTOP: it accepts nothing and answers nothing, as in a network partition), every call used
 * to wait as long as the freeze lasted (25 s in the audit): the server's statement timeout cannot
 * fire in a server that does not run. Now a tenant read, a tenant transaction and a key
 * verification each fail with TIMEOUT (reason client_deadline) a little after the statement
 * timeout of their pool, their connections are destroyed, and the store works again once the
 * server does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { ownServerAvailable, startOwnServer, type OwnServer } from '../support/own-server.ts';

const STATEMENT_MS = 1_000;
/** The store's deadline for that statement timeout (store.ts, clientDeadline): 1 s more. */
const DEADLINE_MS = 2_000;
/** The owner's deadline, and the deadline of single calls: both well below DEADLINE_MS. */
const OWNER_DEADLINE_MS = 700;
const CALL_DEADLINE_MS = 300;

describe.runIf(ownServerAvailable())('client deadlines against a frozen server (PostgreSQL)', () => {
  let server: OwnServer;
  let store: Store;
  /** A store whose owner calls have a deadline (openStore's deadlineMs). */
  let owner: Store;
  let orgId: string;
  let key: string;

  beforeAll(async () => {
    server = await startOwnServer();
    store = await openStore({
      url: server.url,
      migrate: true,
      poolSize: 5,
      // One organization opens every connection of the tenant pool before the freeze (below).
      orgPoolShare: 1,
      scopeTimeouts: { statementMs: STATEMENT_MS },
      verifyTimeouts: { statementMs: STATEMENT_MS },
    });
    owner = await openStore({ url: server.url, poolSize: 1, deadlineMs: OWNER_DEADLINE_MS });
    const org = await store.organizations.create({ name: 'Frozen' });
    orgId = org.id;
    key = await store.withOrg(orgId, async (tx) => {
      const user = await tx.users.create({ email: 'frozen@example.com', role: 'customer' });
      return (await tx.apiKeys.issue({ userId: user.id, name: 'frozen' })).key;
    });
  }, 60_000);

  afterAll(async () => {
    server?.thaw();
    await store?.close();
    await owner?.close();
    server?.dispose();
  });

  it('readOrg, withOrg and verifyApiKey each fail with TIMEOUT client_deadline within their deadline, and work again after', async () => {
    // Open connections in every pool first: a frozen server still accepts TCP connections, but a
    // new one would wait for the server's hello (bounded by the same deadline, as CONNECTION_FAILED).
    await Promise.all([
      ...Array.from({ length: 5 }, () => store.readOrg(orgId).workflows.list()),
      ...Array.from({ length: 2 }, () => store.verifyApiKey(key)),
      owner.organizations.list(),
    ]);
    server.freeze();
    try {
      const calls = {
        readOrg: () => store.readOrg(orgId).workflows.list(),
        withOrg: () => store.withOrg(orgId, (tx) => tx.users.list()),
        verifyApiKey: () => store.verifyApiKey(key),
      };
      const bounded = { deadlineMs: CALL_DEADLINE_MS };
      const cases: [string, () => Promise<unknown>, number][] = [
        ...Object.entries(calls).map(([name, call]): [string, () => Promise<unknown>, number] => [name, call, DEADLINE_MS]),
        // A deadline of the call's own, below the pool's; and the owner's calls, by openStore's.
        ['readOrg with deadlineMs', () => store.readOrg(orgId, bounded).workflows.list(), CALL_DEADLINE_MS],
        ['withOrg with deadlineMs', () => store.withOrg(orgId, (tx) => tx.users.list(), bounded), CALL_DEADLINE_MS],
        ['verifyApiKey with deadlineMs', () => store.verifyApiKey(key, bounded), CALL_DEADLINE_MS],
        ['an owner call', () => owner.organizations.list(), OWNER_DEADLINE_MS],
      ];
      for (const [name, call, deadlineMs] of cases) {
        const started = Date.now();
        const error = await expectStoreError(call, 'TIMEOUT');
        const waited = Date.now() - started;
        expect(error.details.reason, name).toBe('client_deadline');
        expect(error.message, name).toMatch(new RegExp(`within ${deadlineMs} ms`));
        expect(waited, name).toBeGreaterThanOrEqual(deadlineMs - 50);
        expect(waited, name).toBeLessThan(deadlineMs + (deadlineMs < DEADLINE_MS ? 1_000 : 3_000));
        expect(error.message, name).not.toContain('password');
      }
    } finally {
      server.thaw();
    }
    // The destroyed connections were not reused: every call works again.
    expect((await store.readOrg(orgId).workflows.list()).items).toEqual([]);
    expect((await store.withOrg(orgId, (tx) => tx.users.list())).items).toHaveLength(1);
    expect((await store.verifyApiKey(key)).ok).toBe(true);
    expect((await owner.organizations.list()).items.length).toBeGreaterThan(0);
  }, 60_000);

  it('refuses call options that are not a deadline in whole milliseconds, and reads a getter once', async () => {
    for (const options of [{ deadlineMs: 0 }, { deadlineMs: 1.5 }, { deadlineMs: '300' }, { deadlineMs: 86_400_001 }]) {
      await expectStoreError(store.verifyApiKey(key, options as never), 'INVALID_INPUT', 'deadlineMs');
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.users.list(), options as never),
        'INVALID_INPUT',
        'deadlineMs',
      );
      await expectStoreError(() => store.readOrg(orgId, options as never), 'INVALID_INPUT', 'deadlineMs');
    }
    for (const options of [{ deadline: 300 }, 300, null, [300]]) {
      await expectStoreError(store.verifyApiKey(key, options as never), 'INVALID_INPUT', 'options');
    }
    let reads = 0;
    const changing = {
      get deadlineMs() {
        reads += 1;
        return reads === 1 ? 5_000 : 0;
      },
    };
    expect((await store.verifyApiKey(key, changing)).ok).toBe(true);
    expect(reads).toBe(1);
  });
});
