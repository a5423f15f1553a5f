/**
 * What the key cache's tests share (test/api-keys/key-cache*.test.ts): a database whose every
 * connection verifies at a fixed time, keys in organizations of their own, and the counters.
 */
import { randomBytes } from 'node:crypto';
import type { IssueKey, Store } from 'engine-store';
import { installVerificationClock } from './verification-clock.ts';

/** 10:30 of a day in 2030: an hour turning during the run cannot split a count over two windows. */
export const CACHE_CLOCK = '2030-05-05T10:30:00.000Z';

/** Makes every connection opened from now on to database `name` verify at CACHE_CLOCK. */
export async function fixVerificationClock(owner: Store, name: string): Promise<void> {
  await installVerificationClock(owner.db);
  await owner.db.exec(`alter database ${name} set test.verification_now = '${CACHE_CLOCK}'`);
}

/** A key of a new user in a new organization (admin, 100,000 an hour unless told otherwise). */
export async function issuedKey(owner: Store, input: Partial<IssueKey> & { role?: 'admin' | 'manager' | 'customer' } = {}) {
  const org = await owner.organizations.create({ name: `Cache ${randomBytes(4).toString('hex')}` });
  const { role = 'admin', ...key } = input;
  return owner.withOrg(org.id, async (tx) => {
    const user = await tx.users.create({ email: `c-${randomBytes(4).toString('hex')}@example.com`, role });
    const made = await tx.apiKeys.issue({ userId: user.id, name: 'cached', rateLimitPerHour: 100_000, ...key });
    return { org, user, ...made };
  });
}

/** Requests the database has counted for a key, over all windows. */
export async function countedRequests(owner: Store, apiKeyId: string): Promise<number> {
  const { rows } = await owner.db.query<{ n: number }>(
    'select coalesce(sum(request_count), 0)::int as n from api_key_usage where api_key_id = $1',
    [apiKeyId],
  );
  return rows[0]!.n;
}
