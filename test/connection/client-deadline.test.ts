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

describe.runIf(ownServerAvailable())('client deadlines against a frozen server (PostgreSQL)', () => {
  let server: OwnServer;
  let store: Store;
  let orgId: string;
  let key: string;

  beforeAll(async () => {
    server = await startOwnServer();
    store = await openStore({
      url: server.url,
      migrate: true,
      poolSize: 3,
      // One organization opens every connection of the tenant pool before the freeze (below).
      orgPoolShare: 1,
      scopeTimeouts: { statementMs: STATEMENT_MS },
      verifyTimeouts: { statementMs: STATEMENT_MS },
    });
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
    server?.dispose();
  });

  it('readOrg, withOrg and verifyApiKey each fail with TIMEOUT client_deadline within their deadline, and work again after', async () => {
    // Open connections in every pool first: a frozen server still accepts TCP connections, but a
    // new one would wait for the server's hello (bounded by the same deadline, as CONNECTION_FAILED).
    await Promise.all([
      ...Array.from({ length: 3 }, () => store.readOrg(orgId).workflows.list()),
      ...Array.from({ length: 2 }, () => store.verifyApiKey(key)),
    ]);
    server.freeze();
    try {
      const calls = {
        readOrg: () => store.readOrg(orgId).workflows.list(),
        withOrg: () => store.withOrg(orgId, (tx) => tx.users.list()),
        verifyApiKey: () => store.verifyApiKey(key),
      };
      for (const [name, call] of Object.entries(calls)) {
        const started = Date.now();
        const error = await expectStoreError(call, 'TIMEOUT');
        const waited = Date.now() - started;
        expect(error.details.reason, name).toBe('client_deadline');
        expect(waited, name).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
        expect(waited, name).toBeLessThan(DEADLINE_MS + 3_000);
        expect(error.message, name).not.toContain('password');
      }
    } finally {
      server.thaw();
    }
    // The destroyed connections were not reused: every call works again.
    expect((await store.readOrg(orgId).workflows.list()).items).toEqual([]);
    expect((await store.withOrg(orgId, (tx) => tx.users.list())).items).toHaveLength(1);
    expect((await store.verifyApiKey(key)).ok).toBe(true);
  }, 60_000);
});
