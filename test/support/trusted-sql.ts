/**
 * SQL text in a tenant scope, for the tests that play what an injected query or a leaked tenant
 * login could run as app_tenant: the store's public API takes no SQL text in a scope, so the
 * tests reach the database's own boundary (row-level security, grants) through the trusted entry.
 */
import { isCitus } from '../../engine/infra/store/citus/detect.ts';
import type { Store } from 'engine-store';
import { withOrgTrustedSql, type TrustedSqlScope } from '../../engine/infra/store/tenancy/scopes.ts';

export type { TrustedSqlScope } from '../../engine/infra/store/tenancy/scopes.ts';

// Whether each store's database is a Citus coordinator, asked once: its scopes keep custom plans.
const onCitus = new WeakMap<Store, Promise<boolean>>();

/** store.withOrg, on the same tenant connections and settings, with `tx.query(sql, params)` in the scope. */
export async function withOrgSql<T>(store: Store, orgId: string, work: (tx: TrustedSqlScope) => Promise<T>): Promise<T> {
  let citus = onCitus.get(store);
  if (!citus) onCitus.set(store, (citus = isCitus(store.db)));
  return withOrgTrustedSql(store.tenantDb, orgId, work, { citus: await citus });
}
