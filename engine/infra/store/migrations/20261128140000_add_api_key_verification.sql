-- Adds API key verification in one statement: per-key scopes, rotation, hourly usage counters and verify_api_key(), run as the narrow role app_key_verifier.
--
-- A key is presented without its organization, so verification must find it among all
-- organizations' keys, which row-level security forbids to app_tenant and (FORCE) to the owner.
-- verify_api_key() is SECURITY DEFINER and owned by app_key_verifier, a NOLOGIN role whose
-- policies let it read keys, users and organizations and count usage, and nothing else. No
-- session ever runs as that role (no login is a member of it but the owner): only this
-- function does.
--
-- Usage counters live in an UNLOGGED table, which skips the write-ahead log: the per-request
-- write stays cheap (a logged one, even committed asynchronously, cost 8 concurrent callers a
-- quarter of their throughput here). PostgreSQL empties such a table in crash recovery, so each
-- count is also saved, now and then, in the logged api_key_usage_saved: every step-th count of
-- an hour window, step being a 64th of the key's hourly limit (every count below a limit of 128),
-- committed with the verification. A counter lost in a crash starts again from its saved count,
-- so a crash re-admits at most step - 1 requests of a key's hour (none below a limit of 128),
-- and each key costs at most 64 saves an hour.
-- Up Migration
set local statement_timeout = '60s';
-- The strong locks first, children before parents, as writers take them.
lock table api_keys, api_key_prefixes, users, organizations, role_permissions in access exclusive mode;

do $$
begin
  if not exists (select from pg_roles where rolname = 'app_key_verifier') then
    create role app_key_verifier nologin nosuperuser nobypassrls noinherit;
  end if;
  -- A non-superuser owner must be a member to hand the function to the role (and to drop it
  -- in the down migration).
  if not (select rolsuper from pg_catalog.pg_roles where rolname = current_user)
     and not pg_catalog.pg_has_role(current_user, 'app_key_verifier', 'MEMBER') then
    execute pg_catalog.format('grant app_key_verifier to %I', current_user);
  end if;
end
$$;

-- NULL: every permission of the user's role. Otherwise the key is narrowed to these; the
-- effective set is always the role's permissions intersected with them, so never wider.
alter table api_keys add column scopes text[];
-- squawk-ignore constraint-missing-not-valid -- the column was added just above: every row is NULL and api_keys is new in this release
alter table api_keys add constraint api_keys_scopes_check
  check (scopes is null or (cardinality(scopes) <= 64 and array_position(scopes, null) is null));
-- Set when the key was rotated: the key that replaces it. Such a key may stay active for a
-- grace period, but it no longer holds its name.
alter table api_keys add column replaced_by uuid;
-- squawk-ignore adding-foreign-key-constraint,constraint-missing-not-valid -- new all-NULL column, self-reference on a table new in this release
alter table api_keys add constraint api_keys_replaced_by_fkey
  foreign key (org_id, replaced_by) references api_keys (org_id, id)
  -- Deferred: rotation points the old key at its successor before inserting it. No action on
  -- delete: keys are only soft-deleted, and a purge removes predecessor and successor together
  -- (Citus refuses SET NULL on a foreign key that includes the distribution column).
  deferrable initially deferred;

-- squawk-ignore require-concurrent-index-creation -- api_keys was created by this release's previous migration: no deployment holds keys yet
create index api_keys_org_id_replaced_by_idx on api_keys (org_id, replaced_by);
-- squawk-ignore require-concurrent-index-creation -- as above
create unique index api_keys_org_id_user_id_name_key on api_keys (org_id, user_id, lower(name))
  where deleted_at is null and status = 'active' and replaced_by is null;

create unlogged table api_key_usage (
  org_id uuid not null,
  api_key_id uuid not null,
  window_start timestamptz not null,
  -- squawk-ignore prefer-bigint-over-int -- never above rate_limit_per_hour (at most 1,000,000)
  request_count integer not null,
  constraint api_key_usage_pkey primary key (org_id, api_key_id, window_start),
  -- Counters go with their organization when it is purged. Not a foreign key to api_keys: its
  -- check locks the key row FOR KEY SHARE, which waits for any tenant holding that row FOR
  -- UPDATE (or deleting it), so a tenant could hold up its key's verification. No tenant can
  -- lock an organizations row (that takes UPDATE on it). Keys are removed only with their
  -- organization (the API soft-deletes them); counters of a key deleted by hand stay until then.
  constraint api_key_usage_org_id_fkey foreign key (org_id) references organizations (id) on delete cascade,
  constraint api_key_usage_request_count_check check (request_count >= 1)
);
comment on table api_key_usage is 'Requests per API key and hour window. Unlogged: after a crash a counter starts again from api_key_usage_saved.';
-- The (org_id, created_at) index every tenant table has is pointless here: rows are found by key and window.

-- The counts saved now and then (see the top of this file), which a crash does not empty.
create table api_key_usage_saved (
  org_id uuid not null,
  api_key_id uuid not null,
  window_start timestamptz not null,
  -- squawk-ignore prefer-bigint-over-int -- never above rate_limit_per_hour (at most 1,000,000)
  request_count integer not null,
  constraint api_key_usage_saved_pkey primary key (org_id, api_key_id, window_start),
  -- As api_key_usage's, and for the same reason not to api_keys.
  constraint api_key_usage_saved_org_id_fkey foreign key (org_id) references organizations (id) on delete cascade,
  constraint api_key_usage_saved_request_count_check check (request_count >= 1)
);
comment on table api_key_usage_saved is 'Counts of api_key_usage saved every 64th of the limit, from which a counter lost in a crash starts again.';
-- Only verify_api_key (as app_key_verifier) reads or writes it: no tenant policy, no tenant grant.
alter table api_key_usage_saved enable row level security;
alter table api_key_usage_saved force row level security;

alter table api_key_usage enable row level security;
alter table api_key_usage force row level security;
create policy api_key_usage_tenant_isolation on api_key_usage to app_tenant
  using (org_id = (select visible_org_id()))
  with check (org_id = (select current_org_id()));
grant select on api_key_usage to app_tenant;

-- The permission mapping as verification reads it: one row per role with its permissions, sorted.
-- Aggregating role_permissions' rows at every verification cost 14 us of its 55 (server side,
-- measured in one run, docs/benchmarks.md); one row read by the role's key costs 3 us.
-- role_permissions stays the mapping that is written and read by everything else; this copy
-- follows it through refresh_role_grants(), which a statement trigger runs after every change on
-- PostgreSQL and PGlite. Citus runs no trigger that writes to a reference table (a trigger on one
-- runs on each node's copy, where any statement on another Citus table is refused), so the
-- distribute command drops that trigger: there, whoever changes role_permissions by hand also runs
-- SELECT refresh_role_grants(), and `doctor` reports a copy that disagrees.
create table role_grants (
  role text not null,
  permissions text[] not null,
  constraint role_grants_pkey primary key (role),
  constraint role_grants_role_check check (role in ('admin', 'manager', 'customer')),
  constraint role_grants_permissions_check check (array_position(permissions, null) is null)
);
comment on table role_grants is 'The permissions of each role as one sorted array: role_permissions aggregated, for verify_api_key. Kept by refresh_role_grants().';

create function refresh_role_grants() returns void
  language sql volatile
  set search_path = pg_catalog, pg_temp
as $$
  delete from public.role_grants g
   where not exists (select from public.role_permissions rp where rp.role = g.role);
  insert into public.role_grants as g (role, permissions)
  select rp.role, array_agg(rp.permission order by rp.permission)
    from public.role_permissions rp
   group by rp.role
  on conflict on constraint role_grants_pkey do update
    set permissions = excluded.permissions
    where g.permissions is distinct from excluded.permissions;
$$;
comment on function refresh_role_grants() is 'Rewrites role_grants from role_permissions (run by a trigger, except on Citus).';
revoke execute on function refresh_role_grants() from public;

create function role_permissions_refresh_role_grants() returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform public.refresh_role_grants();
  return null;
end
$$;
comment on function role_permissions_refresh_role_grants() is 'Statement trigger on role_permissions: keeps role_grants equal to it.';
revoke execute on function role_permissions_refresh_role_grants() from public;
create trigger role_permissions_refresh_role_grants after insert or update or delete or truncate on role_permissions
  for each statement execute function role_permissions_refresh_role_grants();
select refresh_role_grants();

-- What app_key_verifier may do, all of it through verify_api_key().
grant usage on schema public to app_key_verifier;
grant select on organizations, users, api_keys, api_key_prefixes, role_grants to app_key_verifier;
grant update (last_used_at) on api_keys to app_key_verifier;
-- api_keys' triggers run as the writer, and read the scope's organization (none here).
grant execute on function scope_org(text), current_org_id() to app_key_verifier;
grant select, insert, update, delete on api_key_usage, api_key_usage_saved to app_key_verifier;
create policy organizations_key_verifier on organizations for select to app_key_verifier using (true);
create policy users_key_verifier on users for select to app_key_verifier using (true);
create policy api_key_prefixes_key_verifier on api_key_prefixes for select to app_key_verifier using (true);
create policy api_keys_key_verifier_read on api_keys for select to app_key_verifier using (true);
create policy api_keys_key_verifier_touch on api_keys for update to app_key_verifier using (true) with check (true);
create policy api_key_usage_key_verifier on api_key_usage to app_key_verifier using (true) with check (true);
create policy api_key_usage_saved_key_verifier on api_key_usage_saved to app_key_verifier using (true) with check (true);

-- One round trip: verify_api_key_in_org finds the key in the organization its caller names,
-- together with its user, its organization and the permissions it grants, checks it, counts the
-- request in its hour window (atomic INSERT ... ON CONFLICT DO UPDATE, so concurrent requests
-- never over-admit), throttles last_used_at to one write a minute, and returns the principal:
-- two statements on the way to OK (every statement a PL/pgSQL function runs costs an executor
-- start and stop, 5 to 9 us here). verify_api_key, for a caller that knows only the key, finds
-- the organization by the prefix (api_key_prefixes) first. An organization that does not hold
-- the prefix finds no key: NOT_FOUND, as for any wrong key, and nothing is counted.
--
-- It waits on no row lock a tenant can take: it reads keys, users and organizations without
-- locking them, the counters are the verifier's alone (app_tenant may only read them, and row
-- locks take UPDATE), their foreign key is to organizations (no tenant can lock those rows), and
-- last_used_at is written only when the key row is free (SKIP LOCKED). What is left to wait on
-- is a table lock (an operator's DDL, or LOCK TABLE by a leaked tenant login, which its UPDATE
-- on api_keys and users allows): the store runs verification on connections with short
-- lock_timeout and statement_timeout (store.ts), so it then fails fast instead.
-- Outcomes: OK, NOT_FOUND, REVOKED, EXPIRED, ORG_INACTIVE, USER_INACTIVE, MISSING_PERMISSION,
-- RATE_LIMITED.
--
-- The clock is the server's, read through verification_now(): no caller chooses it, since a
-- caller that could would use an expired key, or fill api_key_usage with far-future windows.
-- verification_now() belongs to the owner (app_key_verifier may only execute it), so tests of
-- hour windows and expiry redefine it, as the owner, in their own scratch databases.
create function verification_now() returns timestamptz
  language sql stable
  as $$ select pg_catalog.now() $$;
comment on function verification_now() is 'The clock of verify_api_key: the transaction''s start time.';
revoke execute on function verification_now() from public;
grant execute on function verification_now() to app_key_verifier;

create function verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[])
  returns table (
    outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[],
    rate_limit_per_hour integer, remaining integer, resets_at timestamptz
  )
  -- STRICT: a NULL argument returns no row, and counts nothing (a NULL p_required would otherwise
  -- pass the permission check). It is not a Citus distributed function, deliberately: Citus 13.2
  -- dereferences a NULL distribution argument of a delegated call while planning it (STRICT does
  -- not stop that when other arguments are parameters), which crashes the coordinator's backend
  -- and resets every session on it, and any login that may call the function could do that
  -- (docs/scaling-out.md).
  language plpgsql volatile security definer strict
as $$
-- No SET clause, which would cost every verification a search_path change and back (measured
-- with pgbench, server side, both in one run: 0.128 ms a call without it, 0.131 ms with it):
-- every name below is schema-qualified, operators included, so the caller's search_path cannot
-- reach it. OPERATOR()
-- gives every operator one precedence, left to right: parentheses say what binds first.
-- One statement finds the key and decides every refusal (a CASE), straight into the OUT
-- parameters: each PL/pgSQL expression is prepared again in every transaction and checked at
-- every use, so fewer of them on the way to OK is less work (0.005 ms a call, with node-postgres,
-- by turns, against one expression per check and per assignment). Inside SQL statements, the
-- OUT parameters go by aliases (key_org, key_id, key_limit): a bare org_id there would be
-- ambiguous with the tables' columns. (coalesce, greatest and CASE are syntax, not functions: no
-- search_path reaches them.)
declare
  key_org alias for org_id;
  key_id alias for api_key_id;
  key_limit alias for rate_limit_per_hour;
  verified_at constant pg_catalog.timestamptz := public.verification_now();
  -- Hours in UTC, whatever the session's time zone (in a half-hour zone windows would shift).
  this_window constant pg_catalog.timestamptz := pg_catalog.date_trunc('hour', verified_at, 'UTC');
  refusal pg_catalog.text;
  last_used pg_catalog.timestamptz;
  used pg_catalog.int4;
  saved pg_catalog.int4;
begin
  -- The key, its user, its organization and the permissions it grants, in one statement: its
  -- role's (role_grants), narrowed to its scopes when it has any. A refusal, if any, in the
  -- order callers see them: a wrong or deleted key, then revoked, expired, organization, user.
  select case when k.key_hash operator(pg_catalog.<>) p_key_hash or k.deleted_at is not null then 'NOT_FOUND'
              when k.status operator(pg_catalog.<>) 'active' then 'REVOKED'
              when k.expires_at operator(pg_catalog.<=) verified_at then 'EXPIRED'
              when o.deleted_at is not null or o.status operator(pg_catalog.<>) 'active' then 'ORG_INACTIVE'
              when u.deleted_at is not null or u.status operator(pg_catalog.<>) 'active' then 'USER_INACTIVE' end,
         k.org_id, k.user_id, k.id, u.role,
         case when k.scopes is null then coalesce(r.permissions, '{}'::pg_catalog.text[])
              else array(select p from pg_catalog.unnest(r.permissions) as p
                                     where p operator(pg_catalog.=) any (k.scopes) order by p) end,
         k.rate_limit_per_hour, k.last_used_at
    into refusal, org_id, user_id, api_key_id, role, permissions, rate_limit_per_hour, last_used
    from public.api_keys k
    join public.users u on u.org_id operator(pg_catalog.=) k.org_id and u.id operator(pg_catalog.=) k.user_id
    join public.organizations o on o.id operator(pg_catalog.=) k.org_id
    left join public.role_grants r on r.role operator(pg_catalog.=) u.role
   where k.org_id operator(pg_catalog.=) p_org_id and k.prefix operator(pg_catalog.=) p_prefix;
  -- The permissions the caller's route needs, when it names any: a key that lacks one is refused
  -- before its request is counted, so a 403 costs no unit of the hourly limit. (With no row,
  -- permissions is NULL and so is the containment: "not found" decides.)
  if refusal is not null or not found or not (p_required operator(pg_catalog.<@) permissions) then
    outcome := coalesce(refusal, case when found then 'MISSING_PERMISSION' else 'NOT_FOUND' end);
    -- A refusal says no more than it must: nothing for an unknown key or a wrong secret, the
    -- key's ids for the others, and its role and permissions only to a route that needs more.
    if outcome operator(pg_catalog.=) 'NOT_FOUND' then
      org_id := null;
      user_id := null;
      api_key_id := null;
    end if;
    if outcome operator(pg_catalog.<>) 'MISSING_PERMISSION' then
      role := null;
      permissions := null;
    end if;
    rate_limit_per_hour := null;
    return next;
    return;
  end if;

  insert into public.api_key_usage as usage (org_id, api_key_id, window_start, request_count)
  values (key_org, key_id, this_window, 1)
  on conflict on constraint api_key_usage_pkey do update
    set request_count = usage.request_count operator(pg_catalog.+) 1
    where usage.request_count operator(pg_catalog.<) key_limit
  returning usage.request_count into used;
  resets_at := this_window operator(pg_catalog.+) interval '1 hour';
  if used operator(pg_catalog.=) 1 then
    -- A new window, or a counter that a crash emptied: it goes on from its saved count. The row
    -- just inserted stays locked until commit, so concurrent verifications of the key wait.
    select s.request_count into saved
      from public.api_key_usage_saved s
     where s.org_id operator(pg_catalog.=) key_org
       and s.api_key_id operator(pg_catalog.=) key_id
       and s.window_start operator(pg_catalog.=) this_window;
    if found then
      used := case when saved operator(pg_catalog.<) key_limit then saved operator(pg_catalog.+) 1 end;
      update public.api_key_usage u set request_count = coalesce(used, key_limit)
       where u.org_id operator(pg_catalog.=) key_org
         and u.api_key_id operator(pg_catalog.=) key_id
         and u.window_start operator(pg_catalog.=) this_window;
    else
      delete from public.api_key_usage u
       where u.org_id operator(pg_catalog.=) key_org
         and u.api_key_id operator(pg_catalog.=) key_id
         and u.window_start operator(pg_catalog.<) (this_window operator(pg_catalog.-) interval '1 hour');
      delete from public.api_key_usage_saved s
       where s.org_id operator(pg_catalog.=) key_org
         and s.api_key_id operator(pg_catalog.=) key_id
         and s.window_start operator(pg_catalog.<) (this_window operator(pg_catalog.-) interval '1 hour');
    end if;
  end if;
  if used is null then
    outcome := 'RATE_LIMITED';
    permissions := null;
    remaining := 0;
    return next;
    return;
  end if;
  -- Every step-th count saved (see the top of this file), with the verification's commit.
  if (used operator(pg_catalog.%) greatest(1, key_limit operator(pg_catalog./) 64)) operator(pg_catalog.=) 0 then
    insert into public.api_key_usage_saved as s (org_id, api_key_id, window_start, request_count)
    values (key_org, key_id, this_window, used)
    on conflict on constraint api_key_usage_saved_pkey do update
      set request_count = greatest(s.request_count, excluded.request_count);
  end if;
  -- Only if the key row can be locked at once: a tenant may hold it (FOR UPDATE, or an open
  -- change to the key) as long as its scope lasts, and verification never waits for a tenant.
  -- A row it holds just skips this write; a later use makes it.
  if last_used is null or last_used operator(pg_catalog.<) (verified_at operator(pg_catalog.-) interval '1 minute') then
    perform from public.api_keys k
      where k.org_id operator(pg_catalog.=) key_org and k.id operator(pg_catalog.=) key_id
      for no key update skip locked;
    if found then
      update public.api_keys k set last_used_at = verified_at
       where k.org_id operator(pg_catalog.=) key_org and k.id operator(pg_catalog.=) key_id;
    end if;
  end if;
  outcome := 'OK';
  remaining := key_limit operator(pg_catalog.-) used;
  return next;
end
$$;
comment on function verify_api_key_in_org(uuid, text, bytea, text[]) is 'Verifies an API key of a known organization by prefix and SHA-256 digest (and that it grants every permission of p_required), counts the request, returns the principal or a reason.';

-- A key whose organization the caller does not know: the organization by the prefix alone (on
-- Citus, a read of the reference table on this node), then the verification within it. The store
-- calls verify_api_key_in_org directly once it has seen a key's organization (a prefix never
-- changes organization: api-keys/prefix-orgs.ts), which skips this lookup.
create function verify_api_key(p_prefix text, p_key_hash bytea, p_permission text default null)
  returns table (
    outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[],
    rate_limit_per_hour integer, remaining integer, resets_at timestamptz
  )
  language plpgsql volatile security definer
as $$
-- Every name schema-qualified, operators included, as in verify_api_key_in_org.
declare
  key_org pg_catalog.uuid;
begin
  select p.org_id into key_org from public.api_key_prefixes p where p.prefix operator(pg_catalog.=) p_prefix;
  if not found or p_key_hash is null then
    outcome := 'NOT_FOUND';
    return next;
    return;
  end if;
  return query select * from public.verify_api_key_in_org(key_org, p_prefix, p_key_hash,
    case when p_permission is null then '{}'::pg_catalog.text[] else array[p_permission] end);
end
$$;
comment on function verify_api_key(text, bytea, text) is 'Verifies an API key by prefix and SHA-256 digest (and, if given, that it grants a permission): finds its organization, then runs verify_api_key_in_org.';

revoke execute on function verify_api_key(text, bytea, text), verify_api_key_in_org(uuid, text, bytea, text[]) from public;
grant execute on function verify_api_key(text, bytea, text), verify_api_key_in_org(uuid, text, bytea, text[]) to app_tenant;
-- verify_api_key is owned by app_key_verifier, whose policies let it read keys, users and organizations and
-- count usage, and nothing else. Handing a function to a role needs, for a non-superuser, that
-- the role may create in the schema: granted for the ALTER and taken back at once, so that
-- nothing can create or replace functions as app_key_verifier afterwards.
grant create on schema public to app_key_verifier;
alter function verify_api_key(text, bytea, text) owner to app_key_verifier;
alter function verify_api_key_in_org(uuid, text, bytea, text[]) owner to app_key_verifier;
revoke create on schema public from app_key_verifier;

-- Down Migration
set local statement_timeout = '60s';

drop function verify_api_key(text, bytea, text);
drop function verify_api_key_in_org(uuid, text, bytea, text[]);
drop function verification_now();
-- If exists: the distribute command drops it on Citus.
drop trigger if exists role_permissions_refresh_role_grants on role_permissions;
drop function role_permissions_refresh_role_grants();
drop function refresh_role_grants();
drop policy api_key_usage_key_verifier on api_key_usage;
drop policy api_keys_key_verifier_touch on api_keys;
drop policy api_keys_key_verifier_read on api_keys;
drop policy api_key_prefixes_key_verifier on api_key_prefixes;
drop policy users_key_verifier on users;
drop policy organizations_key_verifier on organizations;
drop policy api_key_usage_saved_key_verifier on api_key_usage_saved;
revoke select, insert, update, delete on api_key_usage, api_key_usage_saved from app_key_verifier;
revoke execute on function scope_org(text), current_org_id() from app_key_verifier;
revoke update (last_used_at) on api_keys from app_key_verifier;
revoke select on organizations, users, api_keys, api_key_prefixes, role_grants from app_key_verifier;
revoke usage on schema public from app_key_verifier;
-- squawk-ignore ban-drop-table -- counters only; they need not survive (the table is unlogged)
drop table api_key_usage;
-- squawk-ignore ban-drop-table -- a copy of role_permissions, which stays
drop table role_grants;
-- squawk-ignore ban-drop-table -- this hour's saved counts only, which only this release keeps
drop table api_key_usage_saved;
-- squawk-ignore require-concurrent-index-deletion -- reverse of the create above, on a table new in this release
drop index api_keys_org_id_user_id_name_key;
-- squawk-ignore require-concurrent-index-deletion -- as above
drop index api_keys_org_id_replaced_by_idx;
alter table api_keys drop constraint api_keys_replaced_by_fkey;
-- squawk-ignore ban-drop-column -- the exact reverse of the up section
alter table api_keys drop column replaced_by;
alter table api_keys drop constraint api_keys_scopes_check;
-- squawk-ignore ban-drop-column -- the exact reverse of the up section
alter table api_keys drop column scopes;
