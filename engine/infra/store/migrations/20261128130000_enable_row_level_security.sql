-- Makes PostgreSQL itself keep organizations apart: row-level security on every tenant table, for the login role app_tenant.
--
-- Tenant traffic logs in as `app_tenant` (a role that owns nothing, is a member of nothing and
-- cannot bypass row-level security) or, on the embedded database, which has one user, enters it
-- with SET LOCAL ROLE. A tenant scope is one transaction that names its organization, signed by
-- the store, in settings LOCAL to the transaction (`app.org_id`, `app.org_expires`,
-- `app.org_token`; or through enter_org_scope(<org>, <expiry>, <proof>), which checks the
-- signature first), so nothing outlives it.
--
-- The organization is one the database can verify, not a setting anybody may write. The store
-- signs each scope it opens (an HMAC-SHA256 of the organization and an expiry, with the key in
-- tenant_scope_key, which only the owner, and so the application that holds the owner's
-- credentials, can read) and sets the organization, the expiry and the signature as app.org_id,
-- app.org_expires and app.org_token, LOCAL to the transaction. current_org_id() and
-- visible_org_id() believe app.org_id only with a signature that matches and has not expired:
-- SQL that sets app.org_id itself (set_config, SET LOCAL, a leaked tenant login) names no
-- organization at all and sees and writes nothing; with a signature of another organization's
-- (or of another expiry) it is refused (ES003). A signature copied out of a scope opens only
-- that scope's own organization, and only until it expires (minutes).
--
-- Checking a signature costs a few microseconds (a key read and two SHA-256), so the policies
-- call the functions once per statement, as an InitPlan: USING (org_id = (select
-- visible_org_id())), WITH CHECK (org_id = (select current_org_id())). Citus refuses
-- sub-selects in the policies of distributed tables: engine-store citus distribute turns them
-- into plain calls, evaluated on the workers from the settings the coordinator propagates
-- (citus/distribute.ts). visible_org_id() also looks the organization up, in the same
-- statement as the key: a soft-deleted organization's scope reads nothing. Writes of a
-- suspended or deleted organization are refused by a statement trigger that reads the
-- organization itself.
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

-- The key that signs tenant scopes, one row. Only the owner reads it: app_tenant and
-- PUBLIC have no privilege on it, and the functions below read it as their owner (SECURITY
-- DEFINER). The HMAC pads are kept with the secret, since PostgreSQL has SHA-256 but no XOR of
-- byte strings: HMAC(k, m) = sha256(outer_pad || sha256(inner_pad || m)), as RFC 2104 has it.
create table tenant_scope_key (
  -- squawk-ignore prefer-bigint-over-smallint -- one row, id 1 (the check below)
  id smallint not null default 1,
  secret bytea not null,
  inner_pad bytea not null,
  outer_pad bytea not null,
  created_at timestamptz not null default now(),
  constraint tenant_scope_key_pkey primary key (id),
  constraint tenant_scope_key_id_check check (id = 1),
  constraint tenant_scope_key_secret_check check (octet_length(secret) = 32),
  constraint tenant_scope_key_pads_check check (octet_length(inner_pad) = 64 and octet_length(outer_pad) = 64)
);
comment on table tenant_scope_key is 'The HMAC key that signs tenant scopes (app.org_token, checked by current_org_id and visible_org_id). Owner only.';
revoke all on tenant_scope_key from public;

-- Makes a new key (or replaces the key: every process holding the old one must reopen its
-- store, and every scope open at that moment loses its organization). 256 bits from the
-- server's strong random source (gen_random_uuid() gives 122 random bits each).
create function rotate_tenant_scope_key() returns void
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
as $$
declare
  secret constant bytea := sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'));
  padded constant bytea := secret || decode(repeat('00', 32), 'hex');
  inner_pad bytea := padded;
  outer_pad bytea := padded;
begin
  for i in 0..63 loop
    inner_pad := set_byte(inner_pad, i, get_byte(padded, i) # 54);  -- 0x36
    outer_pad := set_byte(outer_pad, i, get_byte(padded, i) # 92);  -- 0x5c
  end loop;
  insert into public.tenant_scope_key (id, secret, inner_pad, outer_pad) values (1, secret, inner_pad, outer_pad)
  on conflict on constraint tenant_scope_key_pkey
  do update set secret = excluded.secret, inner_pad = excluded.inner_pad, outer_pad = excluded.outer_pad, created_at = now();
end
$$;
comment on function rotate_tenant_scope_key() is 'Makes or replaces the key of tenant scopes; processes holding the old key must reopen their store.';
revoke execute on function rotate_tenant_scope_key() from public;
select rotate_tenant_scope_key();

-- scope_org() below finds the scope's organization by its id as text, before it has checked
-- the signature: see there. "C": the ids' text compared byte by byte.
-- squawk-ignore require-concurrent-index-creation -- organizations is new in this release (20261128120000), and locked above
create unique index organizations_id_text_key on organizations ((id::text) collate "C");

-- The organization of the current tenant scope: app.org_id, believed only with app.org_token,
-- the store's signature of it and of app.org_expires (hex of HMAC-SHA256(key,
-- 'enter:<org>:<expires>')), while the transaction began before that expiry. What it returns,
-- by p_need:
--   'org'     the organization's id;
--   'live'    the id, but NULL when the organization is soft-deleted (or unknown): what the
--             policies let a scope read;
--   'status'  'active', 'suspended' or 'deleted' (unknown reads as deleted): what the write
--             triggers refuse.
-- No organization named, or no token: NULL. A token that does not verify is an error (ES003),
-- not an empty scope, so that a process whose key was rotated away fails loudly; an expired one
-- is ES004.
-- A scope entered through enter_org_scope() carries whether the organization was live then, in
-- app.org_live and in the token (HMAC of 'live:<org>:<expires>:<on|off>'), so that 'live' reads
-- nothing but the key: on Citus the workers cannot read the organization (a read of a Citus
-- table inside a shard query is refused), so the store enters its scopes there that way.
-- SECURITY DEFINER, to read the key; called once per statement by the policies (see the top of
-- this file), through the wrappers below, and once per write statement by its trigger. The
-- key and the organization are read in one statement. No SET clause, which would cost each
-- call a search_path change and back: every name in it is schema-qualified, operators
-- included, so the caller's search_path cannot reach it (and no tenant may create objects
-- anywhere). Nothing is cast before the signature matches (the store signs only a canonical
-- uuid and a whole number): where the key's statement reads the organization's status too, it
-- finds the organization by its id as text (organizations_id_text_key), so that a value that is
-- not a uuid finds nothing, and then fails the signature, instead of failing a cast. Checking
-- the value's form first, as this did, cost more than the lookup: 40,000 instructions a call as
-- an anchored regular expression, 27,000 as its length, characters and hyphens (callgrind).
create function scope_org(p_need text) returns text
  language plpgsql stable parallel safe security definer
as $$
declare
  org constant pg_catalog.text := pg_catalog.current_setting('app.org_id', true);
  expires constant pg_catalog.text := pg_catalog.current_setting('app.org_expires', true);
  token constant pg_catalog.text := pg_catalog.current_setting('app.org_token', true);
  live_at_entry constant pg_catalog.text := nullif(pg_catalog.current_setting('app.org_live', true), '');
  found record;
begin
  if org is null or org operator(pg_catalog.=) '' or token is null or token operator(pg_catalog.=) '' then
    return null;
  end if;
  if p_need operator(pg_catalog.=) 'status' or (p_need operator(pg_catalog.=) 'live' and live_at_entry is null) then
    select k.inner_pad, k.outer_pad,
           coalesce((select case when o.deleted_at is null then o.status else 'deleted' end
                       from public.organizations o
                      where (o.id::pg_catalog.text) collate "C" operator(pg_catalog.=) org), 'deleted') as status
      into found
      from public.tenant_scope_key k where k.id operator(pg_catalog.=) 1;
  else
    select k.inner_pad, k.outer_pad, null::pg_catalog.text as status
      into found
      from public.tenant_scope_key k where k.id operator(pg_catalog.=) 1;
  end if;
  if found.inner_pad is null or expires is null
     or pg_catalog.encode(pg_catalog.sha256(found.outer_pad operator(pg_catalog.||) pg_catalog.sha256(found.inner_pad operator(pg_catalog.||)
          pg_catalog.convert_to(case when live_at_entry is null then pg_catalog.concat('enter:', org, ':', expires)
                                     else pg_catalog.concat('live:', org, ':', expires, ':', live_at_entry) end, 'UTF8'))), 'hex')
        operator(pg_catalog.<>) token then
    raise exception 'the tenant scope was not signed by this store' using errcode = 'ES003';
  end if;
  if expires::pg_catalog.int8 operator(pg_catalog.<=) pg_catalog.date_part('epoch', pg_catalog.now()) then
    raise exception 'the tenant scope''s signature has expired' using errcode = 'ES004';
  end if;
  if p_need operator(pg_catalog.=) 'status' then
    return found.status;
  end if;
  if p_need operator(pg_catalog.=) 'live'
     and (live_at_entry operator(pg_catalog.<>) 'on' or found.status operator(pg_catalog.=) 'deleted') then
    return null;
  end if;
  return org;
end
$$;
comment on function scope_org(text) is
  'The current tenant scope''s organization, verified (app.org_id, signed in app.org_token): its id (''org''), its id while live (''live'') or its status (''status''); NULL outside a scope.';

-- What the policies call: SQL bodies, inlined where they are called.
create function current_org_id() returns uuid
  language sql stable parallel safe
as $$
  select public.scope_org('org')::pg_catalog.uuid
$$;
comment on function current_org_id() is 'The organization of the current tenant scope (app.org_id, signed by the store in app.org_token), or NULL.';

create function visible_org_id() returns uuid
  language sql stable parallel safe
as $$
  select public.scope_org('live')::pg_catalog.uuid
$$;
comment on function visible_org_id() is 'The organization of the current tenant scope while it is live (not soft-deleted), else NULL.';

-- The organization the scope's settings name, unverified: only the column default of org_id,
-- so that a tenant's insert need not name it. It grants nothing: the policies' WITH CHECK
-- compares each row with current_org_id(), verified. A verified default would cost every row
-- a signature check (a few microseconds a row, where the policy pays once per statement).
create function requested_org_id() returns uuid
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('app.org_id', true), '')::pg_catalog.uuid
$$;
comment on function requested_org_id() is 'The organization app.org_id names, unverified: the default of org_id, checked by the policies.';

-- Enters a tenant scope, checked at once: the store's signature (p_proof, HMAC of
-- 'enter:<org>:<expiry>', expiry in Unix seconds, not passed), then whether the organization is
-- live, signed again with it ('live:<org>:<expiry>:<on|off>'), in app.org_id, app.org_expires,
-- app.org_live and app.org_token, LOCAL to the transaction; the policies check that signature in
-- every statement, and need not read the organization (see scope_org).
-- The store calls it on Citus, where the workers cannot read the organization and only SET LOCAL
-- reaches them (with citus.propagate_set_commands = 'local', which the store sets there first;
-- set_config() otherwise). On one server it sets app.org_id, app.org_expires and app.org_token
-- itself, with set_config(): the policies' check is the one that counts, and this call would
-- cost each scope a PL/pgSQL start. Anyone may call it for an early, clear error.
-- SECURITY DEFINER because only the owner reads the key. The settings survive the function:
-- only the parameters named in a SET clause are restored when a function returns, and this one
-- has none.
create function enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea) returns void
  language plpgsql volatile security definer
as $$
declare
  -- Every name below is schema-qualified, operators included, instead of a SET search_path
  -- clause, which would cost every scope a search_path change and back.
  org constant pg_catalog.text := p_org::pg_catalog.text;
  found record;
  token pg_catalog.text;
begin
  select k.inner_pad, k.outer_pad,
         (select case when o.deleted_at is null then 'on' else 'off' end from public.organizations o where o.id operator(pg_catalog.=) p_org) as live
    into found
    from public.tenant_scope_key k where k.id operator(pg_catalog.=) 1;
  if org is null or p_expires_at is null or p_proof is null or found.inner_pad is null
     or pg_catalog.sha256(found.outer_pad operator(pg_catalog.||) pg_catalog.sha256(found.inner_pad operator(pg_catalog.||)
          pg_catalog.convert_to(pg_catalog.concat('enter:', org, ':', p_expires_at), 'UTF8')))
        operator(pg_catalog.<>) p_proof then
    raise exception 'the tenant scope was not signed by this store' using errcode = 'ES003';
  end if;
  if p_expires_at operator(pg_catalog.<=) pg_catalog.date_part('epoch', pg_catalog.now()) then
    raise exception 'the tenant scope''s signature has expired' using errcode = 'ES004';
  end if;
  found.live := coalesce(found.live, 'off');
  token := pg_catalog.encode(pg_catalog.sha256(found.outer_pad operator(pg_catalog.||) pg_catalog.sha256(found.inner_pad operator(pg_catalog.||)
             pg_catalog.convert_to(pg_catalog.concat('live:', org, ':', p_expires_at, ':', found.live), 'UTF8'))), 'hex');
  if pg_catalog.current_setting('citus.propagate_set_commands', true) operator(pg_catalog.=) 'local' then
    execute pg_catalog.format('set local app.org_id = %L', org);
    execute pg_catalog.format('set local app.org_expires = %L', p_expires_at);
    execute pg_catalog.format('set local app.org_live = %L', found.live);
    execute pg_catalog.format('set local app.org_token = %L', token);
  else
    perform pg_catalog.set_config('app.org_id', org, true), pg_catalog.set_config('app.org_expires', p_expires_at::pg_catalog.text, true),
            pg_catalog.set_config('app.org_live', found.live, true), pg_catalog.set_config('app.org_token', token, true);
  end if;
end
$$;
comment on function enter_org_scope(uuid, bigint, bytea) is
  'Enters the scope of an organization, signed by the store, for the rest of the transaction (settings app.org_id, app.org_expires, app.org_live, app.org_token).';

-- Writes of a suspended or soft-deleted organization are refused with a clear error (SQLSTATE
-- ES001 suspended, ES002 deleted or unknown) rather than silently matching no row. A statement
-- trigger, so a write that would touch no row is refused too. Outside a tenant scope (operator
-- work, such as purging an organization) it lets everything through. The status comes from
-- scope_org('status'), the scope's organization verified and looked up in one call: a forged
-- scope is refused there (ES003) before anything about the organization it names is said.
-- No SET clause, which would cost each call a search_path change and back (measured with
-- pgbench, by turns: 0.4 to 1.8 ms more per upsert of 100 rows): every name in it is
-- schema-qualified, operators included.
-- With the argument 'revocations_allowed' (api_keys), an UPDATE in a suspended organization is
-- left to the row trigger below, which lets through only revocations: a key that leaked must
-- be revocable while its organization is suspended, or it would work again on activation.
create function refuse_writes_of_inactive_org() returns trigger
  language plpgsql
as $$
declare
  org_status constant pg_catalog.text := public.scope_org('status');
begin
  if org_status is null or org_status operator(pg_catalog.=) 'active' then
    return null;
  end if;
  if org_status operator(pg_catalog.=) 'deleted' then
    raise exception 'the organization does not exist or was deleted' using errcode = 'ES002';
  end if;
  if tg_op operator(pg_catalog.=) 'UPDATE' and tg_nargs operator(pg_catalog.>) 0 and tg_argv[0] operator(pg_catalog.=) 'revocations_allowed' then
    return null;
  end if;
  raise exception 'the organization is suspended: its data can be read but not changed' using errcode = 'ES001';
end
$$;
comment on function refuse_writes_of_inactive_org() is 'Statement trigger: refuses writes in the scope of a suspended or deleted organization.';
revoke execute on function refuse_writes_of_inactive_org() from public;

-- In a suspended organization, an update of a key may only revoke it and, at most, soft-delete
-- it (updated_at is stamped by set_updated_at after this trigger). Issuing and rotating insert
-- a key, and stay refused by the statement trigger.
-- No SET clause, as for the statement trigger above, and for a second reason: scope_org() has
-- none either (the policies call it), and PostgreSQL makes a cached plan again when it runs under
-- another search_path than the one it was made under. Called from here under a SET clause, the
-- plans inside scope_org() were made again at every call, here and in the policies of the same
-- statement (perf, pgbench: a fifth of the server's time on an update of a key).
create function refuse_api_key_changes_but_revocation_of_suspended_org() returns trigger
  language plpgsql
as $$
declare
  -- The scope's organization, verified, and its status ('deleted' is refused before any row,
  -- by the statement trigger); NULL outside a scope.
  org_status constant pg_catalog.text := public.scope_org('status');
  -- What a revocation may change.
  revocation constant pg_catalog.text[] := array['status', 'deleted_at', 'updated_at'];
begin
  if org_status is null or org_status operator(pg_catalog.<>) 'suspended' then
    return new;
  end if;
  if new.status operator(pg_catalog.=) 'revoked'
     and (old.deleted_at is null
          or (new.deleted_at is not null and new.deleted_at operator(pg_catalog.=) old.deleted_at))
     and (pg_catalog.to_jsonb(new) operator(pg_catalog.-) revocation)
         operator(pg_catalog.=) (pg_catalog.to_jsonb(old) operator(pg_catalog.-) revocation) then
    return new;
  end if;
  raise exception 'the organization is suspended: its API keys can be revoked, nothing else changed' using errcode = 'ES001';
end
$$;
comment on function refuse_api_key_changes_but_revocation_of_suspended_org() is
  'Row trigger on api_keys: in a suspended organization, lets through only updates that revoke or soft-delete a key.';
revoke execute on function refuse_api_key_changes_but_revocation_of_suspended_org() from public;

revoke execute on function scope_org(text) from public;
revoke execute on function current_org_id() from public;
revoke execute on function requested_org_id() from public;
revoke execute on function visible_org_id() from public;
revoke execute on function enter_org_scope(uuid, bigint, bytea) from public;
grant execute on function scope_org(text), current_org_id(), requested_org_id(), visible_org_id(), enter_org_scope(uuid, bigint, bytea), uuid_generate_v7() to app_tenant;
grant usage on schema public to app_tenant;
grant select on organizations, permissions, role_permissions to app_tenant;
grant select, insert, update, delete on users, api_keys, workflow_states, task_states, schedules to app_tenant;
-- Issuing a key registers its prefix; a prefix, once issued, is never changed or removed.
grant select, insert on api_key_prefixes to app_tenant;

alter table organizations enable row level security;
create policy organizations_tenant_read on organizations for select to app_tenant
  using (id = (select visible_org_id()));

alter table users enable row level security;
alter table users force row level security;
create policy users_tenant_isolation on users to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
create trigger users_refuse_writes_of_inactive_org before insert or update or delete on users
  for each statement execute function refuse_writes_of_inactive_org();
alter table users alter column org_id set default requested_org_id();

alter table api_keys enable row level security;
alter table api_keys force row level security;
create policy api_keys_tenant_isolation on api_keys to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
create trigger api_keys_refuse_writes_of_inactive_org before insert or update or delete on api_keys
  for each statement execute function refuse_writes_of_inactive_org('revocations_allowed');
create trigger api_keys_refuse_changes_but_revocation_of_suspended_org before update on api_keys
  for each row execute function refuse_api_key_changes_but_revocation_of_suspended_org();
alter table api_keys alter column org_id set default requested_org_id();

alter table api_key_prefixes enable row level security;
alter table api_key_prefixes force row level security;
create policy api_key_prefixes_tenant_isolation on api_key_prefixes to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
create trigger api_key_prefixes_refuse_writes_of_inactive_org before insert or update or delete on api_key_prefixes
  for each statement execute function refuse_writes_of_inactive_org();
alter table api_key_prefixes alter column org_id set default requested_org_id();

alter table workflow_states enable row level security;
alter table workflow_states force row level security;
create policy workflow_states_tenant_isolation on workflow_states to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
create trigger workflow_states_refuse_writes_of_inactive_org before insert or update or delete on workflow_states
  for each statement execute function refuse_writes_of_inactive_org();
-- From here on a row's organization comes from the tenant scope, never from a constant.
alter table workflow_states alter column org_id set default requested_org_id();

alter table task_states enable row level security;
alter table task_states force row level security;
create policy task_states_tenant_isolation on task_states to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
create trigger task_states_refuse_writes_of_inactive_org before insert or update or delete on task_states
  for each statement execute function refuse_writes_of_inactive_org();
alter table task_states alter column org_id set default requested_org_id();

alter table schedules enable row level security;
alter table schedules force row level security;
create policy schedules_tenant_isolation on schedules to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
create trigger schedules_refuse_writes_of_inactive_org before insert or update or delete on schedules
  for each statement execute function refuse_writes_of_inactive_org();
alter table schedules alter column org_id set default requested_org_id();

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

revoke execute on function scope_org(text), current_org_id(), requested_org_id(), visible_org_id(), enter_org_scope(uuid, bigint, bytea), uuid_generate_v7() from app_tenant;
drop function refuse_api_key_changes_but_revocation_of_suspended_org();
drop function refuse_writes_of_inactive_org();
drop function enter_org_scope(uuid, bigint, bytea);
drop function visible_org_id();
drop function requested_org_id();
drop function current_org_id();
drop function scope_org(text);
-- squawk-ignore require-concurrent-index-deletion -- reverse of the create above, on a table new in this release (and locked above)
drop index organizations_id_text_key;
drop function rotate_tenant_scope_key();
-- squawk-ignore ban-drop-table -- the exact reverse of the up section: a key, no data
drop table tenant_scope_key;
-- TEMP back to PUBLIC, as PostgreSQL creates a database. app_tenant keeps LOGIN: other
-- databases of the cluster may use it.
do $$
begin
  execute pg_catalog.format('grant temporary on database %I to public', pg_catalog.current_database());
end
$$;
