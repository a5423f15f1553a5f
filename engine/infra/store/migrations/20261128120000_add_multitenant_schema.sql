-- Adds the tenancy model: organizations, their users and API keys, and the role -> permission mapping.
--
-- Conventions (see DESIGN.md): every tenant table leads its primary key with org_id and refers to
-- other tenant tables through composite foreign keys that include org_id, so the database itself
-- refuses a row that points into another organization. Constraint and index names are explicit:
-- errors.ts maps them to domain errors by name.
-- Up Migration
set local statement_timeout = '60s';

-- Time-ordered UUIDs (version 7): new rows land at the right edge of their indexes instead of at
-- random pages. PostgreSQL 15 has no uuidv7(), so both backends use this one.
-- Functions here and below that run on every row carry no SET search_path: it would stop
-- PostgreSQL from inlining them and cost a settings save and restore on every call. Instead
-- every name in them is schema-qualified, so no search_path (and no pg_temp) can redirect them.
-- They run with the caller's rights (no SECURITY DEFINER). EXECUTE is granted to exactly the
-- roles that need it, never to PUBLIC.
create function uuid_generate_v7() returns uuid
  language sql volatile parallel safe
as $$
  select pg_catalog.encode(
    pg_catalog.set_bit(pg_catalog.set_bit(
      pg_catalog.overlay(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
              pg_catalog.substr(pg_catalog.int8send((pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint), 3),
              1, 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;
comment on function uuid_generate_v7() is 'A version 7 (time-ordered) UUID: 48 bits of Unix milliseconds, then random bits.';
revoke execute on function uuid_generate_v7() from public;

-- Callers never set updated_at; this trigger does, so it cannot be forgotten or forged.
create function set_updated_at() returns trigger
  language plpgsql
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
comment on function set_updated_at() is 'BEFORE UPDATE trigger: stamps updated_at with the transaction time.';
-- A trigger function's EXECUTE is checked when a trigger is created, not when it fires.
revoke execute on function set_updated_at() from public;

create table organizations (
  id uuid not null default uuid_generate_v7(),
  name text not null,
  temporal_namespace text not null,
  status text not null default 'active',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint organizations_pkey primary key (id),
  -- Written as a flat AND (no BETWEEN inside it): pg_dump prints a nested AND that reads back
  -- flat, and schema.sql must rebuild exactly this constraint.
  constraint organizations_name_check
    check (char_length(name) >= 1 and char_length(name) <= 100 and name = btrim(name) and name !~ '[[:cntrl:]]'),
  -- A Temporal namespace is a DNS-label-like name: lowercase letters, digits, '.', '-' and '_'.
  constraint organizations_temporal_namespace_check
    check (temporal_namespace ~ '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$'),
  constraint organizations_status_check check (status in ('active', 'suspended')),
  constraint organizations_deleted_at_check check (deleted_at is null or deleted_at >= created_at),
  -- A namespace stays with its organization while it is soft-deleted, so that a restore gets
  -- it back: unique over all rows.
  constraint organizations_temporal_namespace_key unique (temporal_namespace)
);
comment on table organizations is 'Tenants. Global table: every tenant-owned row carries the org_id of one of these.';

-- Names as people read them: case-insensitive, and free again once the holder is soft-deleted.
create unique index organizations_name_key on organizations (lower(name)) where deleted_at is null;
create index organizations_created_at_idx on organizations (created_at, id);

create trigger organizations_set_updated_at before update on organizations
  for each row execute function set_updated_at();

create table users (
  org_id uuid not null,
  id uuid not null default uuid_generate_v7(),
  email text not null,
  -- The email as uniqueness and lookups see it. A column, not an index on lower(email): under
  -- row-level security a condition reaches an index only if every function in it is
  -- LEAKPROOF, and lower() is not, so lookups by lower(email) would scan the organization.
  email_lower text generated always as (lower(email)) stored,
  role text not null,
  status text not null default 'active',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint users_pkey primary key (org_id, id),
  -- Purging an organization (hard delete) removes its users: that is the purge path.
  -- The normal path is a soft delete, which leaves this untouched.
  constraint users_org_id_fkey foreign key (org_id) references organizations (id) on delete cascade,
  constraint users_email_check
    check (char_length(email) <= 254 and email ~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+\.[^@[:space:][:cntrl:]]+$'),
  constraint users_role_check check (role in ('admin', 'manager', 'customer')),
  constraint users_status_check check (status in ('active', 'suspended')),
  constraint users_deleted_at_check check (deleted_at is null or deleted_at >= created_at)
);
comment on table users is 'People of one organization. Email is unique per organization among live users, ignoring case.';

create unique index users_org_id_email_key on users (org_id, email_lower) where deleted_at is null;
create index users_org_id_created_at_idx on users (org_id, created_at, id);
create index users_org_id_status_idx on users (org_id, status);

create trigger users_set_updated_at before update on users
  for each row execute function set_updated_at();

-- Every API key prefix ever issued, with its organization. A key is presented without its
-- organization, so verification finds the organization here first, then the key in that
-- organization's rows (on Citus: a reference table, read on the node, then one shard). Its
-- primary key keeps a prefix from being issued twice across organizations; rows outlive their
-- key, so a prefix is never reused, and go with their organization (purge).
-- No foreign key to organizations: on Citus, a write to a reference table that refers to another
-- locks that table too, which takes write rights on organizations that tenants must not have.
-- Tenants register prefixes only for their own live organization (row-level security and the
-- inactive-organization trigger), and a purge removes the organization's prefixes itself.
create table api_key_prefixes (
  prefix text not null,
  org_id uuid not null,
  constraint api_key_prefixes_pkey primary key (prefix),
  -- What each organization's keys refer to (a key names its own organization's prefix).
  constraint api_key_prefixes_org_id_prefix_key unique (org_id, prefix),
  constraint api_key_prefixes_prefix_check check (prefix ~ '^[A-Za-z0-9]{8,32}$')
);
comment on table api_key_prefixes is 'Every API key prefix ever issued and its organization: global uniqueness, and where verification looks first.';

create table api_keys (
  org_id uuid not null,
  id uuid not null default uuid_generate_v7(),
  user_id uuid not null,
  prefix text not null,
  key_hash bytea not null,
  name text not null,
  expires_at timestamptz,
  -- squawk-ignore prefer-bigint-over-int -- bounded to 1..1,000,000 by the check below
  rate_limit_per_hour integer not null default 1000,
  status text not null default 'active',
  last_used_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint api_keys_pkey primary key (org_id, id),
  -- A key acts for its user: when the user row is removed (organization purge), so is the key.
  -- Composite, so a key can only belong to a user of its own organization.
  constraint api_keys_user_fkey foreign key (org_id, user_id) references users (org_id, id) on delete cascade,
  constraint api_keys_prefix_check check (prefix ~ '^[A-Za-z0-9]{8,32}$'),
  -- SHA-256 of the whole key; the key itself is never stored.
  constraint api_keys_key_hash_check check (octet_length(key_hash) = 32),
  constraint api_keys_name_check check (char_length(name) >= 1 and char_length(name) <= 100 and name = btrim(name) and name !~ '[[:cntrl:]]'),
  constraint api_keys_rate_limit_per_hour_check check (rate_limit_per_hour between 1 and 1000000),
  constraint api_keys_status_check check (status in ('active', 'revoked')),
  constraint api_keys_expires_at_check check (expires_at is null or expires_at > created_at),
  constraint api_keys_deleted_at_check check (deleted_at is null or deleted_at >= created_at),
  -- A prefix is registered in api_key_prefixes, for this organization, before its key exists;
  -- that table's primary key makes it unique over every organization and every row ever issued,
  -- deleted ones included, so an old key can never come to resolve to a new one. (The digest of
  -- a key with a unique prefix is unique too: it hashes the whole key, prefix included.)
  constraint api_keys_org_id_prefix_key unique (org_id, prefix),
  constraint api_keys_prefix_fkey foreign key (org_id, prefix) references api_key_prefixes (org_id, prefix)
);
comment on table api_keys is 'API keys of users. Only a SHA-256 digest of each key is kept; the prefix finds it.';
-- Planned as for a large organization, like the engine's tables (see migration 20261128120100).
alter table users alter column org_id set (n_distinct = -0.0001);
alter table api_keys alter column org_id set (n_distinct = -0.0001);

create index api_keys_org_id_user_id_idx on api_keys (org_id, user_id);
create index api_keys_org_id_created_at_idx on api_keys (org_id, created_at, id);
create index api_keys_org_id_status_idx on api_keys (org_id, status);

-- Using a key writes last_used_at (at most once a minute); that is not a change of the key, so
-- updated_at keeps saying when the key was last changed (revoked, rotated, renamed).
create trigger api_keys_set_updated_at before update on api_keys
  for each row
  when ((pg_catalog.to_jsonb(old) - 'last_used_at') is distinct from (pg_catalog.to_jsonb(new) - 'last_used_at'))
  execute function set_updated_at();

create table permissions (
  key text not null,
  description text not null,
  constraint permissions_pkey primary key (key),
  constraint permissions_key_check check (key ~ '^[a-z]+:[a-z]+$')
);
comment on table permissions is 'Global, read-mostly: what can be done, as stable keys such as workflow:read.';

create table role_permissions (
  role text not null,
  permission text not null,
  constraint role_permissions_pkey primary key (role, permission),
  constraint role_permissions_role_check check (role in ('admin', 'manager', 'customer')),
  -- A permission in use cannot be removed by accident: revoke it from the roles first.
  constraint role_permissions_permission_fkey foreign key (permission) references permissions (key) on delete restrict
);
comment on table role_permissions is 'Global, read-mostly: which permissions each role grants.';

create index role_permissions_permission_idx on role_permissions (permission);

insert into permissions (key, description) values
  ('org:read', 'See the organization''s settings'),
  ('org:manage', 'Change the organization''s settings'),
  ('user:read', 'List and see users'),
  ('user:manage', 'Add, change, suspend and remove users'),
  ('apikey:read', 'List and see API keys'),
  ('apikey:manage', 'Issue, rotate and revoke API keys'),
  ('workflow:read', 'See workflow executions'),
  ('workflow:write', 'Change and delete workflow executions'),
  ('workflow:execute', 'Start, signal and cancel workflows'),
  ('task:read', 'See task executions'),
  ('task:write', 'Change and delete task executions'),
  ('schedule:read', 'See schedules'),
  ('schedule:write', 'Create, change and delete schedules');

-- admin: everything in its organization. manager: workflows, tasks, schedules and (customer)
-- users. customer: read and execute.
insert into role_permissions (role, permission)
select 'admin', key from permissions
union all
select 'manager', unnest(array[
  'org:read', 'user:read', 'user:manage',
  'workflow:read', 'workflow:write', 'workflow:execute',
  'task:read', 'task:write', 'schedule:read', 'schedule:write'])
union all
select 'customer', unnest(array[
  'org:read', 'workflow:read', 'workflow:execute', 'task:read', 'schedule:read']);

-- Down Migration
set local statement_timeout = '60s';

-- Rolling back must never destroy tenant data: refuse while any organization remains. The
-- default organization is left out: reverting 20261128120100 deletes it first (and refuses while
-- it has users), and migrate down checks every guard of a run before the run's first step.
-- engine-store: down-guard
do $$
begin
  if exists (select 1 from organizations where id <> '00000000-0000-7000-8000-000000000001') then
    raise exception 'refusing to drop the tenancy tables: organizations other than default still exist'
      using errcode = 'object_not_in_prerequisite_state',
            hint = 'purge every organization first; the rollback would otherwise delete their users and keys';
  end if;
end
$$;

-- squawk-ignore ban-drop-table -- the rollback of the creates above; guarded by the check above
drop table role_permissions;
-- squawk-ignore ban-drop-table -- as above
drop table permissions;
-- squawk-ignore ban-drop-table -- as above
drop table api_keys;
-- squawk-ignore ban-drop-table -- as above
drop table api_key_prefixes;
-- squawk-ignore ban-drop-table -- as above
drop table users;
-- squawk-ignore ban-drop-table -- as above
drop table organizations;
drop function set_updated_at();
drop function uuid_generate_v7();
