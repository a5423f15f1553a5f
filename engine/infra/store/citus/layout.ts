/**
 * How the schema lies on a Citus cluster, in one place: the distribute command follows it, and
 * the tenancy lint (test/tenancy-lint.test.ts) keeps the schema fit for it while it is still on
 * one server.
 */

/** The column every tenant table is sharded by. */
export const DISTRIBUTION_COLUMN = 'org_id';

/**
 * A full copy on every node: small, read by every tenant statement or verification, written
 * rarely (through the coordinator, with two-phase commit). Referenced tables before the tables
 * that refer to them.
 */
export const REFERENCE_TABLES = [
  'organizations',
  'permissions',
  'role_permissions',
  'role_grants',
  'api_key_prefixes',
  'audit_retention',
] as const;

/**
 * Triggers the distribute command drops, because Citus cannot run them or they would do nothing
 * there:
 * - a trigger on a reference table runs on each node's copy, where a statement on another Citus
 *   table is refused. There, whoever changes role_permissions by hand runs SELECT
 *   refresh_role_grants() after it, and `doctor` reports role_grants when it disagrees
 *   (migration 20261128140000);
 * - the key cache's NOTIFYs: they would be sent on the node of the row, where no store listens,
 *   and a write to a reference table commits with two-phase commit, which PostgreSQL refuses
 *   after a NOTIFY (the store refuses keyCache on Citus; migration 20261128160000);
 */
export const TRIGGERS_NOT_ON_CITUS = [
  { table: 'role_permissions', trigger: 'role_permissions_refresh_role_grants' },
  { table: 'role_permissions', trigger: 'role_permissions_notify_key_cache' },
  { table: 'organizations', trigger: 'organizations_notify_key_cache' },
  { table: 'organizations', trigger: 'organizations_notify_key_cache_delete' },
  { table: 'users', trigger: 'users_notify_key_cache' },
  { table: 'users', trigger: 'users_notify_key_cache_delete' },
  { table: 'api_keys', trigger: 'api_keys_notify_key_cache' },
  { table: 'api_keys', trigger: 'api_keys_notify_key_cache_delete' },
] as const;

/**
 * Plain tables of each node, copied to the workers by the distribute command rather than by
 * Citus: the workers read tenant_scope_key inside shard queries (the policies check each
 * scope's signature with it), where Citus refuses a read of one of its own tables ("cannot execute a
 * distributed query from a query on a shard").
 */
export const NODE_LOCAL_TABLES = ['tenant_scope_key'] as const;

/**
 * Sharded by org_id, all in the co-location group of the first: an organization's rows of every
 * table live on one node, so joins and foreign keys between them stay there.
 */
export const DISTRIBUTED_TABLES = [
  'users',
  'api_keys',
  'api_key_usage',
  'api_key_usage_saved',
  'api_key_leases',
  'api_key_auth_failures',
  'audit_heads',
  'audit_events',
  'workflow_states',
  'task_states',
  'schedules',
] as const;

/**
 * Reference tables that carry org_id: tenants read their own rows and add new ones, never change
 * or remove any. api_key_prefixes routes a presented key (which names no organization) to its
 * organization and keeps a prefix from ever being issued twice.
 */
export const TENANT_INSERTABLE_REFERENCE_TABLES = ['api_key_prefixes'] as const;

/**
 * The audit trail's capture triggers (migration 20261205120000), which do run on Citus: a
 * shard's trigger appends to its organization's chain, whose shard is on the same node (Citus
 * lets a trigger reach co-located shards, not other nodes), and a reference table's trigger runs
 * on every node's copy, where audit_chain_is_here() lets only the chain's node append. The
 * distribute command sets them aside while it copies the rows into place (a copy is not a
 * change, and its pending events would stop the foreign keys from being added back), then
 * creates them again, on every shard.
 */
export const AUDIT_CAPTURE_TRIGGERS = [
  { table: 'organizations', trigger: 'organizations_audit' },
  { table: 'users', trigger: 'users_audit' },
  { table: 'api_keys', trigger: 'api_keys_audit' },
  { table: 'api_keys', trigger: 'api_keys_audit_update' },
  { table: 'role_permissions', trigger: 'role_permissions_audit' },
  { table: 'role_permissions', trigger: 'role_permissions_audit_truncate' },
] as const;
