-- Adds what an in-process cache of verified API keys needs (openStore's keyCache): a notification on every change that could end a key's verification, and permits leased in blocks from the hourly counter.
--
-- Invalidation. A change to a key, its user or its organization that verification reads
-- (status, expiry, deletion, scopes, limit, role) sends NOTIFY on the channel
-- engine_store_key_cache, and every process that caches keys LISTENs there. Anyone can LISTEN,
-- a leaked tenant login included, so the payload names no organization: it is a tag, the first
-- 16 bytes of HMAC-SHA256(tenant scope key, 'key-cache:<org>') in hex, which a process holding
-- the key computes for the organizations it caches and nobody else can map back. A change of
-- the role mapping affects every organization: its payload is empty (forget every key). A new
-- scope key makes every tag unknown: its payload is 'rotated', on which a process stops caching
-- until it reopens its store (the old key also stops opening its scopes then).
-- NOTIFY is sent at commit, and only once per payload and transaction, so a purge of an
-- organization's thousand keys is one notification.
--
-- Leases. lease_api_key_permits() verifies a key (verify_api_key_in_org, which counts this
-- request) and then takes up to p_permits - 1 more units of the key's hour window at once, never
-- more than remain: the counter is the same row, still locked by the verification, so the
-- total admitted over all processes never passes the limit. The extra units are recorded in
-- api_key_leases, so that return_api_key_permits() can give back only what was leased, once:
-- neither a leaked tenant login nor a key's holder can raise a limit by "returning" units that
-- were never taken. Both tables are unlogged: a crash empties them, the counter starts again
-- from its saved count (which a lease moves on like any count), and the leases of that hour are
-- lost, never doubled.
--
-- Not on Citus: there a trigger runs on the node of its row, where a NOTIFY reaches only that
-- node's listeners, and a write to several nodes (any write to a reference table such as
-- organizations) commits with two-phase commit, which PostgreSQL refuses for a transaction that
-- sent NOTIFY ("cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY";
-- tried). The distribute command drops these triggers (citus/layout.ts), and the store refuses
-- keyCache on Citus.
-- Up Migration
set local statement_timeout = '60s';
-- The strong locks first, children before parents, as writers take them.
lock table api_keys, users, organizations, role_permissions, tenant_scope_key in share row exclusive mode;

create unlogged table api_key_leases (
  org_id uuid not null,
  api_key_id uuid not null,
  id uuid not null default gen_random_uuid(),
  window_start timestamptz not null,
  -- squawk-ignore prefer-bigint-over-int -- never above rate_limit_per_hour (at most 1,000,000)
  permits integer not null,
  constraint api_key_leases_pkey primary key (org_id, api_key_id, id),
  -- As api_key_usage's: to organizations, so that no tenant can lock the rows it references.
  constraint api_key_leases_org_id_fkey foreign key (org_id) references organizations (id) on delete cascade,
  constraint api_key_leases_permits_check check (permits >= 1)
);
comment on table api_key_leases is 'Units of an hour window leased by a process beyond the request that leased them, until they are returned or the window ends. Unlogged.';
alter table api_key_leases enable row level security;
alter table api_key_leases force row level security;
grant select, insert, delete on api_key_leases to app_key_verifier;
create policy api_key_leases_key_verifier on api_key_leases to app_key_verifier using (true) with check (true);

-- The notification's tag of an organization (see the top of this file). SECURITY DEFINER, to
-- read the scope key; it says nothing the key's holder could not compute. PL/pgSQL, not SQL: a
-- SQL function that reads a table is never inlined, and is parsed and planned again at every
-- call; a PL/pgSQL function keeps its plan for the session (measured: 3% of the server's time on
-- an update of a user, one call of the notification trigger).
create function key_cache_tag(p_org uuid) returns text
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
as $$
begin
  return (select encode(substr(sha256(k.outer_pad || sha256(k.inner_pad || convert_to('key-cache:' || p_org::text, 'UTF8'))), 1, 16), 'hex')
            from public.tenant_scope_key k where k.id = 1);
end
$$;
comment on function key_cache_tag(uuid) is 'The payload of engine_store_key_cache notifications about an organization: HMAC of it with the scope key, 16 bytes in hex.';
revoke execute on function key_cache_tag(uuid) from public;

-- Row trigger on organizations, users and api_keys: the organization of the row is named
-- (organizations: id; the others: org_id), its tag sent. SECURITY DEFINER, so that the writer
-- (app_tenant) needs no right to key_cache_tag: with it, a leaked tenant login could tell
-- which organization each notification is about.
create function notify_key_cache() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  changed record;
  org uuid;
begin
  if tg_op = 'DELETE' then changed := old; else changed := new; end if;
  -- Two statements: a record's field is looked up when its statement runs, and only
  -- organizations has no org_id.
  if tg_table_name = 'organizations' then org := changed.id; else org := changed.org_id; end if;
  perform pg_notify('engine_store_key_cache', public.key_cache_tag(org));
  return null;
end
$$;
comment on function notify_key_cache() is 'Row trigger: tells processes that cache keys that an organization''s keys, users or status changed.';
revoke execute on function notify_key_cache() from public;

-- Statement triggers: the role mapping (every organization) and the scope key (every tag).
create function notify_key_cache_all() returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_notify('engine_store_key_cache', case when tg_table_name = 'tenant_scope_key' then 'rotated' else '' end);
  return null;
end
$$;
comment on function notify_key_cache_all() is 'Statement trigger: tells processes that cache keys to forget them all (role mapping) or to stop caching (scope key).';
revoke execute on function notify_key_cache_all() from public;

-- Only the columns verification reads: last_used_at, which verification itself writes, and
-- names or emails change nothing a cached key depends on.
create trigger api_keys_notify_key_cache after update on api_keys for each row
  when (old.status is distinct from new.status or old.expires_at is distinct from new.expires_at
        or old.deleted_at is distinct from new.deleted_at or old.scopes is distinct from new.scopes
        or old.rate_limit_per_hour is distinct from new.rate_limit_per_hour or old.key_hash is distinct from new.key_hash
        or old.replaced_by is distinct from new.replaced_by or old.user_id is distinct from new.user_id)
  execute function notify_key_cache();
create trigger api_keys_notify_key_cache_delete after delete on api_keys for each row execute function notify_key_cache();
create trigger users_notify_key_cache after update on users for each row
  when (old.role is distinct from new.role or old.status is distinct from new.status or old.deleted_at is distinct from new.deleted_at)
  execute function notify_key_cache();
create trigger users_notify_key_cache_delete after delete on users for each row execute function notify_key_cache();
create trigger organizations_notify_key_cache after update on organizations for each row
  when (old.status is distinct from new.status or old.deleted_at is distinct from new.deleted_at)
  execute function notify_key_cache();
create trigger organizations_notify_key_cache_delete after delete on organizations for each row execute function notify_key_cache();
create trigger role_permissions_notify_key_cache after insert or update or delete or truncate on role_permissions
  for each statement execute function notify_key_cache_all();
create trigger tenant_scope_key_notify_key_cache after insert or update or delete or truncate on tenant_scope_key
  for each statement execute function notify_key_cache_all();

-- Verifies a key as verify_api_key_in_org does (with its organization looked up by prefix when
-- p_org_id is NULL), and, when it is accepted, leases up to p_permits - 1 further units of its
-- window, returned with the lease's id, the key's expiry and the server's clock (so that a
-- process can tell, by its own monotonic clock, when the lease and the key end).
create function lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer)
  returns table (
    outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[],
    rate_limit_per_hour integer, remaining integer, resets_at timestamptz,
    permits integer, lease_id uuid, key_expires_at timestamptz, verified_at timestamptz
  )
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
as $$
-- A SET clause here (unlike verify_api_key_in_org): a lease is taken once per block of requests.
declare
  key_org uuid := p_org_id;
  checked record;
  extra int4;
  counted int4;
  step int4;
  this_window timestamptz;
begin
  if p_permits is null or p_permits < 1 or p_permits > 1000000 then
    raise exception 'p_permits must be a whole number from 1 to 1000000' using errcode = '22023';
  end if;
  verified_at := public.verification_now();
  if key_org is null and p_prefix is not null then
    select p.org_id into key_org from public.api_key_prefixes p where p.prefix = p_prefix;
  end if;
  if key_org is null or p_prefix is null or p_key_hash is null or p_required is null then
    outcome := 'NOT_FOUND';
    return next;
    return;
  end if;
  select * into checked from public.verify_api_key_in_org(key_org, p_prefix, p_key_hash, p_required);
  outcome := checked.outcome;
  org_id := checked.org_id;
  user_id := checked.user_id;
  api_key_id := checked.api_key_id;
  role := checked.role;
  permissions := checked.permissions;
  rate_limit_per_hour := checked.rate_limit_per_hour;
  remaining := checked.remaining;
  resets_at := checked.resets_at;
  if outcome is distinct from 'OK' then
    return next;
    return;
  end if;
  permits := 1;
  select k.expires_at into key_expires_at from public.api_keys k where k.org_id = checked.org_id and k.id = checked.api_key_id;
  extra := least(p_permits - 1, checked.remaining);
  if extra > 0 then
    this_window := checked.resets_at - interval '1 hour';
    -- The row verify_api_key_in_org just counted on, locked by it until commit: nothing moved it since.
    update public.api_key_usage u set request_count = u.request_count + extra
     where u.org_id = checked.org_id and u.api_key_id = checked.api_key_id and u.window_start = this_window
    returning u.request_count into counted;
    -- Saved when the units cross a step (see migration 20261128140000), as one request at a time would.
    step := greatest(1, checked.rate_limit_per_hour / 64);
    if counted / step > (counted - extra) / step then
      insert into public.api_key_usage_saved as s (org_id, api_key_id, window_start, request_count)
      values (checked.org_id, checked.api_key_id, this_window, counted)
      on conflict on constraint api_key_usage_saved_pkey do update
        set request_count = greatest(s.request_count, excluded.request_count);
    end if;
    delete from public.api_key_leases l
     where l.org_id = checked.org_id and l.api_key_id = checked.api_key_id and l.window_start < this_window;
    insert into public.api_key_leases (org_id, api_key_id, window_start, permits)
    values (checked.org_id, checked.api_key_id, this_window, extra)
    returning id into lease_id;
    permits := 1 + extra;
    remaining := checked.remaining - extra;
  end if;
  return next;
end
$$;
comment on function lease_api_key_permits(uuid, text, bytea, text[], integer) is
  'Verifies an API key as verify_api_key_in_org does and, if accepted, leases up to p_permits - 1 more units of its hour window.';

-- Gives back up to p_unspent units of a lease, once, in the window it was taken in (a lease of
-- an ended window lapses with it). Returns the units given back. The lease's id is the
-- capability: only the process that took it knows it.
create function return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer)
  returns integer
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
as $$
declare
  lease record;
  given int4;
begin
  if p_unspent is null or p_unspent < 1 then
    return 0;
  end if;
  delete from public.api_key_leases l
   where l.org_id = p_org_id and l.api_key_id = p_api_key_id and l.id = p_lease_id
  returning l.window_start, l.permits into lease;
  if not found then
    return 0;
  end if;
  if lease.window_start <> date_trunc('hour', public.verification_now(), 'UTC') then
    return 0;
  end if;
  given := least(p_unspent, lease.permits);
  -- Never below the request that took the lease, which is spent (a crash may have restarted
  -- the counter lower than the lease: then fewer units come back, never more).
  update public.api_key_usage u set request_count = greatest(1, u.request_count - given)
   where u.org_id = p_org_id and u.api_key_id = p_api_key_id and u.window_start = lease.window_start;
  return given;
end
$$;
comment on function return_api_key_permits(uuid, uuid, uuid, integer) is 'Gives back the unspent units of a lease taken by lease_api_key_permits, once, within its window.';

revoke execute on function lease_api_key_permits(uuid, text, bytea, text[], integer), return_api_key_permits(uuid, uuid, uuid, integer) from public;
grant execute on function lease_api_key_permits(uuid, text, bytea, text[], integer), return_api_key_permits(uuid, uuid, uuid, integer) to app_tenant;
-- Owned by app_key_verifier, as verify_api_key is (see migration 20261128140000).
grant create on schema public to app_key_verifier;
alter function lease_api_key_permits(uuid, text, bytea, text[], integer) owner to app_key_verifier;
alter function return_api_key_permits(uuid, uuid, uuid, integer) owner to app_key_verifier;
revoke create on schema public from app_key_verifier;

-- Down Migration
set local statement_timeout = '60s';
lock table api_keys, users, organizations, role_permissions, tenant_scope_key in share row exclusive mode;

drop function return_api_key_permits(uuid, uuid, uuid, integer);
drop function lease_api_key_permits(uuid, text, bytea, text[], integer);
-- If exists: the distribute command drops them on Citus.
drop trigger if exists tenant_scope_key_notify_key_cache on tenant_scope_key;
drop trigger if exists role_permissions_notify_key_cache on role_permissions;
drop trigger if exists organizations_notify_key_cache_delete on organizations;
drop trigger if exists organizations_notify_key_cache on organizations;
drop trigger if exists users_notify_key_cache_delete on users;
drop trigger if exists users_notify_key_cache on users;
drop trigger if exists api_keys_notify_key_cache_delete on api_keys;
drop trigger if exists api_keys_notify_key_cache on api_keys;
drop function notify_key_cache_all();
drop function notify_key_cache();
drop function key_cache_tag(uuid);
drop policy api_key_leases_key_verifier on api_key_leases;
revoke select, insert, delete on api_key_leases from app_key_verifier;
-- squawk-ignore ban-drop-table -- leases only: units of the current hour, which lapse with it
drop table api_key_leases;
