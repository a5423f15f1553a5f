-- Makes PostgreSQL itself keep organizations apart: row-level security on every tenant table, entered through the role app_tenant.
--
-- Tenant work runs as `app_tenant` inside one transaction that sets `app.org_id`
-- (`SET LOCAL ROLE app_tenant; SELECT set_config('app.org_id', <org>, true)`), so nothing
-- outlives the transaction on a pooled connection. The policies are written for app_tenant only:
-- any other role that is not a superuser or BYPASSRLS sees no tenant rows at all, because RLS is
-- FORCED (it applies to the tables' owner too). Foreign-key checks and cascades bypass RLS by
-- design, which is what lets an operator purge an organization as the owner.
--
-- Roles belong to the whole cluster, not to this database (tests create many databases on one
-- server): app_tenant is created only if missing, and the down migration revokes what this
-- database granted it instead of dropping it.
-- Up Migration
set local statement_timeout = '60s';
-- Every strong lock this migration needs, at once and in the order writers take them (a row,
-- then the parent its foreign key checks), so that it cannot deadlock with them; the runner's
-- short lock_timeout and retries keep writers from queueing behind it for long.
lock table workflow_states, task_states, schedules, api_keys, users, organizations in access exclusive mode;

do $$
begin
  if not exists (select from pg_roles where rolname = 'app_tenant') then
    create role app_tenant nologin nosuperuser nobypassrls noinherit;
  end if;
  -- A schema owner that is not a superuser must be a member to SET ROLE app_tenant.
  if not (select rolsuper from pg_roles where rolname = current_user) then
    execute format('grant app_tenant to %I', current_user);
  end if;
end
$$;

-- The organization of the current tenant scope, or NULL outside one (then policies match no row).
-- No SET clause and fully qualified, so that PostgreSQL can inline it: every tenant statement
-- evaluates it, and a SET clause alone costs more than the query it guards.
create function current_org_id() returns uuid
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('app.org_id', true), '')::uuid
$$;
comment on function current_org_id() is 'The organization of the current tenant scope (setting app.org_id), or NULL.';

-- Runs as the caller (app_tenant), whose policy on organizations shows its own organization
-- only while it is not soft-deleted: no SECURITY DEFINER and no SET clause, whose function-call
-- overhead every tenant statement would pay. PL/pgSQL, because it keeps its query's plan for the
-- session, where an SQL function with a sub-query would be planned again at every statement.
create function current_org_is_visible() returns boolean
  language plpgsql stable parallel safe
as $$
begin
  return exists (select 1 from public.organizations o where o.id = public.current_org_id() and o.deleted_at is null);
end
$$;
comment on function current_org_is_visible() is 'Whether the current tenant scope names a live (not soft-deleted) organization.';

-- Writes of a suspended or soft-deleted organization are refused with a clear error (SQLSTATE
-- ES001 suspended, ES002 deleted or unknown) rather than silently matching no row. A statement
-- trigger, so a write that would touch no row is refused too. Outside a tenant scope (operator
-- work, such as purging an organization) it lets everything through. It runs as the caller:
-- app_tenant's policy on organizations shows its own organization unless soft-deleted, which
-- reads here as "not found"; no SECURITY DEFINER or SET clause, whose cost every write would pay.
create function refuse_writes_of_inactive_org() returns trigger
  language plpgsql
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
    raise exception 'the organization is suspended: its data can be read but not changed' using errcode = 'ES001';
  end if;
  return null;
end
$$;
comment on function refuse_writes_of_inactive_org() is 'Statement trigger: refuses writes in the scope of a suspended or deleted organization.';

grant usage on schema public to app_tenant;
grant select on organizations, permissions, role_permissions to app_tenant;
grant select, insert, update, delete on users, api_keys, workflow_states, task_states, schedules to app_tenant;

alter table organizations enable row level security;
create policy organizations_tenant_read on organizations for select to app_tenant
  using (id = (select current_org_id()) and deleted_at is null);

-- The same policy on every tenant table. The sub-selects make PostgreSQL evaluate the setting
-- and the organization lookup once per statement (an InitPlan), not once per row.
alter table users enable row level security;
alter table users force row level security;
create policy users_tenant_isolation on users to app_tenant
  using (org_id = (select current_org_id()) and (select current_org_is_visible()))
  with check (org_id = (select current_org_id()));
create trigger users_refuse_writes_of_inactive_org before insert or update or delete on users
  for each statement execute function refuse_writes_of_inactive_org();
alter table users alter column org_id set default current_org_id();

alter table api_keys enable row level security;
alter table api_keys force row level security;
create policy api_keys_tenant_isolation on api_keys to app_tenant
  using (org_id = (select current_org_id()) and (select current_org_is_visible()))
  with check (org_id = (select current_org_id()));
create trigger api_keys_refuse_writes_of_inactive_org before insert or update or delete on api_keys
  for each statement execute function refuse_writes_of_inactive_org();
alter table api_keys alter column org_id set default current_org_id();

alter table workflow_states enable row level security;
alter table workflow_states force row level security;
create policy workflow_states_tenant_isolation on workflow_states to app_tenant
  using (org_id = (select current_org_id()) and (select current_org_is_visible()))
  with check (org_id = (select current_org_id()));
create trigger workflow_states_refuse_writes_of_inactive_org before insert or update or delete on workflow_states
  for each statement execute function refuse_writes_of_inactive_org();
-- From here on a row's organization comes from the tenant scope, never from a constant.
alter table workflow_states alter column org_id set default current_org_id();

alter table task_states enable row level security;
alter table task_states force row level security;
create policy task_states_tenant_isolation on task_states to app_tenant
  using (org_id = (select current_org_id()) and (select current_org_is_visible()))
  with check (org_id = (select current_org_id()));
create trigger task_states_refuse_writes_of_inactive_org before insert or update or delete on task_states
  for each statement execute function refuse_writes_of_inactive_org();
alter table task_states alter column org_id set default current_org_id();

alter table schedules enable row level security;
alter table schedules force row level security;
create policy schedules_tenant_isolation on schedules to app_tenant
  using (org_id = (select current_org_id()) and (select current_org_is_visible()))
  with check (org_id = (select current_org_id()));
create trigger schedules_refuse_writes_of_inactive_org before insert or update or delete on schedules
  for each statement execute function refuse_writes_of_inactive_org();
alter table schedules alter column org_id set default current_org_id();

-- Down Migration
set local statement_timeout = '60s';
lock table workflow_states, task_states, schedules, api_keys, users, organizations in access exclusive mode;

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
drop trigger api_keys_refuse_writes_of_inactive_org on api_keys;
drop policy api_keys_tenant_isolation on api_keys;
alter table api_keys no force row level security;
alter table api_keys disable row level security;

alter table users alter column org_id drop default;
drop trigger users_refuse_writes_of_inactive_org on users;
drop policy users_tenant_isolation on users;
alter table users no force row level security;
alter table users disable row level security;

drop policy organizations_tenant_read on organizations;
alter table organizations disable row level security;

revoke select, insert, update, delete on users, api_keys, workflow_states, task_states, schedules from app_tenant;
revoke select on organizations, permissions, role_permissions from app_tenant;
revoke usage on schema public from app_tenant;

drop function refuse_writes_of_inactive_org();
drop function current_org_is_visible();
drop function current_org_id();
