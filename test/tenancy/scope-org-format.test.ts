/**
 * scope_org() reads the scope's organization's status in the key's statement, before it checks
 * the signature (migration 20261128130000), so it must not cast the organization there: it finds
 * it by its id as text, and a value that is not a uuid finds nothing. Whatever a session puts in
 * app.org_id, a scope whose token does not verify is refused as not signed (ES003), for every
 * need and whether or not the scope says it was live at entry: never an error of a cast, which
 * would tell a caller something else went wrong.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, type TestDatabase } from '../support/backends.ts';

/** Changes that keep a uuid close to the canonical form, or make it one uuid_in still accepts. */
const nearUuid = fc.oneof(
  fc.uuid(),
  fc.uuid().map((id) => id.toUpperCase()),
  fc.uuid().map((id) => `{${id}}`),
  fc.uuid().map((id) => id.replaceAll('-', '')),
  fc
    .tuple(fc.uuid(), fc.nat(35), fc.constantFrom('-', 'g', 'G', 'A', ' ', '{', '}', 'é', '\n', '0', 'x'))
    .map(([id, at, char]) => id.slice(0, at) + char + id.slice(at + 1)),
  fc.tuple(fc.uuid(), fc.nat(36), fc.constantFrom('-', '0', 'a', ' ')).map(([id, at, char]) => id.slice(0, at) + char + id.slice(at)),
  fc.tuple(fc.uuid(), fc.nat(35)).map(([id, at]) => id.slice(0, at) + id.slice(at + 1)),
  fc.constantFrom('-'.repeat(36), `${'0'.repeat(8)}-0000-0000-0000-0000-0000000`, '0190a1b2-c3d4-7e5f-8a9b-0c1d-e3f4a5b'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }),
);

describe.each(backends)('scope_org and a malformed organization on $name', (backend) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await backend.createMigrated();
  });

  afterAll(async () => {
    await database?.dispose();
  });

  it('refuses any organization with a token that does not verify as not signed (ES003), for each need, live at entry or not', async () => {
    await database.db.withSession(async (session) => {
      await fc.assert(
        fc.asyncProperty(
          nearUuid.filter((org) => org !== '' && !org.includes('\u0000')),
          fc.constantFrom('org', 'live', 'status'),
          fc.constantFrom('', 'on', 'off'),
          async (org, need, live) => {
            await session.query(
              `select set_config('app.org_id', $1, false), set_config('app.org_expires', '4000000000', false),
                      set_config('app.org_token', $2, false), set_config('app.org_live', $3, false)`,
              [org, 'ab'.repeat(32), live],
            );
            await expect(session.query('select public.scope_org($1) as org', [need])).rejects.toMatchObject({ code: 'ES003' });
          },
        ),
        { numRuns: 300 },
      );
    });
  });
});
