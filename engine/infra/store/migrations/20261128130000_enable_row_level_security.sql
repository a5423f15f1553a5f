-- Makes PostgreSQL itself keep organizations apart: row-level security on every tenant table, for the login role app_tenant.
--
-- Tenant traffic logs in as `app_tenant` (a role that owns nothing, is a member of nothing and
-- cannot bypass row-level security) or, on the embedded database, which has one user, enters it
-- with SET LOCAL ROLE. A tenant scope is one transaction that calls enter_org_scope(<org>): it
-- sets `app.org_id` and `app.org_visible` LOCAL to the transaction, so nothing outlives it.
--
-- The policies are plain equalities with no sub-select (Citus refuses sub-selects in policies
-- on distributed tables): USING (org_id = visible_org_id()), WITH CHECK (org_id = current_org_id()).
-- Whether the organization is live is decided once per scope, by enter_org_scope(), instead of
-- once per statement: a soft-deleted organization's scope reads nothing. Writes of a suspended
-- or deleted organization are refused by a statement trigger that reads the organization itself.
-- RLS is FORCED, so it applies to the tables' owner too; foreign-key checks and cascades bypass
-- it by design, which is what lets an operator purge an organization as the owner.
--
-- Nothing a tenant does may outlive its transaction: TEMP is revoked from PUBLIC on this
-- database (no temp table can shadow a store table through pg_temp), and every function is
-- schema-qualified or has a fixed search_path with pg_temp last.
--
-- Roles belong to the whole cluster, not to this database (tests create many databases on one
-- server): app_tenant is created only if missing, and the down migration revokes what this
-- database granted it instead of dropping it. Creating it, or giving it LOGIN, needs CREATEROLE.
-- Up Migration
set local statement_timeout = '60s';
-- Every strong lock this migration needs, at once and in the order writers take them (a row,
-- then the parent its foreign key checks), so that it cannot deadlock with them; the runner's
-- short lock_timeout and retries keep writers from queueing behind it for long.
lock table workflow_states, task_states, schedules, api_keys, api_key_prefixes, users, organizations in access exclusive mode;

do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'app_tenant') then
    -- No password: the operator sets one (ALTER ROLE app_tenant PASSWORD ...); until then it
    -- can log in only where pg_hba.conf trusts it.
    create role app_tenant login nosuperuser nobypassrls noinherit nocreatedb nocreaterole noreplication;
  elsif not (select rolcanlogin from pg_catalog.pg_roles where rolname = 'app_tenant') then
    -- A role made by an earlier version of this migration, when tenants entered it by SET ROLE.
    alter role app_tenant login;
  end if;
  -- Nobody but the owner creates temporary objects here: a temp table named like a store table
  -- would come first on a tenant's search path. Needs the database's owner; where the migration
  -- runs as someone else, REVOKE only warns, and openStore and doctor report the privilege.
  execute pg_catalog.format('revoke temporary on database %I from public', pg_catalog.current_database());
  execute pg_catalog.format('revoke temporary on database %I from app_tenant', pg_catalog.current_database());
end
$$;

-- The organization the current tenant scope names (setting app.org_id), or NULL outside one.
-- Inlined by PostgreSQL into every policy: schema-qualified, no SET clause.
create function current_org_id() returns uuid
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('app.org_id', true), '')::uuid
$$;
comment on function current_org_id() is 'The organization of the current tenant scope (setting app.org_id), or NULL.';

-- The same organization, but NULL unless enter_org_scope() found it live (not soft-deleted):
-- what the policies let a scope read.
create function visible_org_id() returns uuid
  language sql stable parallel safe
as $$
  select case when pg_catalog.current_setting('app.org_visible', true) = 'on'
              then nullif(pg_catalog.current_setting('app.org_id', true), '')::uuid end
$$;
comment on function visible_org_id() is 'The organization of the current tenant scope while it is live (not soft-deleted), else NULL.';

-- Opens a tenant scope: sets app.org_id and app.org_visible LOCAL to the transaction. SECURITY
-- DEFINER because a scope cannot see its organization's row before it is in the scope; it reads
-- only that row, and writes only these two settings. The settings survive the function's own
-- SET clause: only the parameters named in a SET clause are restored when the function returns.
-- SET LOCAL rather than set_config(): on Citus, with citus.propagate_set_commands = 'local'
-- (set by the distribute command), a SET LOCAL reaches the workers that the transaction uses,
-- where the policies and triggers read it; set_config() stays on the coordinator.
create function enter_org_scope(p_org uuid) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  live boolean;
begin
  select o.deleted_at is null into live from public.organizations o where o.id = p_org;
  execute pg_catalog.format('set local app.org_id = %L', coalesce(p_org::text, ''));
  execute pg_catalog.format('set local app.org_visible = %L', case when live then 'on' else 'off' end);
end
$$;
comment on function enter_org_scope(uuid) is 'Enters the scope of an organization for the rest of the transaction (settings app.org_id, app.org_visible).';

-- Writes of a suspended or soft-deleted organization are refused with a clear error (SQLSTATE
-- ES001 suspended, ES002 deleted or unknown) rather than silently matching no row. A statement
-- trigger, so a write that would touch no row is refused too. Outside a tenant scope (operator
-- work, such as purging an organization) it lets everything through. It runs as the caller:
-- a scope's policy on organizations shows its own organization unless soft-deleted, which reads
-- here as "not found".
-- With the argument 'revocations_allowed' (api_keys), an UPDATE in a suspended organization is
-- left to the row trigger below, which lets through only revocations: a key that leaked must
-- be revocable while its organization is suspended, or it would work again on activation.
create function refuse_writes_of_inactive_org() returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  org constant uuid := public.current_org_id();
  org_status text;
  org_deleted_at timestamptz;
begin
  if org is null then
    return null;
  end if;
  select o.status, o.deleted_at into org_status, org_deleted_at from public.organizations o where o.id = org;
  if not found or org_deleted_at is not null then
    raise exception 'the organization does not exist or was deleted' using errcode = 'ES002';
  end if;
  if org_status <> 'active' then
    if tg_op = 'UPDATE' and tg_nargs > 0 and tg_argv[0] = 'revocations_allowed' then
      return null;
    end if;
    raise exception 'the organization is suspended: its data can be read but not changed' using errcode = 'ES001';
  end if;
  return null;
end
$$;
comment on function refuse_writes_of_inactive_org() is 'Statement trigger: refuses writes in the scope of a suspended or deleted organization.';
revoke execute on function refuse_writes_of_inactive_org() from public;

-- In a suspended organization, an update of a key may only revoke it and, at most, soft-delete
-- it (updated_at is stamped by set_updated_at after this trigger). Issuing and rotating insert
-- a key, and stay refused by the statement trigger.
create function refuse_api_key_changes_but_revocation_of_suspended_org() returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
declare
  org constant uuid := public.current_org_id();
  org_status text;
begin
  if org is null then
    return new;
  end if;
  select o.status into org_status from public.organizations o where o.id = org;
  if org_status is distinct from 'suspended' then
    return new;
  end if;
  if new.status = 'revoked'
     and (old.deleted_at is null or new.deleted_at is not distinct from old.deleted_at)
     and pg_catalog.to_jsonb(new) - array['status', 'deleted_at', 'updated_at'] = pg_catalog.to_jsonb(old) - array['status', 'deleted_at', 'updated_at'] then
    return new;
  end if;
  raise exception 'the organization is suspended: its API keys can be revoked, nothing else changed' using errcode = 'ES001';
end
$$;
comment on function refuse_api_key_changes_but_revocation_of_suspended_org() is
  'Row trigger on api_keys: in a suspended organization, lets through only updates that revoke or soft-delete a key.';
revoke execute on function refuse_api_key_changes_but_revocation_of_suspended_org() from public;

revoke execute on function current_org_id() from public;
revoke execute on function visible_org_id() from public;
revoke execute on function enter_org_scope(uuid) from public;
grant execute on function current_org_id(), visible_org_id(), enter_org_scope(uuid), uuid_generate_v7() to app_tenant;
grant usage on schema public to app_tenant;
grant select on organizations, permissions, role_permissions to app_tenant;
grant select, insert, update, delete on users, api_keys, workflow_states, task_states, schedules to app_tenant;
-- Issuing a key registers its prefix; a prefix, once issued, is never changed or removed.
grant select, insert on api_key_prefixes to app_tenant;

alter table organizations enable row level security;
create policy organizations_tenant_read on organizations for select to app_tenant
  using (id = visible_org_id());

alter table users enable row level security;
alter table users force row level security;
create policy users_tenant_isolation on users to app_tenant
  using (org_id = visible_org_id())
  with check (org_id = current_org_id());
create trigger users_refuse_writes_of_inactive_org before insert or update or delete on users
  for each statement execute function refuse_writes_of_inactive_org();
alter table users alter column org_id set default current_org_id();

alter table api_keys enable row level security;
alter table api_keys force row level security;
create policy api_keys_tenant_isolation on api_keys to app_tenant
  using (org_id = visible_org_id())
  with check (org_id = current_org_id());
create trigger api_keys_refuse_writes_of_inactive_org before insert or update or delete on api_keys
  for each statement execute function refuse_writes_of_inactive_org('revocations_allowed');
create trigger api_keys_refuse_changes_but_revocation_of_suspended_org before update on api_keys
  for each row execute function refuse_api_key_changes_but_revocation_of_suspended_org();
alter table api_keys alter column org_id set default current_org_id();

alter table api_key_prefixes enable row level security;
alter table api_key_prefixes force row level security;
create policy api_key_prefixes_tenant_isolation on api_key_prefixes to app_tenant
  using (org_id = visible_org_id())
  with check (org_id = current_org_id());
create trigger api_key_prefixes_refuse_writes_of_inactive_org before insert or update or delete on api_key_prefixes
  for each statement execute function refuse_writes_of_inactive_org();
alter table api_key_prefixes alter column org_id set default current_org_id();

alter table workflow_states enable row level security;
alter table workflow_states force row level security;
create policy workflow_states_tenant_isolation on workflow_states to app_tenant
  using (org_id = visible_org_id())
  with check (org_id = current_org_id());
create trigger workflow_states_refuse_writes_of_inactive_org before insert or update or delete on workflow_states
  for each statement execute function refuse_writes_of_inactive_org();
-- From here on a row's organization comes from the tenant scope, never from a constant.
alter table workflow_states alter column org_id set default current_org_id();

alter table task_states enable row level security;
alter table task_states force row level security;
create policy task_states_tenant_isolation on task_states to app_tenant
  using (org_id = visible_org_id())
  with check (org_id = current_org_id());
create trigger task_states_refuse_writes_of_inactive_org before insert or update or delete on task_states
  for each statement execute function refuse_writes_of_inactive_org();
alter table task_states alter column org_id set default current_org_id();

alter table schedules enable row level security;
alter table schedules force row level security;
create policy schedules_tenant_isolation on schedules to app_tenant
  using (org_id = visible_org_id())
  with check (org_id = current_org_id());
create trigger schedules_refuse_writes_of_inactive_org before insert or update or delete on schedules
  for each statement execute function refuse_writes_of_inactive_org();
alter table schedules alter column org_id set default current_org_id();

-- Down Migration
set local statement_timeout = '60s';
lock table workflow_states, task_states, schedules, api_keys, api_key_prefixes, users, organizations in access exclusive mode;

alter table schedules alter column org_id set default '00000000-0000-7000-8000-000000000001';
drop trigger schedules_refuse_writes_of_inactive_org on schedules;
drop policy schedules_tenant_isolation on schedules;
alter table schedules no force row level security;
alter table schedules disable row level security;

alter table task_states alter column org_id set default '00000000-0000-7000-8000-000000000001';
drop trigger task_states_refuse_writes_of_inactive_org on task_states;
drop policy task_states_tenant_isolation on task_states;
alter table task_states no force row level security;
alter table task_states disable row level security;

alter table workflow_states alter column org_id set default '00000000-0000-7000-8000-000000000001';
drop trigger workflow_states_refuse_writes_of_inactive_org on workflow_states;
drop policy workflow_states_tenant_isolation on workflow_states;
alter table workflow_states no force row level security;
alter table workflow_states disable row level security;

alter table api_keys alter column org_id drop default;
drop trigger api_keys_refuse_changes_but_revocation_of_suspended_org on api_keys;
drop trigger api_keys_refuse_writes_of_inactive_org on api_keys;
drop policy api_keys_tenant_isolation on api_keys;
alter table api_keys no force row level security;
alter table api_keys disable row level security;

alter table api_key_prefixes alter column org_id drop default;
drop trigger api_key_prefixes_refuse_writes_of_inactive_org on api_key_prefixes;
drop policy api_key_prefixes_tenant_isolation on api_key_prefixes;
alter table api_key_prefixes no force row level security;
alter table api_key_prefixes disable row level security;

alter table users alter column org_id drop default;
drop trigger users_refuse_writes_of_inactive_org on users;
drop policy users_tenant_isolation on users;
alter table users no force row level security;
alter table users disable row level security;

drop policy organizations_tenant_read on organizations;
alter table organizations disable row level security;

revoke select, insert on api_key_prefixes from app_tenant;
revoke select, insert, update, delete on users, api_keys, workflow_states, task_states, schedules from app_tenant;
revoke select on organizations, permissions, role_permissions from app_tenant;
revoke usage on schema public from app_tenant;

revoke execute on function current_org_id(), visible_org_id(), enter_org_scope(uuid), uuid_generate_v7() from app_tenant;
drop function refuse_api_key_changes_but_revocation_of_suspended_org();
drop function refuse_writes_of_inactive_org();
drop function enter_org_scope(uuid);
drop function visible_org_id();
drop function current_org_id();
-- TEMP back to PUBLIC, as PostgreSQL creates a database. app_tenant keeps LOGIN: other
-- databases of the cluster may use it.
do $$
begin
  execute pg_catalog.format('grant temporary on database %I to public', pg_catalog.current_database());
end
$$;
