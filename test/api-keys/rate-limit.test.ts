/**
 * Hourly rate limits are exact under concurrency (PostgreSQL only: PGlite is one connection and
 * runs everything in turn). A store with a pool of 20 connections on a database of its own; keys
 * limited to 50 requests an hour get 200 concurrent verifications each, and exactly 50 of them
 * pass, their remaining values being 49 down to 0, each exactly once.
 *
 * The verifications carry a fixed `now` (all in one hour window), so that a real hour turning
 * during the test cannot split the count over two windows.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type IssuedKey, type Store, type Verification } from 'engine-store';
import { installVerificationClock, verifyApiKeyAt } from '../support/verification-clock.ts';
import { createServerDatabase, serverUrl } from '../support/backends.ts';

const LIMIT = 50;
const REQUESTS = 200;

describe.skipIf(!serverUrl)('rate limits under concurrency (PostgreSQL)', () => {
  let server: Awaited<ReturnType<typeof createServerDatabase>>;
  let store: Store;

  beforeAll(async () => {
    server = await createServerDatabase({ migrated: true });
    store = await openStore({ url: server.url, poolSize: 20 });
    await installVerificationClock(store.db);
  });

  afterAll(async () => {
    await store?.close();
    await server?.drop();
  });

  async function keysLimitedTo(limit: number, count: number): Promise<IssuedKey[]> {
    const org = await store.organizations.create({ name: `Rate ${randomBytes(4).toString('hex')}` });
    return store.withOrg(org.id, async (tx) => {
      const user = await tx.users.create({ email: `rate-${randomBytes(4).toString('hex')}@example.com`, role: 'customer' });
      const keys: IssuedKey[] = [];
      for (let i = 0; i < count; i++) keys.push(await tx.apiKeys.issue({ userId: user.id, name: `limited ${i}`, rateLimitPerHour: limit }));
      return keys;
    });
  }

  async function counters(apiKeyId: string): Promise<{ window_start: Date; request_count: number }[]> {
    const { rows } = await store.db.query<{ window_start: Date; request_count: number }>(
      'select window_start, request_count from api_key_usage where api_key_id = $1 order by window_start',
      [apiKeyId],
    );
    return rows;
  }

  function tally(results: Verification[]) {
    const remaining = results.flatMap((result) => (result.ok ? [result.rateLimit.remaining] : []));
    const reasons = results.flatMap((result) => (result.ok ? [] : [result.reason]));
    return { ok: remaining.length, remaining: remaining.sort((a, b) => a - b), reasons };
  }

  const zeroToLimit = Array.from({ length: LIMIT }, (_, i) => i);

  it('the pool really runs verifications in parallel (20 connections busy at once)', async () => {
    // pg_sleep in 20 concurrent statements: about one sleep long if they run side by side.
    const started = Date.now();
    await Promise.all(Array.from({ length: 20 }, () => store.db.query('select pg_sleep(0.3)')));
    expect(Date.now() - started).toBeLessThan(20 * 300 * 0.5);
  });

  it(`${REQUESTS} concurrent verifications of a key limited to ${LIMIT}/hour: exactly ${LIMIT} OK, remaining 0..${LIMIT - 1} each once, the rest RATE_LIMITED, counter ${LIMIT}`, async () => {
    const [issued] = await keysLimitedTo(LIMIT, 1);
    const now = new Date('2030-05-05T10:30:00.000Z');
    const results = await Promise.all(Array.from({ length: REQUESTS }, () => verifyApiKeyAt(store.db, issued!.key, now)));
    const { ok, remaining, reasons } = tally(results);
    expect(ok).toBe(LIMIT);
    expect(remaining).toEqual(zeroToLimit);
    expect(reasons).toEqual(Array.from({ length: REQUESTS - LIMIT }, () => 'RATE_LIMITED'));
    for (const result of results) {
      expect(result.rateLimit).toMatchObject({ limit: LIMIT, resetsAt: new Date('2030-05-05T11:00:00.000Z') });
    }
    expect(await counters(issued!.apiKey.id)).toEqual([{ window_start: new Date('2030-05-05T10:00:00.000Z'), request_count: LIMIT }]);
  });

  it(`two keys at once, ${REQUESTS} concurrent verifications each, interleaved: each exactly ${LIMIT} OK with remaining 0..${LIMIT - 1}`, async () => {
    const [first, second] = await keysLimitedTo(LIMIT, 2);
    const now = new Date('2030-05-06T14:00:00.000Z');
    const calls: Promise<Verification>[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      calls.push(verifyApiKeyAt(store.db, first!.key, now));
      calls.push(verifyApiKeyAt(store.db, second!.key, now));
    }
    const results = await Promise.all(calls);
    const forFirst = tally(results.filter((_, index) => index % 2 === 0));
    const forSecond = tally(results.filter((_, index) => index % 2 === 1));
    for (const [issued, counted] of [
      [first!, forFirst],
      [second!, forSecond],
    ] as const) {
      expect(counted.ok).toBe(LIMIT);
      expect(counted.remaining).toEqual(zeroToLimit);
      expect(counted.reasons).toEqual(Array.from({ length: REQUESTS - LIMIT }, () => 'RATE_LIMITED'));
      expect(await counters(issued.apiKey.id)).toEqual([{ window_start: new Date('2030-05-06T14:00:00.000Z'), request_count: LIMIT }]);
    }
    // Every success names its own key.
    for (const [index, result] of results.entries()) {
      if (result.ok) expect(result.principal.apiKeyId).toBe((index % 2 === 0 ? first! : second!).apiKey.id);
    }
  });

  it('the first concurrent burst of a new window (no counter row yet) is exact too, and the next window starts over', async () => {
    const [issued] = await keysLimitedTo(LIMIT, 1);
    for (const [hour, windowStart] of [
      ['2030-05-07T08:59:59.999Z', '2030-05-07T08:00:00.000Z'],
      ['2030-05-07T09:00:00.000Z', '2030-05-07T09:00:00.000Z'],
    ] as const) {
      const now = new Date(hour);
      const results = await Promise.all(Array.from({ length: REQUESTS }, () => verifyApiKeyAt(store.db, issued!.key, now)));
      const { ok, remaining } = tally(results);
      expect(ok).toBe(LIMIT);
      expect(remaining).toEqual(zeroToLimit);
      const windows = await counters(issued!.apiKey.id);
      expect(windows.at(-1)).toEqual({ window_start: new Date(windowStart), request_count: LIMIT });
    }
  });

  it('with the real clock: a burst of 200 admits exactly 50 (unless the hour turns mid-burst, when each window admits at most 50)', async () => {
    const [issued] = await keysLimitedTo(LIMIT, 1);
    const startHour = Math.floor(Date.now() / 3_600_000);
    const results = await Promise.all(Array.from({ length: REQUESTS }, () => store.verifyApiKey(issued!.key)));
    const endHour = Math.floor(Date.now() / 3_600_000);
    const { ok } = tally(results);
    if (startHour === endHour) expect(ok).toBe(LIMIT);
    else expect(ok).toBeLessThanOrEqual(2 * LIMIT);
    const rows = await counters(issued!.apiKey.id);
    for (const row of rows) expect(row.request_count).toBeLessThanOrEqual(LIMIT);
  });
});
