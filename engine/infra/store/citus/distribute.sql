-- Distributes the engine-store schema on Citus (PostgreSQL 15, Citus 11.3 or later).
--
-- NOT EXECUTED BY ANY TEST: Citus is not installable where the tests run. What is tested is the
-- property this file depends on: test/tenancy-lint.test.ts requires that every tenant table leads
-- its primary key with org_id, that every unique constraint and index on a tenant table includes
-- org_id (except the two API key constraints handled in step 3), that every foreign key between
-- tenant tables includes org_id on both sides, and that the only global tables are organizations,
-- permissions and role_permissions, none of which refers to a tenant table.
-- docs/scaling-out.md explains the why; read it first.
--
-- The layout:
--   reference tables (a full copy on every node; small, read-mostly, joined by every tenant query)
--     organizations, permissions, role_permissions, and the new api_key_prefixes (step 3)
--   distributed tables, sharded by org_id, all in ONE co-location group (an organization's rows of
--   every table live on the same node, so joins and foreign keys between them stay node-local)
--     users, api_keys, api_key_usage, workflow_states, task_states, schedules
--   local to the coordinator
--     engine_store_migrations (the migration runner's bookkeeping)
--
-- Run it on the coordinator of a cluster whose workers are already added (citus_add_node), on a
-- database migrated to the latest migration, as the schema owner, in a maintenance window:
-- create_distributed_table copies each table's existing rows into its shards and blocks writes to
-- that table meanwhile (create_distributed_table_concurrently, Citus 11.2+, avoids that for a
-- table with no foreign keys to it; not used here for brevity).

create extension if not exists citus;

-- Each shard placement is one more table on a worker: 32 shards is plenty for a few nodes and many
-- thousands of organizations (an organization never spans shards; a shard holds many).
set citus.shard_count = 32;

-- ---------------------------------------------------------------------------------------------
-- 1. Reference tables: the tenant root and the RBAC lookup tables.
--
-- organizations is the tenant root. It is NOT distributed by its own id: it is tiny compared with
-- the tenant tables, every tenant table has a foreign key to it, and verification and the
-- row-level security helpers (enter_org_scope, refuse_writes_of_inactive_org) read it on
-- whichever node runs the statement. A reference table is exactly that: one replica per node,
-- written through the coordinator with two-phase commit (creating or suspending an organization
-- is rare), read locally everywhere. Foreign keys from distributed tables to a reference table
-- (users.org_id -> organizations.id, ON DELETE CASCADE: the purge path) are supported.
--
-- permissions and role_permissions: a few dozen rows, changed by migrations only, read by
-- verify_api_key for every request. role_permissions -> permissions is a reference-to-reference
-- foreign key, which is fine. (A reference table may NOT refer to a distributed table; the lint
-- checks that no global table does.)
select create_reference_table('organizations');
select create_reference_table('permissions');
select create_reference_table('role_permissions');

-- ---------------------------------------------------------------------------------------------
-- 2. Distributed tables: every tenant table, by org_id, co-located with users.
--
-- Requirements Citus checks here, and that the schema already meets (the lint keeps it so):
--  - the primary key and every unique constraint/index include the distribution column: all
--    primary keys are (org_id, ...); users_org_id_email_key is (org_id, lower(email)) WHERE
--    deleted_at IS NULL; api_keys_org_id_user_id_name_key is (org_id, user_id, lower(name)) WHERE
--    ...: all fine. The two exceptions are removed in step 3 before api_keys is distributed.
--  - a foreign key between distributed tables includes the distribution column on both sides and
--    the tables are co-located: api_keys_user_fkey (org_id, user_id) -> users (org_id, id),
--    api_keys_replaced_by_fkey (org_id, replaced_by) -> api_keys (org_id, id),
--    api_key_usage_api_key_fkey (org_id, api_key_id) -> api_keys (org_id, id),
--    task_states_workflow_fkey (org_id, workflow_exec_id) -> workflow_states (org_id, workflow_exec_id),
--    task_states_parent_fkey (org_id, parent_state_id) -> task_states (org_id, task_exec_id).
--  - a referenced table is distributed before the tables that refer to it: hence the order below.
--
-- To check on the target Citus version before relying on it (not verifiable here):
--  - api_keys_replaced_by_fkey is DEFERRABLE INITIALLY DEFERRED and uses PostgreSQL 15's
--    ON DELETE SET NULL (replaced_by) column list; if Citus refuses either, drop the constraint
--    before distributing and re-add it as a plain composite foreign key (rotation would then
--    insert the successor before pointing the old key at it).
--  - api_key_usage is UNLOGGED; its shards are created unlogged too (counters may be lost in a
--    worker crash, as on one server).
--  - The statement triggers refuse_writes_of_inactive_org need citus.enable_unsafe_triggers = on
--    (triggers on distributed tables run on the shards, where organizations is a local replica).
select create_distributed_table('users', 'org_id');
-- api_keys is distributed in step 3, once its two global unique constraints are gone.

select create_distributed_table('workflow_states', 'org_id', colocate_with => 'users');
select create_distributed_table('task_states', 'org_id', colocate_with => 'users');
select create_distributed_table('schedules', 'org_id', colocate_with => 'users');

-- ---------------------------------------------------------------------------------------------
-- 3. API keys: the two constraints Citus cannot keep, and the routing table that replaces them.
--
-- api_keys_prefix_key UNIQUE (prefix) and api_keys_key_hash_key UNIQUE (key_hash) do not include
-- org_id, on purpose: a key is presented as es_<prefix>_<secret> WITHOUT its organization, so the
-- prefix must find it among all organizations, and must never be reused anywhere. Citus cannot
-- enforce a unique constraint without the distribution column across shards (create_distributed_table
-- refuses the table while they exist).
--
-- They move to api_key_prefixes, a REFERENCE table: one row per key ever issued, keyed by prefix.
-- Its primary key and unique key_hash enforce the global uniqueness exactly as before (a
-- reference table is one logical table), and its org_id routes a presented key to the shard of its
-- organization. It holds no secret beyond what api_keys holds (the SHA-256 digest). It is written
-- by the application in the same transaction that inserts into api_keys (ApiKeysRepository.issue
-- and rotate; Citus commits the reference-table row and the shard row together with two-phase
-- commit). There is no foreign key to api_keys (a reference table cannot refer to a distributed
-- one); rows are never deleted when a key is revoked or soft-deleted (a prefix is never reused),
-- and go away only with their organization (purge), as the api_keys rows do.
--
-- The alternative, a prefix that embeds a shard hint (e.g. a short per-organization code as the
-- first characters of the prefix), routes without a lookup but leaks which keys share an
-- organization, still needs a code -> org_id table, and cannot enforce prefix uniqueness across
-- organizations by itself. The lookup table is one primary-key read on a node-local replica.
create table api_key_prefixes (
  prefix text not null,
  key_hash bytea not null,
  org_id uuid not null,
  api_key_id uuid not null,
  constraint api_key_prefixes_pkey primary key (prefix),
  constraint api_key_prefixes_key_hash_key unique (key_hash),
  constraint api_key_prefixes_org_id_fkey foreign key (org_id) references organizations (id) on delete cascade
);
comment on table api_key_prefixes is 'Citus: global routing and uniqueness of API key prefixes (prefix -> org_id, api_key_id). Reference table.';
-- verify_api_key reads every row; a tenant scope sees and adds only its own organization's keys
-- (issue, rotate). Row-level security as on every tenant table (enabled, not forced: the owner
-- backfills below).
alter table api_key_prefixes enable row level security;
create policy api_key_prefixes_key_verifier on api_key_prefixes for select to app_key_verifier using (true);
create policy api_key_prefixes_tenant on api_key_prefixes to app_tenant
  using (org_id = (select current_org_id()))
  with check (org_id = (select current_org_id()));
grant select on api_key_prefixes to app_key_verifier;
grant select, insert on api_key_prefixes to app_tenant;

-- Backfill from the keys that exist, while the old constraints still guarantee uniqueness.
insert into api_key_prefixes (prefix, key_hash, org_id, api_key_id)
select prefix, key_hash, org_id, id from api_keys;

select create_reference_table('api_key_prefixes');

-- The old constraints go; the prefix stays indexed per organization for listings.
alter table api_keys drop constraint api_keys_prefix_key;
alter table api_keys drop constraint api_keys_key_hash_key;
create index api_keys_org_id_prefix_idx on api_keys (org_id, prefix);

select create_distributed_table('api_keys', 'org_id', colocate_with => 'users');
select create_distributed_table('api_key_usage', 'org_id', colocate_with => 'users');

-- ---------------------------------------------------------------------------------------------
-- 4. verify_api_key: resolve the organization first, then stay on its shard.
--
-- The function stays SECURITY DEFINER, owned by app_key_verifier, with the same signature and
-- outcomes. Only its first statement changes: instead of one lookup by prefix across every
-- organization's api_keys (which on Citus would be a query on every shard), it reads the
-- reference table (node-local, primary key), rejects an unknown prefix or a wrong digest at once
-- (NOT_FOUND, without touching any shard), and then runs the existing join with
-- `k.org_id = v_org and k.id = v_key` (a single-shard router query: users is co-located,
-- organizations is a reference table). The counter INSERT ... ON CONFLICT, the clean-up DELETE
-- and the last_used_at UPDATE already filter on org_id: each is routed to the same shard.
--
--   select r.org_id, r.api_key_id into v_org, v_key
--     from api_key_prefixes r
--    where r.prefix = p_prefix and r.key_hash = p_key_hash;
--   if not found then return NOT_FOUND; end if;
--   select ... from api_keys k join users u on u.org_id = k.org_id and u.id = k.user_id
--                    join organizations o on o.id = k.org_id
--    where k.org_id = v_org and k.id = v_key;
--   ... the rest unchanged ...
--
-- The replacement function is a migration of its own (create or replace function
-- verify_api_key ...), written when the move to Citus is scheduled; it is sketched here only.
-- To save the round trips to the worker, the part after the lookup can become a function
-- delegated to the organization's worker: create_distributed_function(
-- 'verify_api_key_in_org(uuid,uuid,bytea,timestamptz)', distribution_arg_name => 'p_org_id',
-- colocate_with => 'users'), called by verify_api_key with the resolved org_id.

-- ---------------------------------------------------------------------------------------------
-- 5. Tenant scopes on Citus (application changes, not SQL run here; see docs/scaling-out.md).
--
--  - withOrg sets app.org_id with set_config(..., true), which Citus does not send to workers.
--    With citus.propagate_set_commands = 'local', `SET LOCAL app.org_id = '<uuid>'` is propagated
--    to the workers of the transaction, so the row-level security policies see it on the shards.
--  - The policies filter on org_id = (select current_org_id()), a sub-select the router planner
--    cannot use to pick a shard: the repositories must also say `org_id = $n` with the scope's
--    organization, so that every tenant query is a single-shard query. Row-level security stays as
--    the second line of defence.
--  - The org_id column defaults to current_org_id(); an INSERT must name org_id explicitly so the
--    coordinator can route the row (it does not evaluate the default on the worker).
--  - current_org_id(), visible_org_id(), enter_org_scope(), refuse_writes_of_inactive_org(), set_updated_at()
--    and uuid_generate_v7() must exist on every worker: Citus 11+ propagates functions created
--    after the extension; those created before it are distributed with
--    create_distributed_function('<signature>') (no distribution argument).
