/**
 * A full pool is said as such (PostgreSQL). With every connection of the tenant pool held by
 * scopes that take their time, a call that waits in vain for one fails with POOL_EXHAUSTED
 * (reason pool_full) after its deadline: not CONNECTION_FAILED "unreachable" (the CLI's exit 3,
 * "no database there"), which is what a healthy but busy server used to be reported as.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';

describe.skipIf(!serverUrl)('a full pool (PostgreSQL)', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let store: Store;
  let orgId: string;

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    // Deadline of the tenant pool: 1 s + 1 s (store.ts, clientDeadline), also the wait for a free connection.
    store = await openStore({ url: server.url, poolSize: 1, scopeTimeouts: { statementMs: 1_000 } });
    orgId = (await store.organizations.create({ name: 'Busy' })).id;
  });

  afterAll(async () => {
    await store?.close();
    await server?.drop();
  });

  it('a read that finds every connection busy fails with POOL_EXHAUSTED after waiting its deadline; the scope holding it is unharmed', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inScope = new Promise<void>((resolve) => (entered = resolve));
    const holder = store.withOrg(orgId, async (tx) => {
      await tx.users.list();
      entered();
      await held;
      return tx.users.list();
    });
    await inScope;
    try {
      const started = Date.now();
      const error = await expectStoreError(() => store.readOrg(orgId).workflows.list(), 'POOL_EXHAUSTED');
      expect(error.details.reason).toBe('pool_full');
      expect(error.message).toMatch(/busy/);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_900);
    } finally {
      release();
    }
    expect((await holder).items).toEqual([]);
    expect((await store.readOrg(orgId).workflows.list()).items).toEqual([]);
  });
});
