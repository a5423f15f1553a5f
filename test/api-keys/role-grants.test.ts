/**
 * role_grants, the copy of the permission mapping that verification reads (one row per role,
 * migration 20261128140000): equal to role_permissions after migrating, kept equal by a trigger
 * on PostgreSQL and PGlite when the mapping is changed by hand, and on Citus, where no trigger
 * can keep it, reported by `doctor` until refresh_role_grants() is run. Each backend gets a
 * database of its own: these tests change the mapping.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROLE_PERMISSIONS, diagnose, storeOver, type Store } from 'engine-store';
import { backends, type TestDatabase } from '../support/backends.ts';
import { withCitus } from '../support/citus.ts';

const mapping = async (store: Store) =>
  (await store.db.query<{ role: string; permissions: string[] }>('select role, permissions from role_grants order by role')).rows;

describe.each(withCitus(backends))('role_grants ($name)', (backend) => {
  let database: TestDatabase;
  let store: Store;
  let customerKey: string;

  beforeAll(async () => {
    database = await backend.createMigrated();
    store = await storeOver(database.db);
    const org = await store.organizations.create({ name: `Grants ${randomBytes(3).toString('hex')}` });
    customerKey = await store.withOrg(org.id, async (tx) => {
      const user = await tx.users.create({ email: 'customer@grants.example', role: 'customer' });
      return (await tx.apiKeys.issue({ userId: user.id, name: 'customer' })).key;
    });
  });
  afterAll(async () => {
    await store?.close();
    await database?.dispose();
  });

  const permissionsOf = async (key: string) => {
    const result = await store.verifyApiKey(key);
    if (!result.ok) throw new Error(`verification failed: ${result.reason}`);
    return result.principal.permissions;
  };
  const roleGrantsFindings = async () =>
    (await diagnose(database.db, database.url ? { url: database.url } : {})).findings.filter((f) => f.code === 'ROLE_GRANTS_STALE');

  it('holds each role of role_permissions with its permissions, sorted', async () => {
    expect(await mapping(store)).toEqual(
      (['admin', 'customer', 'manager'] as const).map((role) => ({ role, permissions: [...ROLE_PERMISSIONS[role]].sort() })),
    );
    expect(await permissionsOf(customerKey)).toEqual([...ROLE_PERMISSIONS.customer].sort());
    expect(await roleGrantsFindings()).toEqual([]);
  });

  if (backend.name !== 'citus') {
    it('follows a change of role_permissions made by hand, and verification with it', async () => {
      await store.db.query(`delete from role_permissions where role = 'customer' and permission = 'task:read'`);
      try {
        expect((await mapping(store)).find((row) => row.role === 'customer')!.permissions).not.toContain('task:read');
        expect(await permissionsOf(customerKey)).not.toContain('task:read');
        const refused = await store.verifyApiKey(customerKey, { permission: 'task:read' });
        expect(refused).toMatchObject({ ok: false, reason: 'MISSING_PERMISSION' });
        expect(await roleGrantsFindings()).toEqual([]);
      } finally {
        await store.db.query(`insert into role_permissions (role, permission) values ('customer', 'task:read')`);
      }
      expect(await permissionsOf(customerKey)).toContain('task:read');
      // A role left with no permission loses its row, and its keys grant nothing.
      await store.db.query(`delete from role_permissions where role = 'customer'`);
      try {
        expect((await mapping(store)).map((row) => row.role)).toEqual(['admin', 'manager']);
        expect(await permissionsOf(customerKey)).toEqual([]);
      } finally {
        await store.db.query(`insert into role_permissions (role, permission) select 'customer', unnest($1::text[])`, [
          ROLE_PERMISSIONS.customer,
        ]);
      }
      expect(await permissionsOf(customerKey)).toEqual([...ROLE_PERMISSIONS.customer].sort());
    });
  } else {
    it('is reported by doctor after a change of role_permissions by hand, until refresh_role_grants() runs', async () => {
      await store.db.query(`delete from role_permissions where role = 'customer' and permission = 'task:read'`);
      try {
        const findings = await roleGrantsFindings();
        expect(findings).toHaveLength(1);
        expect(findings[0]!.message).toMatch(/disagrees with role_permissions for customer: .*refresh_role_grants\(\)/);
        await store.db.query('select refresh_role_grants()');
        expect(await roleGrantsFindings()).toEqual([]);
        expect(await permissionsOf(customerKey)).not.toContain('task:read');
      } finally {
        await store.db.query(`insert into role_permissions (role, permission) values ('customer', 'task:read')`);
        await store.db.query('select refresh_role_grants()');
      }
      expect(await permissionsOf(customerKey)).toContain('task:read');
    });
  }

  it('is neither readable nor writable by the tenant login: only verify_api_key reads it', async () => {
    const { rows } = await store.db.query<{ privilege: string; granted: boolean }>(
      `select p as privilege, has_table_privilege('app_tenant', 'public.role_grants', p) as granted
         from unnest(array['select', 'insert', 'update', 'delete', 'truncate']) as p`,
    );
    expect(rows.filter((row) => row.granted)).toEqual([]);
    const { rows: verifier } = await store.db.query<{ granted: boolean }>(
      `select has_table_privilege('app_key_verifier', 'public.role_grants', 'select') as granted`,
    );
    expect(verifier[0]!.granted).toBe(true);
  });
});
