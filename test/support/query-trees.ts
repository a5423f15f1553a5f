/**
 * Tenant query trees for the tests of query-tree.ts: a Kysely builder over the tenant tables that
 * never connects, what the tenant driver compiles a tree to, and the strings an attacker puts in
 * every field.
 */
import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler } from 'kysely';
import { expect } from 'vitest';
import type { TenantTables } from '../../engine/infra/store/tenancy/query-builder.ts';
import { withOrganizationFilter } from '../../engine/infra/store/tenancy/query-routing.ts';
import { parseTenantQuery } from '../../engine/infra/store/tenancy/query-tree.ts';

export const compiler = new PostgresQueryCompiler();

/** `tx.kysely`'s builder without a database: for trees only. */
export const offline = new Kysely<TenantTables>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (kysely) => new PostgresIntrospector(kysely),
    createQueryCompiler: () => compiler,
  },
});

/** What the tenant driver runs for `tree` in the scope of `orgId`: parse, route, parse again, compile. */
export function tenantSql(tree: unknown, orgId = '0190a0d4-0000-7000-8000-000000000001'): { sql: string; parameters: readonly unknown[] } {
  const routed = parseTenantQuery(withOrganizationFilter(parseTenantQuery(tree), orgId));
  return compiler.compileQuery(routed, { queryId: 'test' });
}

/** Every object of a rebuilt tree has no prototype (arrays: Array.prototype) and is frozen. */
export function expectPlain(value: unknown): void {
  // A Date or a byte array is a fresh copy, which only the driver reads.
  if (value === null || typeof value !== 'object' || value instanceof Date || value instanceof Uint8Array) return;
  expect(Object.isFrozen(value)).toBe(true);
  if (Array.isArray(value)) {
    expect(Object.getPrototypeOf(value)).toBe(Array.prototype);
    value.forEach(expectPlain);
  } else {
    expect(Object.getPrototypeOf(value)).toBe(null);
    Object.values(value).forEach(expectPlain);
  }
}

/** Strings that would leave the scope if any reached the SQL text unquoted. */
export const HOSTILE_STRINGS = [
  "set_config('role','postgres',true)",
  "set_config('app.org_id', '00000000-0000-0000-0000-000000000000', true)",
  '"; reset role; --',
  "'; reset role; --",
  'pg_settings',
  'pg_catalog.pg_roles',
  'pg_advisory_lock',
  "'",
  '"',
  '\0',
  'workflow_states\0',
  '--',
  '/*',
  '$1',
  'count(*) from pg_roles; --',
  'commit',
  '',
] as const;
