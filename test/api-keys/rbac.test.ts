/**
 * Role-based access control: the role x permission table written out by hand (not derived from
 * ROLE_PERMISSIONS), who may manage whom, assertAuthorized, the property that scopes only ever
 * narrow, and (on every backend) that the database's role_permissions equals ROLE_PERMISSIONS.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  PERMISSIONS,
  ROLE_PERMISSIONS,
  StoreError,
  assertAuthorized,
  authorize,
  canManageUser,
  effectivePermissions,
  type Permission,
} from 'engine-store';
import type { Role } from '../../engine/infra/store/repositories/validation.ts';
import { backends, migratedStoreFor } from '../support/backends.ts';

const ROLES: readonly Role[] = ['admin', 'manager', 'customer'];

// prettier-ignore
/** What each role may do, written out: [permission, admin, manager, customer]. */
const EXPECTED: ReadonlyArray<readonly [Permission, boolean, boolean, boolean]> = [
  //                       admin  manager customer
  ['org:read',             true,  true,   true ],
  ['org:manage',           true,  false,  false],
  ['user:read',            true,  true,   false],
  ['user:manage',          true,  true,   false],
  ['apikey:read',          true,  false,  false],
  ['apikey:manage',        true,  false,  false],
  ['workflow:read',        true,  true,   true ],
  ['workflow:write',       true,  true,   false],
  ['workflow:execute',     true,  true,   true ],
  ['task:read',            true,  true,   true ],
  ['task:write',           true,  true,   false],
  ['schedule:read',        true,  true,   true ],
  ['schedule:write',       true,  true,   false],
];

const CASES = EXPECTED.flatMap(([permission, admin, manager, customer]) => [
  { role: 'admin' as Role, permission, allowed: admin },
  { role: 'manager' as Role, permission, allowed: manager },
  { role: 'customer' as Role, permission, allowed: customer },
]);

// prettier-ignore
/** canManageUser(actor, target), written out. */
const MANAGES: ReadonlyArray<readonly [Role, Role, boolean]> = [
  ['admin',    'admin',    true ],
  ['admin',    'manager',  true ],
  ['admin',    'customer', true ],
  ['manager',  'admin',    false],
  ['manager',  'manager',  false],
  ['manager',  'customer', true ],
  ['customer', 'admin',    false],
  ['customer', 'manager',  false],
  ['customer', 'customer', false],
];

describe('the role x permission table', () => {
  it('covers every permission exactly once, and the permission list has no duplicates', () => {
    expect(EXPECTED.map(([permission]) => permission).sort()).toEqual([...PERMISSIONS].sort());
    expect(new Set(PERMISSIONS).size).toBe(PERMISSIONS.length);
    expect(PERMISSIONS).toHaveLength(13);
  });

  it.each(CASES)('$role may $permission: $allowed', ({ role, permission, allowed }) => {
    expect(authorize({ permissions: effectivePermissions(role) }, permission)).toBe(allowed);
    expect(authorize({ permissions: effectivePermissions(role, null) }, permission)).toBe(allowed);
  });

  it('ROLE_PERMISSIONS lists exactly the allowed cells of the table, without duplicates', () => {
    for (const [column, role] of ROLES.entries()) {
      const allowed = EXPECTED.filter((row) => row[column + 1]).map(([permission]) => permission);
      expect([...ROLE_PERMISSIONS[role]].sort()).toEqual(allowed.sort());
      expect(new Set(ROLE_PERMISSIONS[role]).size).toBe(ROLE_PERMISSIONS[role].length);
    }
  });

  it('effectivePermissions returns a copy: changing it changes neither ROLE_PERMISSIONS nor the next answer', () => {
    const mine = effectivePermissions('customer');
    mine.push('org:manage');
    mine.length = 0;
    expect(ROLE_PERMISSIONS.customer).toContain('org:read');
    expect(effectivePermissions('customer')).toContain('org:read');
    expect(authorize({ permissions: effectivePermissions('customer') }, 'org:manage')).toBe(false);
    const admin = effectivePermissions('admin');
    admin.pop();
    expect(PERMISSIONS).toHaveLength(13);
  });

  it('authorize looks at the principal permissions only, not at its role', () => {
    expect(authorize({ permissions: [] }, 'org:read')).toBe(false);
    expect(authorize({ permissions: ['workflow:read'] }, 'workflow:read')).toBe(true);
    expect(authorize({ permissions: ['workflow:read'] }, 'workflow:write')).toBe(false);
    expect(authorize({ permissions: ['WORKFLOW:READ', 'workflow:*', '*'] }, 'workflow:read')).toBe(false);
  });
});

describe('canManageUser', () => {
  it.each(MANAGES.map(([actor, target, allowed]) => ({ actor, target, allowed })))(
    '$actor manages $target: $allowed',
    ({ actor, target, allowed }) => {
      expect(canManageUser(actor, target)).toBe(allowed);
    },
  );

  it('the table covers every (actor, target) pair', () => {
    expect(MANAGES.map(([actor, target]) => `${actor}>${target}`).sort()).toEqual(
      ROLES.flatMap((actor) => ROLES.map((target) => `${actor}>${target}`)).sort(),
    );
  });
});

describe('assertAuthorized', () => {
  it('throws StoreError FORBIDDEN, naming the missing permission, when the principal lacks it', () => {
    let caught: unknown;
    try {
      assertAuthorized({ permissions: effectivePermissions('customer') }, 'workflow:write');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(StoreError);
    expect((caught as StoreError).code).toBe('FORBIDDEN');
    expect((caught as StoreError).details.reason).toBe('missing_permission');
    expect((caught as StoreError).message).toContain('workflow:write');
  });

  it.each(CASES)('$role, $permission: throws exactly when not allowed ($allowed)', ({ role, permission, allowed }) => {
    const call = () => assertAuthorized({ permissions: effectivePermissions(role) }, permission);
    if (allowed) expect(call).not.toThrow();
    else expect(call).toThrow(expect.objectContaining({ name: 'StoreError', code: 'FORBIDDEN' }));
  });

  it('an empty principal is forbidden everything', () => {
    for (const permission of PERMISSIONS) {
      expect(() => assertAuthorized({ permissions: [] }, permission)).toThrow(StoreError);
    }
  });
});

describe('scopes only narrow (property)', () => {
  const junk = fc.oneof(
    fc.string(),
    fc.constantFrom(
      '*',
      'admin',
      'workflow:*',
      'WORKFLOW:READ',
      'org:read ',
      ' org:read',
      'org:Read',
      'apikey',
      'constructor',
      '__proto__',
      '',
    ),
  );
  const scopesArbitrary = fc.array(fc.oneof(fc.constantFrom(...PERMISSIONS), junk), { maxLength: 30 });

  it('effectivePermissions(role, scopes) is exactly role ∩ scopes: never a permission outside the role, never junk', () => {
    fc.assert(
      fc.property(fc.constantFrom(...ROLES), scopesArbitrary, (role, scopes) => {
        const effective = effectivePermissions(role, scopes);
        for (const permission of effective) {
          expect(ROLE_PERMISSIONS[role]).toContain(permission);
          expect(scopes).toContain(permission);
        }
        const expected = ROLE_PERMISSIONS[role].filter((permission) => scopes.includes(permission));
        expect([...effective].sort()).toEqual([...expected].sort());
        expect(new Set(effective).size).toBe(effective.length);
      }),
      { numRuns: 500 },
    );
  });

  it('a subset of PERMISSIONS as scopes, junk mixed in: the result is within the subset and within the unscoped result', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ROLES),
        fc.shuffledSubarray([...PERMISSIONS]),
        fc.array(junk, { maxLength: 5 }),
        fc.nat(),
        (role, subset, extra, cut) => {
          const at = extra.length === 0 ? 0 : cut % (extra.length + 1);
          const scopes = [...extra.slice(0, at), ...subset, ...extra.slice(at)];
          const effective = effectivePermissions(role, scopes);
          const unscoped = effectivePermissions(role);
          expect(effective.every((permission) => unscoped.includes(permission) && subset.includes(permission))).toBe(true);
          expect(effective.length).toBeLessThanOrEqual(Math.min(unscoped.length, subset.length));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('the documented example: manager with [workflow:read, org:manage] gets [workflow:read]', () => {
    expect(effectivePermissions('manager', ['workflow:read', 'org:manage'])).toEqual(['workflow:read']);
    expect(effectivePermissions('customer', [])).toEqual([]);
    expect(effectivePermissions('admin', undefined)).toEqual([...PERMISSIONS]);
  });
});

describe.each(backends)('the database agrees with ROLE_PERMISSIONS ($name)', (backend) => {
  const migrated = migratedStoreFor(backend);

  it('role_permissions holds exactly the pairs of ROLE_PERMISSIONS, and permissions exactly PERMISSIONS', async () => {
    const { rows } = await migrated.store.db.query<{ role: string; permission: string }>('select role, permission from role_permissions');
    const inDatabase = rows.map((row) => `${row.role} ${row.permission}`).sort();
    const inCode = ROLES.flatMap((role) => ROLE_PERMISSIONS[role].map((permission) => `${role} ${permission}`)).sort();
    expect(inDatabase).toEqual(inCode);
    const { rows: keys } = await migrated.store.db.query<{ key: string }>('select key from permissions');
    expect(keys.map((row) => row.key).sort()).toEqual([...PERMISSIONS].sort());
  });

  it('and with the hand-written table', async () => {
    const { rows } = await migrated.store.db.query<{ role: Role; permission: Permission }>('select role, permission from role_permissions');
    const granted = new Set(rows.map((row) => `${row.role} ${row.permission}`));
    for (const { role, permission, allowed } of CASES) expect(granted.has(`${role} ${permission}`), `${role} ${permission}`).toBe(allowed);
  });
});
