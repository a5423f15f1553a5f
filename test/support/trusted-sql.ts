/**
 * SQL text in a tenant scope, for the tests that play what an injected query or a leaked tenant
 * login could run as app_tenant: the store's public API takes no SQL text in a scope, so the
 * tests reach the database's own boundary (row-level security, grants) through the trusted entry.
 */
import type { Store } from 'engine-store';
import { scopeEntryOf } from '../../engine/infra/store/store.ts';
import { withOrgTrustedSql, type TrustedSqlScope } from '../../engine/infra/store/tenancy/scopes.ts';

export type { TrustedSqlScope } from '../../engine/infra/store/tenancy/scopes.ts';

/** store.withOrg, on the same tenant connections and settings, with `tx.query(sql, params)` in the scope. */
export function withOrgSql<T>(store: Store, orgId: string, work: (tx: TrustedSqlScope) => Promise<T>): Promise<T> {
  return withOrgTrustedSql(store.tenantDb, orgId, work, scopeEntryOf(store));
}
