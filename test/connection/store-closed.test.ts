/**
 * After close(), every call fails with STORE_CLOSED, on both backends (#21 item 3). They used to
 * fail with CONNECTION_FAILED or DATABASE_ERROR, the words of a database that went away.
 */
import { describe, expect, it } from 'vitest';
import { storeOver } from 'engine-store';
import { backends } from '../support/backends.ts';
import { expectStoreError } from '../support/assertions.ts';

describe.each(backends.filter((backend) => backend.name !== 'citus'))('a closed store on $name', (backend) => {
  it('refuses every call with STORE_CLOSED, and closing again is harmless', async () => {
    const database = await backend.createMigrated();
    try {
      const store = await storeOver(database.db);
      const org = await store.organizations.create({ name: 'Closing' });
      await store.close();
      const calls: [string, () => Promise<unknown>][] = [
        ['organizations.list', () => store.organizations.list()],
        ['withOrg', () => store.withOrg(org.id, (tx) => tx.users.list())],
        ['readOrg', () => store.readOrg(org.id).workflows.list()],
        ['verifyApiKey', () => store.verifyApiKey(`es_abcdefgh1234_${'A'.repeat(43)}`)],
        ['db.query', () => store.db.query('select 1')],
      ];
      for (const [name, call] of calls) {
        const error = await expectStoreError(call, 'STORE_CLOSED');
        expect(error.message, name).toMatch(/was closed \(close\(\)\); open it again/);
      }
      await store.close();
    } finally {
      await database.dispose();
    }
  });
});
