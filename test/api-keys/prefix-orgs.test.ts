/**
 * The prefix -> organization map verification keeps (api-keys/prefix-orgs.ts), so that a key's
 * later verifications name its organization (verify_api_key_in_org): bounded, learnt only from a
 * verification that matched the key's digest, forgotten after a miss; and a caller that names the
 * wrong organization, by mistake or on purpose, finds no key and counts nothing.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeOver, verifyApiKey, type Store } from 'engine-store';
import { PrefixOrgs } from '../../engine/infra/store/api-keys/prefix-orgs.ts';
import { parseKey } from '../../engine/infra/store/api-keys/api-keys.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';

describe('PrefixOrgs', () => {
  it('holds at most its capacity, forgetting the entry learnt longest ago', () => {
    const orgs = new PrefixOrgs(3);
    for (const prefix of ['a', 'b', 'c', 'd']) orgs.learn(prefix, `org-${prefix}`);
    expect(orgs.size).toBe(3);
    expect(orgs.orgOf('a')).toBeUndefined();
    expect(orgs.orgOf('d')).toBe('org-d');
    orgs.forget('d');
    expect(orgs.orgOf('d')).toBeUndefined();
    expect(orgs.size).toBe(2);
  });
});

describe.each(withCitus(backends))('verification naming the organization ($name)', (backend) => {
  let database: TestDatabase;
  let store: Store;
  let key: string;
  let orgId: string;
  let otherOrgId: string;

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
    const suffix = randomBytes(3).toString('hex');
    const org = await store.organizations.create({ name: `Prefixes ${suffix}` });
    orgId = org.id;
    otherOrgId = (await store.organizations.create({ name: `Other ${suffix}` })).id;
    key = await store.withOrg(orgId, async (tx) => {
      const user = await tx.users.create({ email: 'prefixes@orgs.example', role: 'manager' });
      return (await tx.apiKeys.issue({ userId: user.id, name: 'limited', rateLimitPerHour: 100 })).key;
    });
  });
  afterAll(async () => {
    await store?.close();
    await database?.dispose();
  });

  const remaining = async () => {
    const result = await store.verifyApiKey(key);
    if (!result.ok) throw new Error(`verification failed: ${result.reason}`);
    return result.rateLimit.remaining;
  };

  it("learns a key's organization from a verification that matched it, and names it from then on", async () => {
    const orgs = new PrefixOrgs();
    const { prefix } = parseKey(key)!;
    const wrongSecret = `${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}`;
    expect(await verifyApiKey(store.tenantDb, wrongSecret, {}, undefined, orgs)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    expect(orgs.orgOf(prefix)).toBeUndefined();
    const first = await verifyApiKey(store.tenantDb, key, {}, undefined, orgs);
    expect(first.ok).toBe(true);
    expect(orgs.orgOf(prefix)).toBe(orgId);
    // A wrong organization in the map: the key is not found there, and the entry is forgotten.
    orgs.learn(prefix, otherOrgId);
    expect(await verifyApiKey(store.tenantDb, key, {}, undefined, orgs)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    expect(orgs.orgOf(prefix)).toBeUndefined();
    const again = await verifyApiKey(store.tenantDb, key, {}, undefined, orgs);
    expect(again).toMatchObject({ ok: true, principal: { orgId } });
    expect(orgs.orgOf(prefix)).toBe(orgId);
  });

  it('counts nothing for a call that names another organization, even with the right digest', async () => {
    const before = await remaining();
    const { prefix, hash } = parseKey(key)!;
    for (const named of [otherOrgId, '00000000-0000-7000-8000-00000000beef']) {
      const { rows } = await store.tenantDb.query<{ outcome: string; org_id: string | null }>(
        'select outcome, org_id from public.verify_api_key_in_org($1, $2, $3, $4)',
        [named, prefix, hash, []],
      );
      expect(rows).toEqual([{ outcome: 'NOT_FOUND', org_id: null }]);
    }
    // The next verification is the one after `before`: nothing was counted in between.
    expect(await remaining()).toBe(before - 1);
  });

  it("gives the store's own verifications the same answers once it knows the organization", async () => {
    const results = [await store.verifyApiKey(key), await store.verifyApiKey(key)];
    expect(results.map((result) => result.ok && result.principal.orgId)).toEqual([orgId, orgId]);
    const [first, second] = results.map((result) => (result.ok ? result.rateLimit.remaining : -1));
    expect(second).toBe(first! - 1);
  });
});
