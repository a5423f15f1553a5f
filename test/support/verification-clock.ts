/**
 * Verifying an API key at a chosen time, for the tests of hour windows and expiry.
 *
 * verify_api_key takes no clock from its caller: it reads the server's through
 * verification_now(), which only the owner may redefine. The tests redefine it, in their own
 * scratch database, to read the setting `test.verification_now` first, and set that setting
 * around one verification, as app_tenant would call it.
 */
import type { Database, Session } from '../../engine/infra/store/connection/database.ts';
import { verifyApiKey, type Verification } from '../../engine/infra/store/api-keys/verify-api-key.ts';

const CLOCK_SETTING = 'test.verification_now';

/** Makes verify_api_key honour `test.verification_now` in this database (the owner's connection). */
export async function installVerificationClock(ownerDb: Database): Promise<void> {
  // CREATE OR REPLACE keeps the function's owner and its grants.
  await ownerDb.exec(`create or replace function public.verification_now() returns timestamptz
    language sql stable
    as $$ select coalesce(nullif(pg_catalog.current_setting('${CLOCK_SETTING}', true), '')::timestamptz, pg_catalog.now()) $$`);
}

/**
 * verifyApiKey as of `at`, as app_tenant. `target` is the owner's database (after
 * installVerificationClock) or a session on it already inside a transaction.
 */
export async function verifyApiKeyAt(target: Database | Session, key: unknown, at: Date): Promise<Verification> {
  if ('withSession' in target) {
    return target.withSession(async (session) => {
      await session.exec('begin');
      try {
        return await verifyApiKeyAt(session, key, at);
      } finally {
        await session.exec('commit');
      }
    });
  }
  // Both settings are local: they end with the caller's transaction.
  await target.query(`select set_config($1, $2, true), set_config('role', 'app_tenant', true)`, [CLOCK_SETTING, at.toISOString()]);
  return verifyApiKey(target, key);
}
