/**
 * API keys on every backend: issuing, verification (every reason code), hourly rate limits with
 * an injected clock, scopes, names, rotation, last_used_at throttling, that no plain key is ever
 * stored or logged, and that one organization cannot reach another's keys.
 *
 * Verifications that must not disturb one another use keys of their own: a key's hour window
 * and last_used_at are per key. Injected clocks (`now`) lie in 2030 or later, after every real
 * timestamp the tests produce.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Database, Queryable } from '../../engine/infra/store/connection/database.ts';
import {
  PERMISSIONS,
  ROLE_PERMISSIONS,
  StoreError,
  storeOver,
  verifyApiKey,
  type IssueKey,
  type TenantScope,
  type IssuedKey,
  type Store,
  type Verification,
} from 'engine-store';
import type { Role } from '../../engine/infra/store/repositories/validation.ts';
import { installVerificationClock, verifyApiKeyAt } from '../support/verification-clock.ts';
import { hashKey } from '../../engine/infra/store/api-keys/api-keys.ts';
import { expectStoreError } from '../support/assertions.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';

const KEY_FORMAT = /^es_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/;

/** Every field an ApiKey has, and nothing else (no key, no digest). */
const API_KEY_FIELDS = [
  'createdAt',
  'deletedAt',
  'expiresAt',
  'id',
  'lastUsedAt',
  'name',
  'orgId',
  'prefix',
  'rateLimitPerHour',
  'replacedBy',
  'scopes',
  'status',
  'updatedAt',
  'userId',
].sort();

const tag = () => randomBytes(4).toString('hex');
const sorted = <T extends string>(values: readonly T[]) => [...values].sort();
const secretOf = (key: string) => key.slice('es_'.length + 12 + 1);
const prefixOf = (key: string) => key.slice('es_'.length, 'es_'.length + 12);
const at = (iso: string) => new Date(iso);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** The start of the next hour after `time` (UTC; every zone in use here has whole-hour offsets). */
const nextHour = (time: number) => new Date(Math.floor(time / 3_600_000) * 3_600_000 + 3_600_000);

/** A well-formed key that was never issued (a random prefix equal to twelve z is a 1-in-36^12 chance). */
const NEVER_ISSUED = `es_zzzzzzzzzzzz_${randomBytes(32).toString('base64url')}`;

function expectRefused(result: Verification, reason: string): void {
  expect(result.ok ? 'OK' : result.reason).toBe(reason);
  expect(result.ok).toBe(false);
}

function expectOk(result: Verification): asserts result is Extract<Verification, { ok: true }> {
  expect(result.ok ? 'OK' : result.reason).toBe('OK');
}

describe.each(withCitus(backends))('API keys ($name)', (backend) => {
  let database: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
    await installVerificationClock(store.db);
  });

  afterAll(async () => {
    await database?.dispose();
  });

  // -------------------------------------------------------------------------------------------
  // Fixture helpers

  async function newOrg(): Promise<string> {
    const org = await store.organizations.create({ name: `Org ${tag()}` });
    return org.id;
  }

  async function newUser(orgId: string, role: Role = 'admin'): Promise<string> {
    const user = await store.withOrg(orgId, (tx) => tx.users.create({ email: `u-${tag()}@example.com`, role }));
    return user.id;
  }

  async function issue(orgId: string, input: Partial<IssueKey> & { userId: string }): Promise<IssuedKey> {
    return store.withOrg(orgId, (tx) => tx.apiKeys.issue({ name: `key ${tag()}`, ...input }));
  }

  /** A fresh organization, user and key. */
  async function freshKey(options: { role?: Role; key?: Partial<IssueKey> } = {}) {
    const orgId = await newOrg();
    const userId = await newUser(orgId, options.role ?? 'admin');
    const issued = await issue(orgId, { userId, ...options.key });
    return { orgId, userId, ...issued };
  }

  async function ownerRow(id: string): Promise<{ last_used_at: Date | null; updated_at: Date; status: string; expires_at: Date | null }> {
    // As the schema owner (a superuser on both backends), outside any tenant scope.
    const { rows } = await store.db.query<{ last_used_at: Date | null; updated_at: Date; status: string; expires_at: Date | null }>(
      'select last_used_at, updated_at, status, expires_at from api_keys where id = $1',
      [id],
    );
    expect(rows).toHaveLength(1);
    return rows[0]!;
  }

  // -------------------------------------------------------------------------------------------

  describe('issuing', () => {
    it('issue returns a plain key of the format es_<12 chars>_<43 chars> whose prefix is the listed prefix', async () => {
      const { key, apiKey, orgId, userId } = await freshKey();
      expect(key).toMatch(KEY_FORMAT);
      expect(apiKey.prefix).toBe(prefixOf(key));
      expect(apiKey).toMatchObject({
        orgId,
        userId,
        status: 'active',
        scopes: null,
        expiresAt: null,
        rateLimitPerHour: 1000,
        lastUsedAt: null,
        replacedBy: null,
        deletedAt: null,
      });
      // 32 random bytes, base64url without padding.
      expect(Buffer.from(secretOf(key), 'base64url')).toHaveLength(32);
    });

    it('the stored digest is SHA-256 of the whole key, as the database itself computes it', async () => {
      // Pins the digest to the algorithm, not to this package's way of computing it (hashKey
      // takes Node's one-shot crypto.hash where there is one, a Hash object elsewhere).
      const { key, apiKey } = await freshKey();
      const { rows } = await store.db.query<{ same: boolean }>(
        "select key_hash = sha256(convert_to($1, 'UTF8')) as same from api_keys where id = $2",
        [key, apiKey.id],
      );
      expect(rows).toEqual([{ same: true }]);
      expect(hashKey(key)).toEqual(createHash('sha256').update(key, 'utf8').digest());
    });

    it('every issue yields a different key and prefix', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      const issued = await Promise.all(Array.from({ length: 5 }, () => issue(orgId, { userId })));
      expect(new Set(issued.map((entry) => entry.key)).size).toBe(5);
      expect(new Set(issued.map((entry) => entry.apiKey.prefix)).size).toBe(5);
    });

    it('the ApiKey from issue, get and list has exactly the documented fields: no key, no digest, no bytes', async () => {
      const { key, apiKey, orgId } = await freshKey();
      const [got, listed] = await store.withOrg(orgId, async (tx) => [await tx.apiKeys.get(apiKey.id), await tx.apiKeys.list()] as const);
      expect(listed.items).toHaveLength(1);
      for (const shown of [apiKey, got, listed.items[0]!]) {
        expect(Object.keys(shown).sort()).toEqual(API_KEY_FIELDS);
        for (const value of Object.values(shown)) expect(value instanceof Uint8Array).toBe(false);
        const text = JSON.stringify(shown);
        expect(text).not.toContain(key);
        expect(text).not.toContain(secretOf(key));
      }
      expect(got).toEqual(apiKey);
      expect(listed.items[0]).toEqual(apiKey);
    });

    it('a key can be issued only for a live, active user of the organization (NOT_FOUND field userId)', async () => {
      const orgId = await newOrg();
      const suspended = await newUser(orgId);
      const deleted = await newUser(orgId);
      await store.withOrg(orgId, async (tx) => {
        await tx.users.suspend(suspended);
        await tx.users.softDelete(deleted);
      });
      await expectStoreError(issue(orgId, { userId: suspended }), 'NOT_FOUND', 'userId');
      await expectStoreError(issue(orgId, { userId: deleted }), 'NOT_FOUND', 'userId');
      await expectStoreError(issue(orgId, { userId: '018f0000-0000-7000-8000-00000000ffff' }), 'NOT_FOUND', 'userId');
    });

    it('expiresAt must lie in the future and rateLimitPerHour within 1..1,000,000 (INVALID_INPUT)', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      await expectStoreError(issue(orgId, { userId, expiresAt: new Date(Date.now() - 1000) }), 'INVALID_INPUT', 'expiresAt');
      await expectStoreError(issue(orgId, { userId, rateLimitPerHour: 0 }), 'INVALID_INPUT', 'rateLimitPerHour');
      await expectStoreError(issue(orgId, { userId, rateLimitPerHour: 1_000_001 }), 'INVALID_INPUT', 'rateLimitPerHour');
      await expectStoreError(issue(orgId, { userId, rateLimitPerHour: 1.5 }), 'INVALID_INPUT', 'rateLimitPerHour');
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('verification: one reason code per failure', () => {
    it('OK returns the principal (org, user, role, all role permissions, key id) and the quota with resetsAt at the next hour', async () => {
      const { key, apiKey, orgId, userId } = await freshKey({ role: 'manager' });
      const before = Date.now();
      const result = await store.verifyApiKey(key);
      const after = Date.now();
      expectOk(result);
      expect(result.principal).toEqual({
        orgId,
        userId,
        role: 'manager',
        permissions: sorted(ROLE_PERMISSIONS.manager),
        apiKeyId: apiKey.id,
      });
      expect(result.rateLimit.limit).toBe(1000);
      expect(result.rateLimit.remaining).toBe(999);
      // The hour may turn between the two readings of the clock; either boundary is then right.
      expect([nextHour(before).getTime(), nextHour(after).getTime()]).toContain(result.rateLimit.resetsAt.getTime());
    });

    it('OK with an injected clock: resetsAt is the next whole hour after `now`, remaining counts down', async () => {
      const { key } = await freshKey({ key: { rateLimitPerHour: 10 } });
      const first = await verifyApiKeyAt(store.db, key, at('2030-03-04T10:15:30.250Z'));
      const second = await verifyApiKeyAt(store.db, key, at('2030-03-04T10:59:00.000Z'));
      expectOk(first);
      expectOk(second);
      expect(first.rateLimit).toEqual({ limit: 10, remaining: 9, resetsAt: at('2030-03-04T11:00:00.000Z') });
      expect(second.rateLimit).toEqual({ limit: 10, remaining: 8, resetsAt: at('2030-03-04T11:00:00.000Z') });
    });

    it('OK of a scoped key: permissions are the scopes intersected with the role', async () => {
      const { key, apiKey, orgId, userId } = await freshKey({ role: 'customer', key: { scopes: ['workflow:execute', 'task:read'] } });
      const result = await store.verifyApiKey(key);
      expectOk(result);
      expect(result.principal).toEqual({
        orgId,
        userId,
        role: 'customer',
        permissions: ['task:read', 'workflow:execute'],
        apiKeyId: apiKey.id,
      });
    });

    it('MALFORMED: non-strings and ill-formed strings are refused as MALFORMED, with nothing else in the answer', async () => {
      const { key } = await freshKey();
      const prefix = prefixOf(key);
      const secret = secretOf(key);
      const malformed: unknown[] = [
        undefined,
        null,
        0,
        12345,
        true,
        {},
        [],
        [key],
        { key },
        Buffer.from(key),
        new String(key),
        Symbol('es'),
        () => key,
        BigInt(1),
        '',
        'es_',
        'es__',
        key.slice(0, -1), // 42-character secret
        `${key}A`, // 44-character secret
        `${key}\n`,
        ` ${key}`,
        `${key} `,
        `\t${key}`,
        `${key}\u0000`,
        `es_${prefix.slice(1)}_${secret}`, // 11-character prefix
        `es_${prefix}a_${secret}`, // 13-character prefix
        `es_${prefix.toUpperCase().replace(/^[0-9]/, 'A')}_${secret}`, // uppercase in the prefix
        `es_${prefix.slice(0, 11)}-_${secret}`, // '-' in the prefix
        `ES_${prefix}_${secret}`,
        `ek_${prefix}_${secret}`,
        `es-${prefix}_${secret}`,
        `es_${prefix}-${secret}`,
        `${prefix}_${secret}`,
        `es_${prefix}_${secret.slice(0, 42)}=`, // padding
        `es_${prefix}_${secret.slice(0, 42)}+`, // plain base64 alphabet
        `es_${prefix}_${secret.slice(0, 42)}/`,
        `es_${prefix}_${secret.slice(0, 42)}é`,
        `es_${prefix}_${secret}${secret}`,
        `Bearer ${key}`,
      ];
      for (const candidate of malformed) {
        expect(await store.verifyApiKey(candidate), String(typeof candidate === 'symbol' ? 'symbol' : candidate)).toEqual({
          ok: false,
          reason: 'MALFORMED',
        });
      }
      // The well-formed original still verifies: the variations above were refused for their form.
      expectOk(await store.verifyApiKey(key));
    });

    it('MALFORMED is decided without the database: no statement is sent, and a store over a closed database still answers', async () => {
      const { key } = await freshKey();
      // 1. Counting the statements sent.
      const statements: string[] = [];
      const counting: Queryable = {
        query: (sql, params) => {
          statements.push(sql);
          return store.db.query(sql, params);
        },
        exec: (sql) => {
          statements.push(sql);
          return store.db.exec(sql);
        },
      };
      for (const candidate of [undefined, 42, 'es_short_x', `${key}!`]) {
        expect(await verifyApiKey(counting, candidate)).toEqual({ ok: false, reason: 'MALFORMED' });
      }
      expect(statements).toEqual([]);
      // A well-formed key costs exactly one statement (the documented single round trip).
      expectOk(await verifyApiKey(counting, key));
      expect(statements).toHaveLength(1);

      // 2. A store whose database is closed. On PostgreSQL a database of its own, really closed;
      // on PGlite (whose start-up and migrations take many seconds) the shared database seen
      // through a handle that refuses every statement once the store closes it.
      let closedStore: Store;
      let cleanup: () => Promise<void> = async () => {};
      if (backend.name !== 'pglite') {
        const other = await backend.createMigrated();
        cleanup = () => other.dispose();
        closedStore = await storeOver(other.db);
      } else {
        let closed = false;
        const guard = () => {
          if (closed) throw new Error('the database is closed');
        };
        const handle: Database = {
          kind: store.db.kind,
          location: store.db.location,
          query: async (sql, params) => {
            guard();
            return store.db.query(sql, params);
          },
          exec: async (sql) => {
            guard();
            return store.db.exec(sql);
          },
          withSession: async (work) => {
            guard();
            return store.db.withSession(work);
          },
          loginAs: () => undefined,
          snapshot: () => undefined,
          listen: () => undefined,
          close: async () => {
            closed = true;
          },
        };
        closedStore = await storeOver(handle);
      }
      try {
        await closedStore.close();
        expect(await closedStore.verifyApiKey(`${key}!`)).toEqual({ ok: false, reason: 'MALFORMED' });
        expect(await closedStore.verifyApiKey(null)).toEqual({ ok: false, reason: 'MALFORMED' });
        expect(await closedStore.verifyApiKey(key.slice(1))).toEqual({ ok: false, reason: 'MALFORMED' });
        // The database really is closed: a well-formed key needs it and fails.
        await expect(closedStore.verifyApiKey(key)).rejects.toThrow();
        await expect(closedStore.verifyApiKey(NEVER_ISSUED)).rejects.toThrow();
      } finally {
        await cleanup();
      }
    });

    it('NOT_FOUND: an unknown prefix, the right prefix with a wrong secret, and a soft-deleted key', async () => {
      const { key, apiKey, orgId } = await freshKey();
      const secret = secretOf(key);
      const wrongSecret = `es_${prefixOf(key)}_${secret.slice(0, 10)}${secret[10] === 'A' ? 'B' : 'A'}${secret.slice(11)}`;
      const other = await freshKey();

      expect(await store.verifyApiKey(NEVER_ISSUED)).toEqual({ ok: false, reason: 'NOT_FOUND' });
      expect(await store.verifyApiKey(wrongSecret)).toEqual({ ok: false, reason: 'NOT_FOUND' });
      // Another key's secret under this key's prefix, and this key's secret under another prefix.
      expect(await store.verifyApiKey(`es_${prefixOf(key)}_${secretOf(other.key)}`)).toEqual({ ok: false, reason: 'NOT_FOUND' });
      expect(await store.verifyApiKey(`es_${prefixOf(other.key)}_${secret}`)).toEqual({ ok: false, reason: 'NOT_FOUND' });
      expectOk(await store.verifyApiKey(key));

      const deleted = await store.withOrg(orgId, (tx) => tx.apiKeys.softDelete(apiKey.id));
      expect(deleted.deletedAt).toBeInstanceOf(Date);
      expect(await store.verifyApiKey(key)).toEqual({ ok: false, reason: 'NOT_FOUND' });
      // A soft-deleted key leaves listings, and cannot be deleted or revoked again.
      await store.withOrg(orgId, async (tx) => {
        expect((await tx.apiKeys.list()).items).toEqual([]);
        expect((await tx.apiKeys.list({ includeDeleted: true })).items.map((item) => item.id)).toEqual([apiKey.id]);
        await expectStoreError(tx.apiKeys.softDelete(apiKey.id), 'NOT_FOUND');
      });
    });

    it('EXPIRED: a key verified at or after its expiresAt', async () => {
      const expiresAt = new Date(Date.now() + 60_000);
      const { key } = await freshKey({ key: { expiresAt } });
      expectOk(await store.verifyApiKey(key));
      expectOk(await verifyApiKeyAt(store.db, key, new Date(expiresAt.getTime() - 1)));
      expectRefused(await verifyApiKeyAt(store.db, key, expiresAt), 'EXPIRED');
      expectRefused(await verifyApiKeyAt(store.db, key, new Date(expiresAt.getTime() + 1)), 'EXPIRED');
      expectRefused(await verifyApiKeyAt(store.db, key, at('2031-01-01T00:00:00Z')), 'EXPIRED');
    });

    it('EXPIRED in real time: a key that expires a moment after issue stops working', async () => {
      const { key } = await freshKey({ key: { expiresAt: new Date(Date.now() + 1500).toISOString() } });
      expectOk(await store.verifyApiKey(key));
      await sleep(1700);
      expectRefused(await store.verifyApiKey(key), 'EXPIRED');
    });

    it('REVOKED: a revoked key; revoking again is a no-op; a wrong secret on a revoked key is still NOT_FOUND', async () => {
      const { key, apiKey, orgId } = await freshKey();
      expectOk(await store.verifyApiKey(key));
      const revoked = await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(apiKey.id));
      expect(revoked.status).toBe('revoked');
      expectRefused(await store.verifyApiKey(key), 'REVOKED');
      const again = await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(apiKey.id));
      expect(again.status).toBe('revoked');
      expectRefused(await store.verifyApiKey(key), 'REVOKED');
      const secret = secretOf(key);
      const wrong = `es_${prefixOf(key)}_${secret.slice(0, -2)}${secret.at(-2) === 'Q' ? 'R' : 'Q'}${secret.at(-1)}`;
      expect(await store.verifyApiKey(wrong)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    });

    it('USER_INACTIVE: the user suspended, then soft-deleted; the key works again once the user is back', async () => {
      const { key, orgId, userId } = await freshKey();
      expectOk(await store.verifyApiKey(key));
      await store.withOrg(orgId, (tx) => tx.users.suspend(userId));
      expectRefused(await store.verifyApiKey(key), 'USER_INACTIVE');
      await store.withOrg(orgId, (tx) => tx.users.activate(userId));
      expectOk(await store.verifyApiKey(key));
      await store.withOrg(orgId, (tx) => tx.users.softDelete(userId));
      expectRefused(await store.verifyApiKey(key), 'USER_INACTIVE');
      await store.withOrg(orgId, (tx) => tx.users.restore(userId));
      expectOk(await store.verifyApiKey(key));
    });

    it('ORG_INACTIVE: the organization suspended, then soft-deleted; the key works again once it is back', async () => {
      const { key, orgId } = await freshKey();
      expectOk(await store.verifyApiKey(key));
      await store.organizations.suspend(orgId);
      expectRefused(await store.verifyApiKey(key), 'ORG_INACTIVE');
      await store.organizations.activate(orgId);
      expectOk(await store.verifyApiKey(key));
      await store.organizations.softDelete(orgId);
      expectRefused(await store.verifyApiKey(key), 'ORG_INACTIVE');
      await store.organizations.restore(orgId);
      expectOk(await store.verifyApiKey(key));
    });

    it('NOT_FOUND after the organization was purged (soft delete, then purge), rotated keys and usage counters included', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      const plain = await issue(orgId, { userId });
      const graced = await issue(orgId, { userId, rateLimitPerHour: 5 });
      const rotated = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(graced.apiKey.id, { gracePeriodSeconds: 3600 }));
      for (const key of [plain.key, graced.key, rotated.key]) expectOk(await store.verifyApiKey(key));
      const counters = await store.db.query<{ n: number }>('select count(*)::int as n from api_key_usage where org_id = $1', [orgId]);
      expect(counters.rows[0]!.n).toBe(3);

      await store.organizations.softDelete(orgId);
      for (const key of [plain.key, graced.key, rotated.key]) expectRefused(await store.verifyApiKey(key), 'ORG_INACTIVE');
      await store.organizations.purge(orgId);
      for (const key of [plain.key, graced.key, rotated.key])
        expect(await store.verifyApiKey(key)).toEqual({ ok: false, reason: 'NOT_FOUND' });

      const left = await store.db.query<{ keys: number; usage: number; users: number }>(
        `select (select count(*)::int from api_keys where org_id = $1) as keys,
                (select count(*)::int from api_key_usage where org_id = $1) as usage,
                (select count(*)::int from users where org_id = $1) as users`,
        [orgId],
      );
      expect(left.rows[0]).toEqual({ keys: 0, usage: 0, users: 0 });
    });

    it('RATE_LIMITED: once the hourly limit is used up, with remaining 0 and the window end', async () => {
      const { key } = await freshKey({ key: { rateLimitPerHour: 3 } });
      const now = at('2030-06-01T08:20:00Z');
      const remaining: number[] = [];
      for (let i = 0; i < 3; i++) {
        const result = await verifyApiKeyAt(store.db, key, now);
        expectOk(result);
        remaining.push(result.rateLimit.remaining);
      }
      expect(remaining).toEqual([2, 1, 0]);
      for (let i = 0; i < 3; i++) {
        expect(await verifyApiKeyAt(store.db, key, now)).toEqual({
          ok: false,
          reason: 'RATE_LIMITED',
          rateLimit: { limit: 3, remaining: 0, resetsAt: at('2030-06-01T09:00:00Z') },
        });
      }
      // Refused requests are not counted.
      const { rows } = await store.db.query<{ request_count: number }>(
        'select request_count from api_key_usage where api_key_id = (select id from api_keys where prefix = $1)',
        [prefixOf(key)],
      );
      expect(rows).toEqual([{ request_count: 3 }]);
    });

    it('failed verifications (wrong secret, revoked) count nothing against the key', async () => {
      const { key, apiKey, orgId } = await freshKey({ key: { rateLimitPerHour: 2 } });
      const now = at('2030-06-01T08:20:00Z');
      const wrong = `es_${prefixOf(key)}_${randomBytes(32).toString('base64url')}`;
      for (let i = 0; i < 5; i++) expectRefused(await verifyApiKeyAt(store.db, wrong, now), 'NOT_FOUND');
      const ok = await verifyApiKeyAt(store.db, key, now);
      expectOk(ok);
      expect(ok.rateLimit.remaining).toBe(1);
      await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(apiKey.id));
      for (let i = 0; i < 3; i++) expectRefused(await verifyApiKeyAt(store.db, key, now), 'REVOKED');
      const { rows } = await store.db.query<{ request_count: number }>('select request_count from api_key_usage where api_key_id = $1', [
        apiKey.id,
      ]);
      expect(rows).toEqual([{ request_count: 1 }]);
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('hourly window with an injected clock', () => {
    it('limit 2: two at 10:59:59.9 pass, the third is RATE_LIMITED, and at 11:00:00.0 the key passes again with remaining 1', async () => {
      const { key, apiKey } = await freshKey({ key: { rateLimitPerHour: 2 } });
      const late = at('2030-01-01T10:59:59.900Z');
      const first = await verifyApiKeyAt(store.db, key, late);
      const second = await verifyApiKeyAt(store.db, key, late);
      expectOk(first);
      expectOk(second);
      expect(first.rateLimit).toEqual({ limit: 2, remaining: 1, resetsAt: at('2030-01-01T11:00:00.000Z') });
      expect(second.rateLimit).toEqual({ limit: 2, remaining: 0, resetsAt: at('2030-01-01T11:00:00.000Z') });
      expect(await verifyApiKeyAt(store.db, key, late)).toEqual({
        ok: false,
        reason: 'RATE_LIMITED',
        rateLimit: { limit: 2, remaining: 0, resetsAt: at('2030-01-01T11:00:00.000Z') },
      });

      const next = await verifyApiKeyAt(store.db, key, at('2030-01-01T11:00:00.000Z'));
      expectOk(next);
      expect(next.rateLimit).toEqual({ limit: 2, remaining: 1, resetsAt: at('2030-01-01T12:00:00.000Z') });

      // The previous window's counter stays (a straggler of that hour must still find it);
      // windows before it are dropped by the first request of a new window.
      const counters = async () =>
        (
          await store.db.query<{ window_start: Date; request_count: number }>(
            'select window_start, request_count from api_key_usage where api_key_id = $1 order by window_start',
            [apiKey.id],
          )
        ).rows;
      expect(await counters()).toEqual([
        { window_start: at('2030-01-01T10:00:00.000Z'), request_count: 2 },
        { window_start: at('2030-01-01T11:00:00.000Z'), request_count: 1 },
      ]);
      expectOk(await verifyApiKeyAt(store.db, key, at('2030-01-01T12:00:00.000Z')));
      expect(await counters()).toEqual([
        { window_start: at('2030-01-01T11:00:00.000Z'), request_count: 1 },
        { window_start: at('2030-01-01T12:00:00.000Z'), request_count: 1 },
      ]);
    });

    it('a window is a whole clock hour: 11:00:00.0 to 11:59:59.999 share one counter', async () => {
      const { key } = await freshKey({ key: { rateLimitPerHour: 3 } });
      for (const time of ['2030-01-02T11:00:00.000Z', '2030-01-02T11:30:00.000Z', '2030-01-02T11:59:59.999Z']) {
        expectOk(await verifyApiKeyAt(store.db, key, at(time)));
      }
      expectRefused(await verifyApiKeyAt(store.db, key, at('2030-01-02T11:59:59.999Z')), 'RATE_LIMITED');
      const result = await verifyApiKeyAt(store.db, key, at('2030-01-02T12:00:00.000Z'));
      expectOk(result);
      expect(result.rateLimit.remaining).toBe(2);
    });

    it('still refuses a request stamped in an exhausted window after the next window began', async () => {
      // now() is the transaction start: a request stamped in the old hour can run after the
      // first request of the new one, and must find the old window's count, not start it over.
      const { key } = await freshKey({ key: { rateLimitPerHour: 2 } });
      const late = at('2030-01-03T10:59:59.900Z');
      expectOk(await verifyApiKeyAt(store.db, key, late));
      expectOk(await verifyApiKeyAt(store.db, key, late));
      expectRefused(await verifyApiKeyAt(store.db, key, late), 'RATE_LIMITED');
      expectOk(await verifyApiKeyAt(store.db, key, at('2030-01-03T11:00:00.000Z')));
      // A straggler of the 10:00 window, which already admitted its 2.
      expectRefused(await verifyApiKeyAt(store.db, key, at('2030-01-03T10:59:59.950Z')), 'RATE_LIMITED');
    });

    it('keeps hour windows in UTC whatever the session time zone (half-hour zone Asia/Kolkata)', async () => {
      const { key } = await freshKey({ key: { rateLimitPerHour: 5 } });
      const result = await store.db.withSession(async (session) => {
        await session.exec(`begin; set local time zone 'Asia/Kolkata'`);
        try {
          return await verifyApiKeyAt(session, key, at('2030-01-04T10:59:59.900Z'));
        } finally {
          await session.exec('rollback');
        }
      });
      expectOk(result);
      expect(result.rateLimit.resetsAt).toEqual(at('2030-01-04T11:00:00.000Z'));
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('scopes', () => {
    it('a key can be narrowed to some of the role permissions; duplicates collapse and the scopes are stored sorted', async () => {
      const { key, apiKey } = await freshKey({ role: 'manager', key: { scopes: ['workflow:read', 'workflow:execute', 'workflow:read'] } });
      expect(apiKey.scopes).toEqual(['workflow:execute', 'workflow:read']);
      const result = await store.verifyApiKey(key);
      expectOk(result);
      expect(result.principal.permissions).toEqual(['workflow:execute', 'workflow:read']);
    });

    it('an admin key narrowed to one permission carries only that one', async () => {
      const { key } = await freshKey({ role: 'admin', key: { scopes: ['apikey:read'] } });
      const result = await store.verifyApiKey(key);
      expectOk(result);
      expect(result.principal.permissions).toEqual(['apikey:read']);
    });

    it('widening beyond the role is refused: INVALID_INPUT field scopes, reason wider_than_role, and no key is created', async () => {
      const orgId = await newOrg();
      const customer = await newUser(orgId, 'customer');
      const manager = await newUser(orgId, 'manager');
      const error = await expectStoreError(
        issue(orgId, { userId: customer, scopes: ['workflow:read', 'workflow:write'] }),
        'INVALID_INPUT',
        'scopes',
      );
      expect(error.details.reason).toBe('wider_than_role');
      expect(error.message).toContain('workflow:write');
      await expectStoreError(issue(orgId, { userId: manager, scopes: ['apikey:manage'] }), 'INVALID_INPUT', 'scopes');
      await expectStoreError(issue(orgId, { userId: manager, scopes: ['org:manage', 'workflow:read'] }), 'INVALID_INPUT', 'scopes');
      const listed = await store.withOrg(orgId, (tx) => tx.apiKeys.list());
      expect(listed.items).toEqual([]);
    });

    it('an unknown permission, an empty scope list and a non-array are refused (INVALID_INPUT on scopes)', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId, 'admin');
      await expectStoreError(issue(orgId, { userId, scopes: ['workflow:fly'] }), 'INVALID_INPUT', /^scopes/);
      await expectStoreError(issue(orgId, { userId, scopes: ['workflow:read', 'WORKFLOW:READ'] }), 'INVALID_INPUT', /^scopes/);
      await expectStoreError(issue(orgId, { userId, scopes: ['*'] }), 'INVALID_INPUT', /^scopes/);
      await expectStoreError(issue(orgId, { userId, scopes: [] }), 'INVALID_INPUT', /^scopes/);
      await expectStoreError(issue(orgId, { userId, scopes: 'workflow:read' as unknown as string[] }), 'INVALID_INPUT', /^scopes/);
    });

    it('effective permissions shrink when the user role is lowered (manager -> customer): role ∩ scopes', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId, 'manager');
      const scoped = await issue(orgId, {
        userId,
        scopes: ['workflow:read', 'workflow:write', 'task:write', 'schedule:read', 'user:manage'],
      });
      const unscoped = await issue(orgId, { userId });

      const before = await store.verifyApiKey(scoped.key);
      expectOk(before);
      expect(before.principal.permissions).toEqual(['schedule:read', 'task:write', 'user:manage', 'workflow:read', 'workflow:write']);

      await store.withOrg(orgId, (tx) => tx.users.changeRole(userId, 'customer'));
      const after = await store.verifyApiKey(scoped.key);
      expectOk(after);
      expect(after.principal.role).toBe('customer');
      expect(after.principal.permissions).toEqual(['schedule:read', 'workflow:read']);
      const all = await store.verifyApiKey(unscoped.key);
      expectOk(all);
      expect(all.principal.permissions).toEqual(sorted(ROLE_PERMISSIONS.customer));

      // Raising the role again never takes a scoped key beyond its scopes.
      await store.withOrg(orgId, (tx) => tx.users.changeRole(userId, 'admin'));
      const raised = await store.verifyApiKey(scoped.key);
      expectOk(raised);
      expect(raised.principal.permissions).toEqual(['schedule:read', 'task:write', 'user:manage', 'workflow:read', 'workflow:write']);
      const raisedAll = await store.verifyApiKey(unscoped.key);
      expectOk(raisedAll);
      expect(raisedAll.principal.permissions).toEqual(sorted(PERMISSIONS));
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('names', () => {
    it('a name is unique per user among active keys, ignoring case: a second one is CONFLICT', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      await issue(orgId, { userId, name: 'Deploy' });
      await expectStoreError(issue(orgId, { userId, name: 'deploy' }), 'CONFLICT');
      await expectStoreError(issue(orgId, { userId, name: 'DEPLOY' }), 'CONFLICT');
      await expectStoreError(issue(orgId, { userId, name: '  Deploy  ' }), 'CONFLICT');
      const listed = await store.withOrg(orgId, (tx) => tx.apiKeys.list({ userId }));
      expect(listed.items.map((item) => item.name)).toEqual(['Deploy']);
    });

    it('another user of the organization, or of another organization, may use the same name', async () => {
      const orgId = await newOrg();
      const first = await newUser(orgId);
      const second = await newUser(orgId);
      await issue(orgId, { userId: first, name: 'ci' });
      await expect(issue(orgId, { userId: second, name: 'CI' })).resolves.toMatchObject({ apiKey: { name: 'CI' } });
      const otherOrg = await newOrg();
      const stranger = await newUser(otherOrg);
      await expect(issue(otherOrg, { userId: stranger, name: 'ci' })).resolves.toMatchObject({ apiKey: { name: 'ci' } });
    });

    it('the name is free again once its key is revoked or soft-deleted (the unique index covers only active, live, unreplaced keys)', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      const first = await issue(orgId, { userId, name: 'nightly' });
      await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(first.apiKey.id));
      const second = await issue(orgId, { userId, name: 'Nightly' });
      await expectStoreError(issue(orgId, { userId, name: 'nightly' }), 'CONFLICT');
      await store.withOrg(orgId, (tx) => tx.apiKeys.softDelete(second.apiKey.id));
      const third = await issue(orgId, { userId, name: 'NIGHTLY' });
      expectOk(await store.verifyApiKey(third.key));
      expectRefused(await store.verifyApiKey(first.key), 'REVOKED');
      expect(await store.verifyApiKey(second.key)).toEqual({ ok: false, reason: 'NOT_FOUND' });
    });

    it('an expired key gives up its name: the new key takes it and is recorded as its successor; the old one still answers EXPIRED', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId, 'customer');
      const old = await issue(orgId, { userId, name: 'report' });
      // Expired an hour ago (as the owner: expiry cannot be set in the past through the API).
      await store.db.query(
        `update api_keys set created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour' where id = $1`,
        [old.apiKey.id],
      );
      expectRefused(await store.verifyApiKey(old.key), 'EXPIRED');
      // A failed issue under the name leaves the expired key as it was.
      await expectStoreError(issue(orgId, { userId, name: 'report', scopes: ['user:manage'] }), 'INVALID_INPUT', 'scopes');
      expect((await store.withOrg(orgId, (tx) => tx.apiKeys.get(old.apiKey.id))).replacedBy).toBeNull();

      const successor = await issue(orgId, { userId, name: 'REPORT' });
      expect(successor.apiKey.name).toBe('REPORT');
      const retired = await store.withOrg(orgId, (tx) => tx.apiKeys.get(old.apiKey.id));
      expect(retired).toMatchObject({ status: 'active', replacedBy: successor.apiKey.id, name: 'report' });
      expectRefused(await store.verifyApiKey(old.key), 'EXPIRED');
      expectOk(await store.verifyApiKey(successor.key));
      // The name now belongs to the successor, which has not expired.
      await expectStoreError(issue(orgId, { userId, name: 'report' }), 'CONFLICT');
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('rotation', () => {
    it('without grace: the new key works at once, the old one is REVOKED at once, and points at its successor', async () => {
      const { key, apiKey, orgId, userId } = await freshKey({
        role: 'manager',
        key: { name: 'deploy', rateLimitPerHour: 77, scopes: ['workflow:read'] },
      });
      expectOk(await store.verifyApiKey(key));
      const rotated = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id));
      expect(rotated.key).toMatch(KEY_FORMAT);
      expect(rotated.key).not.toBe(key);
      expect(rotated.apiKey.id).not.toBe(apiKey.id);
      expect(rotated.apiKey).toMatchObject({
        userId,
        name: 'deploy',
        rateLimitPerHour: 77,
        scopes: ['workflow:read'],
        expiresAt: null,
        status: 'active',
        replacedBy: null,
      });
      expect(rotated.replaced).toMatchObject({ id: apiKey.id, status: 'revoked', replacedBy: rotated.apiKey.id });

      expectRefused(await store.verifyApiKey(key), 'REVOKED');
      const fresh = await store.verifyApiKey(rotated.key);
      expectOk(fresh);
      expect(fresh.principal).toMatchObject({ apiKeyId: rotated.apiKey.id, userId, permissions: ['workflow:read'] });
      expect(fresh.rateLimit.limit).toBe(77);

      const old = await store.withOrg(orgId, (tx) => tx.apiKeys.get(apiKey.id));
      expect(old).toMatchObject({ status: 'revoked', replacedBy: rotated.apiKey.id });
      expect(Object.keys(rotated.apiKey).sort()).toEqual(API_KEY_FIELDS);
      expect(Object.keys(rotated.replaced).sort()).toEqual(API_KEY_FIELDS);
    });

    it('with a grace period the old key keeps working until the grace ends, then is EXPIRED; the new key keeps working', async () => {
      const { key, apiKey, orgId } = await freshKey({ key: { name: 'graceful' } });
      const before = Date.now();
      const rotated = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id, { gracePeriodSeconds: 3600 }));
      const after = Date.now();
      expect(rotated.replaced.status).toBe('active');
      expect(rotated.replaced.replacedBy).toBe(rotated.apiKey.id);
      const graceEnd = rotated.replaced.expiresAt!;
      expect(graceEnd).toBeInstanceOf(Date);
      // now() + 3600 s, now() being the transaction start (between the two readings, with slack for clock granularity).
      expect(graceEnd.getTime()).toBeGreaterThanOrEqual(before + 3_600_000 - 1000);
      expect(graceEnd.getTime()).toBeLessThanOrEqual(after + 3_600_000 + 1000);
      expect(rotated.apiKey.expiresAt).toBeNull();

      expectOk(await store.verifyApiKey(key));
      expectOk(await store.verifyApiKey(rotated.key));
      expectOk(await verifyApiKeyAt(store.db, key, new Date(graceEnd.getTime() - 1)));
      // expiresAt comes back in milliseconds, the database keeps microseconds: 1 ms later is past it.
      expectRefused(await verifyApiKeyAt(store.db, key, new Date(graceEnd.getTime() + 1)), 'EXPIRED');
      expectRefused(await verifyApiKeyAt(store.db, key, new Date(graceEnd.getTime() + 60_000)), 'EXPIRED');
      expectOk(await verifyApiKeyAt(store.db, rotated.key, new Date(graceEnd.getTime() + 60_000)));

      // The successor holds the name; the old key, though active, does not.
      await expectStoreError(issue(orgId, { userId: rotated.apiKey.userId, name: 'GRACEFUL' }), 'CONFLICT');
    });

    it('a grace period never extends a key beyond its own expiry; the successor inherits that expiry', async () => {
      const expiresAt = new Date(Date.now() + 600_000);
      const { apiKey, orgId } = await freshKey({ key: { expiresAt } });
      const rotated = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id, { gracePeriodSeconds: 7200 }));
      expect(rotated.replaced.expiresAt).toEqual(expiresAt);
      expect(rotated.apiKey.expiresAt).toEqual(expiresAt);
    });

    it('rotating a revoked, a soft-deleted, an already rotated (in grace) or an unknown key is NOT_FOUND', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      const revoked = await issue(orgId, { userId });
      const deleted = await issue(orgId, { userId });
      const graced = await issue(orgId, { userId });
      await store.withOrg(orgId, async (tx) => {
        await tx.apiKeys.revoke(revoked.apiKey.id);
        await tx.apiKeys.softDelete(deleted.apiKey.id);
        await tx.apiKeys.rotate(graced.apiKey.id, { gracePeriodSeconds: 60 });
      });
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.apiKeys.rotate(revoked.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.apiKeys.rotate(deleted.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.apiKeys.rotate(graced.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.apiKeys.rotate('018f0000-0000-7000-8000-00000000ffff')),
        'NOT_FOUND',
      );
      const rotatedRevoked = await store.withOrg(orgId, (tx) => tx.apiKeys.get(revoked.apiKey.id));
      expect(rotatedRevoked.replacedBy).toBeNull();
    });

    it('concurrent rotations of one key: exactly one succeeds, the others are NOT_FOUND, and there is one successor', async () => {
      const { key, apiKey, orgId } = await freshKey({ key: { name: 'raced' } });
      const outcomes = await Promise.allSettled(
        Array.from({ length: 5 }, () => store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id))),
      );
      const succeeded = outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
      const failures = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [(outcome.reason as StoreError).code] : []));
      expect(succeeded).toHaveLength(1);
      expect(failures).toEqual(['NOT_FOUND', 'NOT_FOUND', 'NOT_FOUND', 'NOT_FOUND']);
      const listed = await store.withOrg(orgId, (tx) => tx.apiKeys.list());
      expect(listed.items).toHaveLength(2);
      expect(listed.items.find((item) => item.id === apiKey.id)).toMatchObject({ status: 'revoked', replacedBy: succeeded[0]!.apiKey.id });
      expectRefused(await store.verifyApiKey(key), 'REVOKED');
      expectOk(await store.verifyApiKey(succeeded[0]!.key));
    });

    it('concurrent issues of one name for one user: exactly one succeeds, the others are CONFLICT', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      const outcomes = await Promise.allSettled(
        Array.from({ length: 5 }, (_, i) => issue(orgId, { userId, name: i % 2 === 0 ? 'Same' : 'same' })),
      );
      expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
      const failures = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [(outcome.reason as StoreError).code] : []));
      expect(failures).toEqual(['CONFLICT', 'CONFLICT', 'CONFLICT', 'CONFLICT']);
    });

    it('gracePeriodSeconds must be a whole number of seconds from 0 to 30 days', async () => {
      const { apiKey, orgId } = await freshKey();
      for (const gracePeriodSeconds of [-1, 1.5, 30 * 24 * 3600 + 1]) {
        await expectStoreError(
          store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id, { gracePeriodSeconds })),
          'INVALID_INPUT',
          'gracePeriodSeconds',
        );
      }
      const unchanged = await store.withOrg(orgId, (tx) => tx.apiKeys.get(apiKey.id));
      expect(unchanged).toMatchObject({ status: 'active', replacedBy: null });
    });

    it("refuses to rotate a scoped key whose scopes its user's lowered role no longer covers, and leaves it as it was", async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId, 'manager');
      const { apiKey, key } = await issue(orgId, { userId, scopes: ['user:manage'] });
      await store.withOrg(orgId, (tx) => tx.users.changeRole(userId, 'customer'));
      const error = await expectStoreError(() => store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id)), 'INVALID_INPUT', 'scopes');
      expect(error.details.reason).toBe('wider_than_role');
      expect(await store.withOrg(orgId, (tx) => tx.apiKeys.get(apiKey.id))).toMatchObject({ status: 'active', replacedBy: null });
      expect((await store.withOrg(orgId, (tx) => tx.apiKeys.list({ userId }))).items.map((item) => item.id)).toEqual([apiKey.id]);
      expect((await store.verifyApiKey(key)).ok).toBe(true);
    });

    it('refuses to rotate an expired key, whose successor would outlive it', async () => {
      const { key, apiKey, orgId } = await freshKey({ key: { expiresAt: new Date(Date.now() + 1000) } });
      await sleep(1300);
      expectRefused(await store.verifyApiKey(key), 'EXPIRED');
      await expectStoreError(
        store.withOrg(orgId, (tx) => tx.apiKeys.rotate(apiKey.id)),
        'NOT_FOUND',
      );
      expect(await store.withOrg(orgId, (tx) => tx.apiKeys.get(apiKey.id))).toMatchObject({ status: 'active', replacedBy: null });
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('keys of a suspended organization', () => {
    /** A suspended organization with a user and two live keys. */
    async function suspendedWithKeys() {
      const orgId = await newOrg();
      const userId = await newUser(orgId);
      const first = await issue(orgId, { userId });
      const second = await issue(orgId, { userId });
      await store.organizations.suspend(orgId);
      return { orgId, userId, first, second };
    }

    it('can be revoked and soft-deleted, so a leaked key stays off when the organization is activated again', async () => {
      const { orgId, first, second } = await suspendedWithKeys();
      const revoked = await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(first.apiKey.id));
      expect(revoked).toMatchObject({ id: first.apiKey.id, status: 'revoked', name: first.apiKey.name, expiresAt: first.apiKey.expiresAt });
      expect(revoked.updatedAt.getTime()).toBeGreaterThanOrEqual(first.apiKey.updatedAt.getTime());
      // Revoking again changes nothing and is allowed too.
      expect((await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(first.apiKey.id))).status).toBe('revoked');
      const deleted = await store.withOrg(orgId, (tx) => tx.apiKeys.softDelete(second.apiKey.id));
      expect(deleted.deletedAt).toBeInstanceOf(Date);
      expectRefused(await store.verifyApiKey(first.key), 'REVOKED');
      await store.organizations.activate(orgId);
      expectRefused(await store.verifyApiKey(first.key), 'REVOKED');
      expectRefused(await store.verifyApiKey(second.key), 'NOT_FOUND');
    });

    it('refuses every other change to its keys (ORG_SUSPENDED): issue, rotate, raw updates that do more than revoke', async () => {
      const { orgId, userId, first } = await suspendedWithKeys();
      const before = await ownerRow(first.apiKey.id);
      await expectStoreError(() => store.withOrg(orgId, (tx) => tx.apiKeys.issue({ userId, name: 'new' })), 'ORG_SUSPENDED');
      await expectStoreError(() => store.withOrg(orgId, (tx) => tx.apiKeys.rotate(first.apiKey.id)), 'ORG_SUSPENDED');
      // Custom updates that revoke and change something else, or change without revoking.
      type Change = (tx: TenantScope, id: string) => Promise<unknown>;
      const updateKey = (id: string, change: Change) => store.withOrg(orgId, (tx) => change(tx, id));
      const changes: Change[] = [
        (tx, id) => tx.kysely.updateTable('api_keys').set({ status: 'revoked', name: 'renamed' }).where('id', '=', id).execute(),
        (tx, id) => tx.kysely.updateTable('api_keys').set({ status: 'revoked', rate_limit_per_hour: 1 }).where('id', '=', id).execute(),
        (tx, id) =>
          tx.kysely
            .updateTable('api_keys')
            .set({ expires_at: new Date(Date.now() + 86_400_000) })
            .where('id', '=', id)
            .execute(),
        (tx, id) =>
          tx.kysely
            .updateTable('api_keys')
            .set((eb) => ({ name: eb.ref('name') }))
            .where('id', '=', id)
            .execute(),
      ];
      for (const change of changes) {
        await expectStoreError(() => updateKey(first.apiKey.id, change), 'ORG_SUSPENDED');
      }
      // Un-revoking a revoked key is not a revocation either.
      await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(first.apiKey.id));
      await expectStoreError(
        () =>
          updateKey(first.apiKey.id, (tx, id) =>
            tx.kysely.updateTable('api_keys').set({ status: 'active' }).where('id', '=', id).execute(),
          ),
        'ORG_SUSPENDED',
      );
      // Restoring a soft-deleted key (deleted_at back to null) is refused too.
      const other = await store.withOrg(orgId, async (tx) => (await tx.apiKeys.list()).items.find((key) => key.id !== first.apiKey.id)!);
      await store.withOrg(orgId, (tx) => tx.apiKeys.softDelete(other.id));
      await expectStoreError(
        () => updateKey(other.id, (tx, id) => tx.kysely.updateTable('api_keys').set({ deleted_at: null }).where('id', '=', id).execute()),
        'ORG_SUSPENDED',
      );
      const after = await ownerRow(first.apiKey.id);
      expect({ ...after, status: before.status, updated_at: before.updated_at }).toEqual(before);
      expect(after.status).toBe('revoked');
    });

    it('a soft-deleted organization still refuses revocation (ORG_INACTIVE)', async () => {
      const { orgId, first } = await suspendedWithKeys();
      await store.organizations.activate(orgId);
      await store.organizations.softDelete(orgId);
      await expectStoreError(() => store.withOrg(orgId, (tx) => tx.apiKeys.revoke(first.apiKey.id)), 'ORG_INACTIVE');
      await store.organizations.restore(orgId);
      expectOk(await store.verifyApiKey(first.key));
    });
  });

  describe('last_used_at', () => {
    it('verify sets last_used_at (real clock)', async () => {
      const { key, apiKey } = await freshKey();
      expect((await ownerRow(apiKey.id)).last_used_at).toBeNull();
      const before = Date.now();
      expectOk(await store.verifyApiKey(key));
      const after = Date.now();
      const { last_used_at: lastUsed } = await ownerRow(apiKey.id);
      expect(lastUsed).toBeInstanceOf(Date);
      expect(lastUsed!.getTime()).toBeGreaterThanOrEqual(before - 1000);
      expect(lastUsed!.getTime()).toBeLessThanOrEqual(after + 1000);
    });

    it('last_used_at is not rewritten within a minute, and is after a minute', async () => {
      const { key, apiKey, orgId } = await freshKey();
      const t0 = at('2030-02-01T12:00:00.000Z');
      expectOk(await verifyApiKeyAt(store.db, key, t0));
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t0);

      expectOk(await verifyApiKeyAt(store.db, key, at('2030-02-01T12:00:00.500Z')));
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t0);
      expectOk(await verifyApiKeyAt(store.db, key, at('2030-02-01T12:00:59.999Z')));
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t0);
      expectOk(await verifyApiKeyAt(store.db, key, at('2030-02-01T12:01:00.000Z')));
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t0);

      const t1 = at('2030-02-01T12:01:00.001Z');
      expectOk(await verifyApiKeyAt(store.db, key, t1));
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t1);
      // And the API shows it.
      const shown = await store.withOrg(orgId, (tx) => tx.apiKeys.get(apiKey.id));
      expect(shown.lastUsedAt).toEqual(t1);
    });

    it('using a key changes last_used_at but not updated_at; revoking it changes updated_at', async () => {
      const { key, apiKey, orgId } = await freshKey();
      const issued = await ownerRow(apiKey.id);
      const t0 = at('2030-02-03T12:00:00.000Z');
      expectOk(await verifyApiKeyAt(store.db, key, t0));
      const used = await ownerRow(apiKey.id);
      expect(used.last_used_at).toEqual(t0);
      expect(used.updated_at).toEqual(issued.updated_at);
      await sleep(5);
      await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(apiKey.id));
      const revoked = await ownerRow(apiKey.id);
      expect(revoked.updated_at.getTime()).toBeGreaterThan(issued.updated_at.getTime());
      expect(revoked.last_used_at).toEqual(t0);
    });

    it('a refused verification does not touch last_used_at', async () => {
      const { key, apiKey, orgId } = await freshKey({ key: { rateLimitPerHour: 1 } });
      const t0 = at('2030-02-02T12:00:00.000Z');
      expectOk(await verifyApiKeyAt(store.db, key, t0));
      expectRefused(await verifyApiKeyAt(store.db, key, at('2030-02-02T12:30:00.000Z')), 'RATE_LIMITED');
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t0);
      await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(apiKey.id));
      expectRefused(await verifyApiKeyAt(store.db, key, at('2030-02-02T13:30:00.000Z')), 'REVOKED');
      expect((await ownerRow(apiKey.id)).last_used_at).toEqual(t0);
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('no plain key is ever stored or logged', () => {
    const SPIED_CONSOLE = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;

    /** Runs `work` while recording everything written to the console, stdout and stderr. */
    async function capturingOutput<T>(work: () => Promise<T>): Promise<{ result: T; output: string[] }> {
      const output: string[] = [];
      const record = (...args: unknown[]) => {
        for (const arg of args)
          output.push(arg instanceof Uint8Array ? Buffer.from(arg).toString('utf8') : typeof arg === 'string' ? arg : safeInspect(arg));
      };
      const spies = [
        ...SPIED_CONSOLE.map((method) => vi.spyOn(console, method).mockImplementation(record)),
        vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: unknown) => {
          record(chunk);
          return true;
        }) as typeof process.stdout.write),
        vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: unknown) => {
          record(chunk);
          return true;
        }) as typeof process.stderr.write),
      ];
      try {
        return { result: await work(), output };
      } finally {
        for (const spy of spies) spy.mockRestore();
      }
    }

    function safeInspect(value: unknown): string {
      try {
        return JSON.stringify(value) ?? String(value);
      } catch {
        return String(value);
      }
    }

    /** Every form in which a key could be stored: the key, its secret, and both as bytes (hex). */
    function needles(key: string): string[] {
      const secret = secretOf(key);
      return [
        key,
        secret,
        Buffer.from(secret, 'base64url').toString('base64'),
        Buffer.from(key, 'utf8').toString('hex'),
        Buffer.from(secret, 'utf8').toString('hex'),
        Buffer.from(secret, 'base64url').toString('hex'),
      ];
    }

    it('after issuing, rotating and verifying, no column of any table holds a plain key or secret in any encoding', async () => {
      const orgId = await newOrg();
      const users = [await newUser(orgId, 'admin'), await newUser(orgId, 'manager'), await newUser(orgId, 'customer')];
      const issued: IssuedKey[] = [];
      for (const [index, userId] of users.entries()) {
        issued.push(await issue(orgId, { userId, name: `stored ${index}` }));
        issued.push(
          await issue(orgId, { userId, name: `scoped ${index}`, scopes: ['workflow:read'], expiresAt: new Date(Date.now() + 86_400_000) }),
        );
      }
      const rotated = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(issued[0]!.apiKey.id, { gracePeriodSeconds: 600 }));
      const rotatedAgain = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(issued[1]!.apiKey.id));
      const keys = [...issued.map((entry) => entry.key), rotated.key, rotatedAgain.key];
      for (const key of keys.slice(2)) expectOk(await store.verifyApiKey(key));
      expectOk(await store.verifyApiKey(issued[0]!.key));

      const { rows: columns } = await store.db.query<{ table_name: string; column_name: string; data_type: string }>(
        `select c.table_name, c.column_name, c.data_type
           from information_schema.columns c
           join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
          where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
            and c.data_type in ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'ARRAY')
          order by 1, 2`,
      );
      const scanned = new Set(columns.map((column) => `${column.table_name}.${column.column_name}`));
      // The scan covers the tables keys touch, including the digest itself.
      for (const expected of [
        'api_keys.key_hash',
        'api_keys.prefix',
        'api_keys.name',
        'api_keys.scopes',
        'users.email',
        'organizations.name',
      ]) {
        expect(scanned).toContain(expected);
      }

      const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;
      const found: string[] = [];
      let valuesRead = 0;
      const haystacks: string[] = [];
      for (const column of columns) {
        const expression = quote(column.column_name);
        const select =
          column.data_type === 'bytea'
            ? `select ${expression}::text as a, encode(${expression}, 'escape') as b, encode(${expression}, 'hex') as c, encode(${expression}, 'base64') as d from ${quote(column.table_name)} where ${expression} is not null`
            : `select ${expression}::text as a from ${quote(column.table_name)} where ${expression} is not null`;
        const { rows } = await store.db.query<Record<string, string>>(select);
        for (const row of rows) {
          valuesRead += 1;
          const text = Object.values(row).join('\n');
          haystacks.push(text);
          for (const key of keys) {
            for (const needle of needles(key)) {
              if (text.includes(needle) || text.toLowerCase().includes(needle.toLowerCase()))
                found.push(`${column.table_name}.${column.column_name}`);
            }
          }
        }
      }
      expect(valuesRead).toBeGreaterThan(0);
      expect(found).toEqual([]);
      // Positive control: the scan does see what is stored, the prefixes and the digests.
      const all = haystacks.join('\n');
      for (const key of keys) {
        expect(all).toContain(prefixOf(key));
        expect(all).toContain(createHashHex(key));
      }
    });

    it('issue, verify, rotate, revoke and a failing issue write nothing containing a key to the console, stdout or stderr', async () => {
      const orgId = await newOrg();
      const userId = await newUser(orgId, 'manager');
      const { result, output } = await capturingOutput(async () => {
        const first = await issue(orgId, { userId, name: 'logged' });
        const second = await issue(orgId, { userId, scopes: ['workflow:read'] });
        const verified = [
          await store.verifyApiKey(first.key),
          await verifyApiKeyAt(store.db, second.key, at('2030-01-01T00:00:00Z')),
          await store.verifyApiKey(`${first.key}x`),
          await store.verifyApiKey(`es_${prefixOf(first.key)}_${secretOf(second.key)}`),
        ];
        const rotated = await store.withOrg(orgId, (tx) => tx.apiKeys.rotate(first.apiKey.id, { gracePeriodSeconds: 10 }));
        verified.push(await store.verifyApiKey(rotated.key), await store.verifyApiKey(first.key));
        await store.withOrg(orgId, (tx) => tx.apiKeys.revoke(second.apiKey.id));
        verified.push(await store.verifyApiKey(second.key));
        const conflict = await issue(orgId, { userId, name: 'LOGGED' }).catch((error: unknown) => error);
        return { keys: [first.key, second.key, rotated.key], verified, conflict };
      });
      expect(result.verified.map((entry) => (entry.ok ? 'OK' : entry.reason))).toEqual([
        'OK',
        'OK',
        'MALFORMED',
        'NOT_FOUND',
        'OK',
        'OK',
        'REVOKED',
      ]);
      expect(result.conflict).toBeInstanceOf(StoreError);
      const everything = output.join('\n');
      for (const key of result.keys) {
        for (const needle of needles(key)) expect(everything).not.toContain(needle);
      }
      // Nor do the results (errors, refusals) carry a key.
      const results = JSON.stringify({ verified: result.verified, conflict: result.conflict });
      for (const key of result.keys) expect(results).not.toContain(secretOf(key));
    });

    it('the output capture sees what is written (control for the test above)', async () => {
      const { output } = await capturingOutput(async () => {
        console.log('control es_aaaaaaaaaaaa');
        process.stderr.write('stderr-control\n');
      });
      expect(output.join('\n')).toContain('es_aaaaaaaaaaaa');
      expect(output.join('\n')).toContain('stderr-control');
    });
  });

  // -------------------------------------------------------------------------------------------

  describe('isolation between organizations', () => {
    it('org B cannot list, get, revoke, soft-delete or rotate A keys, nor issue a key for A user; A keys keep working', async () => {
      const a = await freshKey();
      const orgB = await newOrg();
      const userB = await newUser(orgB);
      const b = await issue(orgB, { userId: userB, name: 'b key' });
      expectOk(await store.verifyApiKey(a.key));
      expectOk(await store.verifyApiKey(b.key));

      await store.withOrg(orgB, async (tx) => {
        const listed = await tx.apiKeys.list({ includeDeleted: true });
        expect(listed.items.map((item) => item.id)).toEqual([b.apiKey.id]);
        expect((await tx.apiKeys.list({ userId: a.userId })).items).toEqual([]);
      });
      await expectStoreError(
        store.withOrg(orgB, (tx) => tx.apiKeys.get(a.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgB, (tx) => tx.apiKeys.revoke(a.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgB, (tx) => tx.apiKeys.softDelete(a.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgB, (tx) => tx.apiKeys.rotate(a.apiKey.id)),
        'NOT_FOUND',
      );
      await expectStoreError(
        store.withOrg(orgB, (tx) => tx.apiKeys.issue({ userId: a.userId, name: 'stolen' })),
        'NOT_FOUND',
        'userId',
      );

      // Custom queries in B's scope see neither A's keys nor A's usage counters.
      await store.withOrg(orgB, async (tx) => {
        const keys = await tx.kysely.selectFrom('api_keys').select('id').execute();
        expect(keys.map((row) => row.id)).toEqual([b.apiKey.id]);
        const usage = await tx.kysely.selectFrom('api_key_usage').select(['org_id', 'api_key_id']).execute();
        expect(usage).toEqual([{ org_id: orgB, api_key_id: b.apiKey.id }]);
      });

      // A sees its key unchanged, its usage, and no key of B.
      await store.withOrg(a.orgId, async (tx) => {
        const mine = await tx.apiKeys.get(a.apiKey.id);
        expect(mine).toMatchObject({ status: 'active', deletedAt: null, replacedBy: null });
        expect((await tx.apiKeys.list()).items.map((item) => item.id)).toEqual([a.apiKey.id]);
        await expectStoreError(tx.apiKeys.get(b.apiKey.id), 'NOT_FOUND');
        const usage = await tx.kysely.selectFrom('api_key_usage').select('api_key_id').execute();
        expect(usage.map((row) => row.api_key_id)).toEqual([a.apiKey.id]);
      });
      expectOk(await store.verifyApiKey(a.key));
      const names = await store.db.query<{ n: number }>(`select count(*)::int as n from api_keys where name = 'stolen'`);
      expect(names.rows[0]!.n).toBe(0);
    });
  });
});

function createHashHex(key: string): string {
  // The digest the store keeps: SHA-256 of the whole key.
  return createHash('sha256').update(key, 'utf8').digest('hex');
}
