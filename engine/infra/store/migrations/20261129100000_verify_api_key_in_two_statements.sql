-- verify_api_key does its work in two statements instead of four on the way to OK.
--
-- Every statement a PL/pgSQL function runs costs an executor start and stop (20-30 us here);
-- the permission list now comes with the key lookup (a sub-select), and the result row is
-- assigned to the output columns and returned with RETURN NEXT instead of a RETURN QUERY
-- statement. The answers are the same, reason by reason (test/api-keys.test.ts).
-- CREATE OR REPLACE keeps the owner (app_key_verifier), the grants and the comment.
-- Up Migration
set local statement_timeout = '60s';

create or replace function verify_api_key(p_prefix text, p_key_hash bytea, p_now timestamptz default now())
  returns table (
    outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[],
    rate_limit_per_hour integer, remaining integer, resets_at timestamptz
  )
  language plpgsql volatile security definer
  set search_path = pg_catalog, public
as $$
declare
  key record;
  -- Hours in UTC, whatever the session's time zone (in a half-hour zone windows would shift).
  this_window constant timestamptz := date_trunc('hour', p_now, 'UTC');
  used integer;
begin
  -- The key, its user, its organization and the permissions it grants, in one statement.
  select k.org_id, k.id, k.user_id, k.key_hash, k.status, k.expires_at, k.deleted_at,
         k.rate_limit_per_hour, k.last_used_at, u.role, u.status as user_status,
         u.deleted_at as user_deleted_at, o.status as org_status, o.deleted_at as org_deleted_at,
         (select coalesce(array_agg(rp.permission order by rp.permission), '{}')
            from role_permissions rp
           where rp.role = u.role and (k.scopes is null or rp.permission = any (k.scopes))) as granted
    into key
    from api_keys k
    join users u on u.org_id = k.org_id and u.id = k.user_id
    join organizations o on o.id = k.org_id
   where k.prefix = p_prefix;
  if not found or key.key_hash <> p_key_hash or key.deleted_at is not null then
    outcome := 'NOT_FOUND';
    return next;
    return;
  end if;
  org_id := key.org_id;
  user_id := key.user_id;
  api_key_id := key.id;
  if key.status <> 'active' then
    outcome := 'REVOKED';
  elsif key.expires_at is not null and key.expires_at <= p_now then
    outcome := 'EXPIRED';
  elsif key.org_deleted_at is not null or key.org_status <> 'active' then
    outcome := 'ORG_INACTIVE';
  elsif key.user_deleted_at is not null or key.user_status <> 'active' then
    outcome := 'USER_INACTIVE';
  end if;
  if outcome is not null then
    return next;
    return;
  end if;

  insert into api_key_usage as usage (org_id, api_key_id, window_start, request_count)
  values (key.org_id, key.id, this_window, 1)
  on conflict on constraint api_key_usage_pkey do update
    set request_count = usage.request_count + 1
    where usage.request_count < key.rate_limit_per_hour
  returning usage.request_count into used;
  role := key.role;
  rate_limit_per_hour := key.rate_limit_per_hour;
  resets_at := this_window + interval '1 hour';
  if used is null then
    outcome := 'RATE_LIMITED';
    remaining := 0;
    return next;
    return;
  end if;
  if used = 1 then
    delete from api_key_usage u
     where u.org_id = key.org_id and u.api_key_id = key.id and u.window_start < this_window - interval '1 hour';
  end if;
  if key.last_used_at is null or key.last_used_at < p_now - interval '1 minute' then
    update api_keys k set last_used_at = p_now where k.org_id = key.org_id and k.id = key.id;
  end if;
  outcome := 'OK';
  permissions := key.granted;
  remaining := key.rate_limit_per_hour - used;
  return next;
end
$$;

-- Down Migration
set local statement_timeout = '60s';

create or replace function verify_api_key(p_prefix text, p_key_hash bytea, p_now timestamptz default now())
  returns table (
    outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[],
    rate_limit_per_hour integer, remaining integer, resets_at timestamptz
  )
  language plpgsql volatile security definer
  set search_path = pg_catalog, public
as $$
declare
  key record;
  -- Hours in UTC, whatever the session's time zone (in a half-hour zone windows would shift).
  this_window constant timestamptz := date_trunc('hour', p_now, 'UTC');
  used integer;
begin
  select k.org_id, k.id, k.user_id, k.key_hash, k.status, k.expires_at, k.deleted_at, k.scopes,
         k.rate_limit_per_hour, k.last_used_at, u.role, u.status as user_status,
         u.deleted_at as user_deleted_at, o.status as org_status, o.deleted_at as org_deleted_at
    into key
    from api_keys k
    join users u on u.org_id = k.org_id and u.id = k.user_id
    join organizations o on o.id = k.org_id
   where k.prefix = p_prefix;
  -- A wrong secret and a soft-deleted key read as "no such key": nothing more is revealed.
  if not found or key.key_hash <> p_key_hash or key.deleted_at is not null then
    return query select 'NOT_FOUND', null::uuid, null::uuid, null::uuid, null::text, null::text[], null::integer, null::integer, null::timestamptz;
    return;
  end if;
  if key.status <> 'active' then
    outcome := 'REVOKED';
  elsif key.expires_at is not null and key.expires_at <= p_now then
    outcome := 'EXPIRED';
  elsif key.org_deleted_at is not null or key.org_status <> 'active' then
    outcome := 'ORG_INACTIVE';
  elsif key.user_deleted_at is not null or key.user_status <> 'active' then
    outcome := 'USER_INACTIVE';
  end if;
  if outcome is not null then
    return query select outcome, key.org_id, key.user_id, key.id, null::text, null::text[], null::integer, null::integer, null::timestamptz;
    return;
  end if;

  insert into api_key_usage as usage (org_id, api_key_id, window_start, request_count)
  values (key.org_id, key.id, this_window, 1)
  on conflict on constraint api_key_usage_pkey do update
    set request_count = usage.request_count + 1
    where usage.request_count < key.rate_limit_per_hour
  returning usage.request_count into used;
  if used is null then
    return query select 'RATE_LIMITED', key.org_id, key.user_id, key.id, key.role, null::text[],
                        key.rate_limit_per_hour, 0, this_window + interval '1 hour';
    return;
  end if;
  if used = 1 then
    -- First request of a new window: windows before the previous one are done with. The
    -- previous one stays: a request stamped just before the hour may still be running, and
    -- must find its window's count rather than start it over.
    delete from api_key_usage u
     where u.org_id = key.org_id and u.api_key_id = key.id and u.window_start < this_window - interval '1 hour';
  end if;
  if key.last_used_at is null or key.last_used_at < p_now - interval '1 minute' then
    update api_keys k set last_used_at = p_now where k.org_id = key.org_id and k.id = key.id;
  end if;

  return query
    select 'OK', key.org_id, key.user_id, key.id, key.role,
           coalesce(array_agg(rp.permission order by rp.permission), '{}'),
           key.rate_limit_per_hour, key.rate_limit_per_hour - used, this_window + interval '1 hour'
      from role_permissions rp
     where rp.role = key.role and (key.scopes is null or rp.permission = any (key.scopes));
end
$$;

