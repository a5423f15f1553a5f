/**
 * Role-based access control: the permission keys, what each role grants, and the checks. The
 * mapping is seeded into role_permissions by a migration (the database uses it to compute a
 * key's permissions in verify_api_key); ROLE_PERMISSIONS below is the same table for code, and
 * a test requires the two to be equal.
 */
import { StoreError } from '../errors.ts';
import type { Role } from '../repositories/validation.ts';

export const PERMISSIONS = [
  'org:read',
  'org:manage',
  'user:read',
  'user:manage',
  'apikey:read',
  'apikey:manage',
  'workflow:read',
  'workflow:write',
  'workflow:execute',
  'task:read',
  'task:write',
  'schedule:read',
  'schedule:write',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** admin: everything in its organization; manager: workflows, tasks, schedules and customer users; customer: read and execute. */
export const ROLE_PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = {
  admin: PERMISSIONS,
  manager: [
    'org:read',
    'user:read',
    'user:manage',
    'workflow:read',
    'workflow:write',
    'workflow:execute',
    'task:read',
    'task:write',
    'schedule:read',
    'schedule:write',
  ],
  customer: ['org:read', 'workflow:read', 'workflow:execute', 'task:read', 'schedule:read'],
};

export function isPermission(value: unknown): value is Permission {
  return typeof value === 'string' && (PERMISSIONS as readonly string[]).includes(value);
}

/**
 * What a key may do: its user's role permissions, narrowed to the key's scopes when it has
 * any. Scopes can only narrow: a scope the role lacks grants nothing.
 *
 * @example
 * effectivePermissions('manager', ['workflow:read', 'org:manage']) // ['workflow:read']
 */
export function effectivePermissions(role: Role, scopes?: readonly string[] | null): Permission[] {
  const granted = ROLE_PERMISSIONS[role];
  return scopes == null ? [...granted] : granted.filter((permission) => scopes.includes(permission));
}

/** Whether a principal (as `verify` returns it) holds `permission`. */
export function authorize(principal: { permissions: readonly string[] }, permission: Permission): boolean {
  return principal.permissions.includes(permission);
}

/** Throws FORBIDDEN unless the principal holds `permission`. */
export function assertAuthorized(principal: { permissions: readonly string[] }, permission: Permission): void {
  if (!authorize(principal, permission)) {
    throw new StoreError('FORBIDDEN', `this key lacks the permission ${permission}`, { reason: 'missing_permission' });
  }
}

/**
 * Whether a user of role `actor` may manage (create, change, suspend, remove, issue keys for)
 * a user of role `target`: admins manage anyone; managers manage customers only; customers
 * manage no one. Granting a role counts as managing a user of that role.
 */
export function canManageUser(actor: Role, target: Role): boolean {
  if (!ROLE_PERMISSIONS[actor].includes('user:manage')) return false;
  return actor === 'admin' || target === 'customer';
}
