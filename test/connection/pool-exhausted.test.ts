/**
 * A full pool is said as such, and one organization cannot take it all (PostgreSQL).
 *
 * - With every connection of the tenant pool held by scopes that take their time, a call that
 *   waits in vain for one fails with POOL_EXHAUSTED (reason pool_full) after its deadline: not
 *   CONNECTION_FAILED "unreachable" (the CLI's exit 3, "no database there"), which is what a
 *   healthy but busy server used to be reported as.
 * - One organization holds at most its share of the pool (orgPoolShare, default half): its
 *   further scopes wait for one of its own to end, or fail with POOL_EXHAUSTED (reason
 *   org_share), while another organization's reads go on at once. Before, 50 callers of one
 *   organization on a pool of 5 made another's readOrg wait 9.6 s.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from 'engine-store';
import { expectStoreError } from '../support/assertions.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';

/** The tenant pool's deadline for a statement timeout of 1 s (store.ts, clientDeadline): also how long a call waits for a connection. */
const DEADLINE_MS = 2_000;

describe.skipIf(!serverUrl)('a full pool, and one organization’s share of it (PostgreSQL)', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  const stores: Store[] = [];
  let busy: string;
  let other: string;

  async function storeWith(options: { poolSize: number; orgPoolShare?: number }): Promise<Store> {
    const store = await openStore({ url: server.url, ...options, scopeTimeouts: { statementMs: 1_000 } });
    stores.push(store);
    return store;
  }

  /** `count` scopes of organization `orgId` that hold their connections until released. */
  async function holdScopes(store: Store, orgId: string, count: number): Promise<{ release: () => Promise<void> }> {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const entered: Promise<void>[] = [];
    const scopes = Array.from({ length: count }, () => {
      let enter!: () => void;
      entered.push(new Promise<void>((resolve) => (enter = resolve)));
      return store.withOrg(orgId, async (tx) => {
        await tx.users.list();
        enter();
        await held;
      });
    });
    await Promise.all(entered);
    return {
      release: async () => {
        release();
        await Promise.all(scopes);
      },
    };
  }

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    const setup = await storeWith({ poolSize: 1 });
    busy = (await setup.organizations.create({ name: 'Busy' })).id;
    other = (await setup.organizations.create({ name: 'Other' })).id;
  });

  afterAll(async () => {
    for (const store of stores) await store.close();
    await server?.drop();
  });

  it('a read that finds every connection busy fails with POOL_EXHAUSTED (pool_full) after waiting its deadline; the scopes holding them are unharmed', async () => {
    // A share of the whole pool: only the pool itself is full.
    const store = await storeWith({ poolSize: 1, orgPoolShare: 1 });
    const holder = await holdScopes(store, busy, 1);
    try {
      const started = Date.now();
      const error = await expectStoreError(() => store.readOrg(other).workflows.list(), 'POOL_EXHAUSTED');
      expect(error.details.reason).toBe('pool_full');
      expect(error.message).toMatch(/busy/);
      expect(Date.now() - started).toBeGreaterThanOrEqual(DEADLINE_MS - 100);
    } finally {
      await holder.release();
    }
    expect((await store.readOrg(other).workflows.list()).items).toEqual([]);
  });

  it('an organization holding its share waits for its own scopes, or fails with POOL_EXHAUSTED (org_share); another organization reads at once meanwhile', async () => {
    const store = await storeWith({ poolSize: 4 }); // default share: 2 connections an organization
    const holder = await holdScopes(store, busy, 2);
    try {
      const started = Date.now();
      const third = store.readOrg(busy.toUpperCase()).workflows.list();
      // The other organization is not queued behind it.
      expect((await store.readOrg(other).workflows.list()).items).toEqual([]);
      expect(await store.withOrg(other, async (tx) => (await tx.users.list()).items)).toEqual([]);
      expect(Date.now() - started).toBeLessThan(DEADLINE_MS / 2);
      const error = await expectStoreError(() => third, 'POOL_EXHAUSTED');
      expect(error.details.reason).toBe('org_share');
      expect(Date.now() - started).toBeGreaterThanOrEqual(DEADLINE_MS - 100);
      // A scope that waits less than the deadline gets the connection its organization gives back.
      const waiting = store.readOrg(busy).workflows.list();
      await new Promise((resolve) => setTimeout(resolve, 300));
      await holder.release();
      expect((await waiting).items).toEqual([]);
    } finally {
      await holder.release();
    }
  });

  it('refuses a share that is not a fraction above 0 and at most 1', async () => {
    for (const orgPoolShare of [0, -1, 1.5, Number.NaN]) {
      await expectStoreError(() => openStore({ url: server.url, orgPoolShare }), 'INVALID_INPUT', 'orgPoolShare');
    }
  });
});
