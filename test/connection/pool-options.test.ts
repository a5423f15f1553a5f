/**
 * Connection options through openStore (#21 item 3): TLS, and the idle and connect timeouts,
 * reach the pools (this server has no TLS: asking for it is refused by the server, which proves
 * the option got there), and bad values are refused before any pool opens.
 */
import { describe, expect, it } from 'vitest';
import { openStore } from 'engine-store';
import { createServerDatabase, serverUrl } from '../support/backends.ts';
import { expectStoreError } from '../support/assertions.ts';

describe.runIf(serverUrl)('connection options of openStore (PostgreSQL)', () => {
  it('passes ssl to the pools: a server without TLS refuses it', async () => {
    const error = await expectStoreError(openStore({ url: serverUrl!, ssl: { rejectUnauthorized: false } }), 'CONNECTION_FAILED');
    expect(error.message).toMatch(/does not support SSL/i);
  });

  it('refuses timeouts that are not whole milliseconds, and ssl that is not TLS options', async () => {
    for (const [options, field] of [
      [{ idleTimeoutMs: -1 }, 'idleTimeoutMs'],
      [{ connectTimeoutMs: 0 }, 'connectTimeoutMs'],
      [{ connectTimeoutMs: 1.5 }, 'connectTimeoutMs'],
      [{ ssl: 'yes' }, 'ssl'],
    ] as const) {
      await expectStoreError(openStore({ url: serverUrl!, ...(options as object) }), 'INVALID_INPUT', field);
    }
  });

  it('opens with an idle timeout and a connect timeout of its own', async () => {
    const database = await createServerDatabase({ migrated: true });
    try {
      const store = await openStore({ url: database.url, idleTimeoutMs: 1_000, connectTimeoutMs: 5_000 });
      try {
        const org = await store.organizations.create({ name: 'Timed' });
        expect((await store.readOrg(org.id).workflows.list()).items).toEqual([]);
      } finally {
        await store.close();
      }
    } finally {
      await database.drop();
    }
  });
});
