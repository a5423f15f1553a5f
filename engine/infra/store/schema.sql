-- The whole engine-store schema, generated from the migrations by `npm run schema:dump`.
-- Do not edit: change the schema with a new migration, then regenerate this file.
-- A test builds one database from this file and one from the migrations and requires the same catalog.

-- Cluster-wide roles the schema grants to (pg_dump does not dump roles).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_tenant') THEN
    CREATE ROLE app_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_key_verifier') THEN
    CREATE ROLE app_key_verifier NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT app_tenant TO %I', current_user);
    EXECUTE format('GRANT app_key_verifier TO %I', current_user);
    GRANT CREATE ON SCHEMA public TO app_key_verifier;
  END IF;
END
$$;

--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: audit_action; Type: DOMAIN; Schema: public; Owner: -
--

CREATE DOMAIN public.audit_action AS text
	CONSTRAINT audit_action_check CHECK ((VALUE ~ '^[a-z_]+\.[a-z_]+$'::text));

--
-- Name: DOMAIN audit_action; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON DOMAIN public.audit_action IS 'An audit event''s action: a dotted name such as api_key.revoked.';

--
-- Name: audit_actor_kind; Type: DOMAIN; Schema: public; Owner: -
--

CREATE DOMAIN public.audit_actor_kind AS text
	CONSTRAINT audit_actor_kind_check CHECK ((VALUE = ANY (ARRAY['operator'::text, 'user'::text, 'api_key'::text, 'system'::text])));

--
-- Name: DOMAIN audit_actor_kind; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON DOMAIN public.audit_actor_kind IS 'Who acted in an audit event: operator, user, api_key or system.';

--
-- Name: audit_head_seq; Type: DOMAIN; Schema: public; Owner: -
--

CREATE DOMAIN public.audit_head_seq AS bigint
	CONSTRAINT audit_head_seq_check CHECK ((VALUE >= 0));

--
-- Name: DOMAIN audit_head_seq; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON DOMAIN public.audit_head_seq IS 'The position of the last event of an audit chain: 0 before the first.';

--
-- Name: audit_seq; Type: DOMAIN; Schema: public; Owner: -
--

CREATE DOMAIN public.audit_seq AS bigint
	CONSTRAINT audit_seq_check CHECK ((VALUE >= 1));

--
-- Name: DOMAIN audit_seq; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON DOMAIN public.audit_seq IS 'The position of an event in its organization''s audit chain: 1, 2, 3...';

--
-- Name: sha256_digest; Type: DOMAIN; Schema: public; Owner: -
--

CREATE DOMAIN public.sha256_digest AS bytea
	CONSTRAINT sha256_digest_check CHECK ((octet_length(VALUE) = 32));

--
-- Name: DOMAIN sha256_digest; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON DOMAIN public.sha256_digest IS 'A SHA-256 digest: 32 bytes.';

--
-- Name: audit_append(uuid, text, text, text, jsonb, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_append(p_org uuid, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_actor_kind text DEFAULT NULL::text, p_actor_id text DEFAULT NULL::text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
declare
  actor text;
  actor_kind text := p_actor_kind;
  actor_id text := p_actor_id;
  scope text;
  signed boolean;
  context_text constant text := nullif(current_setting('app.audit_context', true), '');
  context jsonb;
  head record;
  at timestamptz;
  digest bytea;
begin
  if actor_kind is null then
    actor := nullif(current_setting('app.actor', true), '');
    -- An actor is believed in a tenant scope only with the store's signature of it, which binds
    -- the scope's organization and expiry: a scope forged to another organization does not
    -- match it (and its statements were refused by the policies already: ES003). Not through
    -- scope_org(), whose plans PostgreSQL would make again on every call: it is called from the
    -- tenant's search_path too, and a cached plan is remade when the search_path differs
    -- (measured: 0.3 ms more per audited write). Without an actor nothing is read: the event
    -- says system and the role.
    if actor is not null then
      scope := nullif(current_setting('app.org_id', true), '');
    end if;
    if scope is not null then
      select encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(
               concat('actor:', scope, ':', current_setting('app.org_expires', true), ':', actor), 'UTF8'))), 'hex')
             = current_setting('app.actor_token', true)
        into signed
        from public.tenant_scope_key k where k.id = 1;
      if signed is not true then
        raise exception 'the actor of this tenant scope was not signed by this store' using errcode = 'ES006';
      end if;
    end if;
    if actor is null then
      actor_kind := 'system';
      actor_id := coalesce(nullif(current_setting('role'), 'none'), session_user);
    else
      actor_kind := split_part(actor, ':', 1);
      actor_id := substr(actor, char_length(actor_kind) + 2);
    end if;
  end if;
  if actor_kind is null or actor_kind not in ('operator', 'user', 'api_key', 'system')
     or actor_id is null or char_length(actor_id) not between 1 and 200 or actor_id ~ '[[:cntrl:]]' then
    raise exception 'the audit actor must be <operator|user|api_key|system>:<id of 1 to 200 characters>' using errcode = '22023';
  end if;
  if context_text is not null then
    if octet_length(context_text) > 2048 then
      raise exception 'the audit context is longer than 2048 bytes' using errcode = '22023';
    end if;
    context := context_text::jsonb;
    if jsonb_typeof(context) <> 'object' then
      raise exception 'the audit context must be a JSON object' using errcode = '22023';
    end if;
  end if;

  -- The head, locked until commit: it orders the organization's appends. The hash is computed
  -- here and written as values: Citus refuses an UPDATE that calls a stable function (convert_to,
  -- jsonb_build_array) or a volatile one (the clock) on a column.
  for attempt in 1 .. 2 loop
    -- As their base types: Citus sends a parameter of a type it did not make (a domain) to the
    -- shards untyped, and the statement below could not be planned there.
    select h.seq::bigint as seq, h.hash::bytea as hash, h.occurred_at into head
      from public.audit_heads h where h.org_id = p_org for update;
    exit when found;
    -- The organization's first event: its head starts at the genesis hash, 32 zero bytes (written
    -- here, not as a constant of the function, which every call would evaluate).
    insert into public.audit_heads (org_id, seq, hash, occurred_at) values (p_org, 0, decode(repeat('00', 32), 'hex'), '-infinity')
    on conflict on constraint audit_heads_pkey do nothing;
  end loop;
  -- Never earlier than the event before it: a cut in time is then a cut in seq (prune).
  at := greatest(clock_timestamp(), head.occurred_at);
  digest := sha256(head.hash || convert_to(public.audit_event_content(p_org, head.seq + 1, at, actor_kind, actor_id,
              p_action, p_target_kind, p_target_id, p_changes, context), 'UTF8'));
  -- The event and the head's move in one statement (one statement less per event; Citus runs it
  -- on the chain's shard, as both are co-located).
  with moved as (update public.audit_heads h set seq = head.seq + 1, hash = digest, occurred_at = at where h.org_id = p_org)
  insert into public.audit_events (org_id, seq, occurred_at, actor_kind, actor_id, action, target_kind, target_id, changes, context, prev_hash, hash)
  values (p_org, head.seq + 1, at, actor_kind, actor_id, p_action, p_target_kind, p_target_id, p_changes, context, head.hash, digest);
end
$$;

--
-- Name: FUNCTION audit_append(p_org uuid, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_actor_kind text, p_actor_id text); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_append(p_org uuid, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_actor_kind text, p_actor_id text) IS 'Appends an event to an organization''s audit chain, with the transaction''s actor (signed in a tenant scope) and context.';

--
-- Name: audit_chain_is_here(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_chain_is_here(p_org uuid) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  if to_regclass('pg_catalog.pg_dist_partition') is null then
    return true;
  end if;
  if not exists (select from pg_catalog.pg_dist_partition p where p.logicalrelid = 'public.audit_heads'::regclass) then
    return true;
  end if;
  return exists (select from pg_catalog.pg_dist_placement p
                  where p.shardid = pg_catalog.get_shard_id_for_distribution_column('public.audit_heads', p_org)
                    and p.groupid = (select g.groupid from pg_catalog.pg_dist_local_group g));
end
$$;

--
-- Name: FUNCTION audit_chain_is_here(p_org uuid); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_chain_is_here(p_org uuid) IS 'Whether an organization''s audit chain is on this node (always, but on a Citus worker that does not hold its shard).';

--
-- Name: audit_count_failure(uuid, uuid, text, timestamp with time zone); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamp with time zone) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
declare
  counted int4;
begin
  insert into public.api_key_auth_failures as f (org_id, api_key_id, reason, period_start, attempts)
  values (p_org, p_key, p_reason, p_period, 1)
  on conflict on constraint api_key_auth_failures_pkey do update set attempts = f.attempts + 1
  returning f.attempts into counted;
  if counted = 1 then
    -- A key's periods older than a day go when a new one starts: the table stays small.
    delete from public.api_key_auth_failures f
     where f.org_id = p_org and f.api_key_id = p_key and f.period_start < p_period - interval '1 day';
    perform public.audit_append(p_org, 'api_key.auth_failed', 'api_key', p_key::text,
      jsonb_build_object('reason', p_reason, 'period_start', p_period), 'system', 'verify_api_key');
  end if;
end
$$;

--
-- Name: FUNCTION audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamp with time zone); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamp with time zone) IS 'Counts a refused verification of an API key in its period, and appends api_key.auth_failed at the first of the period.';

--
-- Name: audit_ensure_partitions(timestamp with time zone, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_ensure_partitions(p_from timestamp with time zone, p_months integer) RETURNS SETOF text
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
declare
  month_start timestamptz;
  name text;
  -- In UTC wall time: adding a month to a timestamptz would follow the session's time zone.
  first_month constant timestamp := date_trunc('month', p_from at time zone 'UTC');
begin
  if p_months is null or p_months < 0 or p_months > 120 then
    raise exception 'p_months must be from 0 to 120' using errcode = '22023';
  end if;
  for i in 0 .. p_months - 1 loop
    month_start := (first_month + make_interval(months => i)) at time zone 'UTC';
    name := 'audit_events_' || to_char(month_start at time zone 'UTC', '"y"YYYY"m"MM');
    continue when to_regclass('public.' || name) is not null;
    -- select 1, not an empty select list: Citus plans no query without columns.
    continue when exists (select 1 from public.audit_events_default d
                           where d.occurred_at >= month_start and d.occurred_at < month_start + interval '1 month');
    execute format('create table public.%I partition of public.audit_events for values from (%L) to (%L)',
                   name, month_start, month_start + interval '1 month');
    -- On Citus the partition of a distributed table is distributed too, and a trigger on it needs
    -- this (a placeholder setting elsewhere).
    perform set_config('citus.enable_unsafe_triggers', 'on', true);
    execute format('create trigger %I before truncate on public.%I for each statement execute function public.refuse_audit_event_changes()',
                   name || '_no_truncate', name);
    return next name;
  end loop;
end
$$;

--
-- Name: FUNCTION audit_ensure_partitions(p_from timestamp with time zone, p_months integer); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_ensure_partitions(p_from timestamp with time zone, p_months integer) IS 'Makes the missing monthly partitions of audit_events from a month on (owner only).';

--
-- Name: audit_event_content(uuid, bigint, timestamp with time zone, text, text, text, text, text, jsonb, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_event_content(p_org uuid, p_seq bigint, p_occurred_at timestamp with time zone, p_actor_kind text, p_actor_id text, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_context jsonb) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select pg_catalog.json_build_array(p_org::pg_catalog.text, p_seq,
           (extract(epoch from p_occurred_at) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
           p_actor_kind, p_actor_id, p_action, p_target_kind, p_target_id, p_changes, p_context)::pg_catalog.text
$$;

--
-- Name: FUNCTION audit_event_content(p_org uuid, p_seq bigint, p_occurred_at timestamp with time zone, p_actor_kind text, p_actor_id text, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_context jsonb); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_event_content(p_org uuid, p_seq bigint, p_occurred_at timestamp with time zone, p_actor_kind text, p_actor_id text, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_context jsonb) IS 'The canonical text of an audit event, which its hash covers (with the previous hash).';

--
-- Name: audit_field_added(text, anyelement); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_field_added(p_field text, p_value anyelement) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select case when p_value is null then '{}'::pg_catalog.jsonb
              else pg_catalog.jsonb_build_object(p_field, pg_catalog.jsonb_build_object('after', p_value)) end
$$;

--
-- Name: FUNCTION audit_field_added(p_field text, p_value anyelement); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_field_added(p_field text, p_value anyelement) IS 'A new row''s recorded field as audit changes: {"<field>": {"after": value}}, or {} for NULL.';

--
-- Name: audit_field_changed(text, anyelement, anyelement); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_field_changed(p_field text, p_before anyelement, p_after anyelement) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select case when p_before is distinct from p_after
              then pg_catalog.jsonb_build_object(p_field, pg_catalog.jsonb_build_object('before', p_before, 'after', p_after))
              else '{}'::pg_catalog.jsonb end
$$;

--
-- Name: FUNCTION audit_field_changed(p_field text, p_before anyelement, p_after anyelement); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_field_changed(p_field text, p_before anyelement, p_after anyelement) IS 'An updated row''s recorded field as audit changes: {"<field>": {"before": ..., "after": ...}} when it changed, else {}.';

--
-- Name: audit_role_permissions_truncate(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_role_permissions_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  if public.audit_chain_is_here('00000000-0000-0000-0000-000000000000') then
    perform public.audit_append('00000000-0000-0000-0000-000000000000', 'permission.cleared', 'role', '*', '{}');
  end if;
  return null;
end
$$;

--
-- Name: FUNCTION audit_role_permissions_truncate(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_role_permissions_truncate() IS 'Statement trigger: records a TRUNCATE of role_permissions in the audit chain.';

--
-- Name: audit_row_change(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_row_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
declare
  old_row jsonb;
  changes jsonb;
  org uuid;
  target text;
  -- The kind is the trigger's argument, not tg_table_name: on Citus the trigger runs on a shard
  -- (organizations_102008).
  kind constant text := tg_argv[0];
  action text;
begin
  if tg_op = 'INSERT' then
    -- One call a kind, its arguments written out: a statement's fields are looked up when it is
    -- prepared, and only the kind's own table has them; and each variable set on the way costs an
    -- expression more (counted: 15,000 instructions an insert). The NOT NULL columns in one
    -- object: audit_field_added for every column counted 21,000 instructions more.
    if kind = 'user' then
      perform public.audit_append(new.org_id, 'user.created', kind, new.id::text,
                jsonb_build_object('email', jsonb_build_object('after', new.email), 'role', jsonb_build_object('after', new.role),
                                   'status', jsonb_build_object('after', new.status))
                || public.audit_field_added('deleted_at', new.deleted_at));
    elsif kind = 'api_key' then
      perform public.audit_append(new.org_id, 'api_key.issued', kind, new.id::text,
                jsonb_build_object('user_id', jsonb_build_object('after', new.user_id), 'prefix', jsonb_build_object('after', new.prefix),
                                   'name', jsonb_build_object('after', new.name),
                                   'rate_limit_per_hour', jsonb_build_object('after', new.rate_limit_per_hour),
                                   'status', jsonb_build_object('after', new.status))
                || public.audit_field_added('expires_at', new.expires_at) || public.audit_field_added('deleted_at', new.deleted_at)
                || public.audit_field_added('scopes', new.scopes) || public.audit_field_added('replaced_by', new.replaced_by));
    -- A reference table's row is inserted on every node of a Citus cluster: the node of the chain records it.
    elsif kind = 'organization' then
      if public.audit_chain_is_here(new.id) then
        perform public.audit_append(new.id, 'organization.created', kind, new.id::text,
                  jsonb_build_object('name', jsonb_build_object('after', new.name),
                                     'temporal_namespace', jsonb_build_object('after', new.temporal_namespace),
                                     'status', jsonb_build_object('after', new.status))
                  || public.audit_field_added('deleted_at', new.deleted_at));
      end if;
    elsif public.audit_chain_is_here('00000000-0000-0000-0000-000000000000') then
      perform public.audit_append('00000000-0000-0000-0000-000000000000', 'permission.granted', kind, new.role,
                jsonb_build_object('role', jsonb_build_object('after', new.role), 'permission', jsonb_build_object('after', new.permission)));
    end if;
    return null;
  end if;

  if tg_op = 'UPDATE' then
    -- One statement a kind, as above.
    case kind
      when 'user' then
        changes := public.audit_field_changed('email', old.email, new.email) || public.audit_field_changed('role', old.role, new.role)
                   || public.audit_field_changed('status', old.status, new.status)
                   || public.audit_field_changed('deleted_at', old.deleted_at, new.deleted_at);
      when 'api_key' then
        changes := public.audit_field_changed('user_id', old.user_id, new.user_id) || public.audit_field_changed('prefix', old.prefix, new.prefix)
                   || public.audit_field_changed('name', old.name, new.name)
                   || public.audit_field_changed('expires_at', old.expires_at, new.expires_at)
                   || public.audit_field_changed('rate_limit_per_hour', old.rate_limit_per_hour, new.rate_limit_per_hour)
                   || public.audit_field_changed('status', old.status, new.status)
                   || public.audit_field_changed('deleted_at', old.deleted_at, new.deleted_at)
                   || public.audit_field_changed('scopes', old.scopes, new.scopes)
                   || public.audit_field_changed('replaced_by', old.replaced_by, new.replaced_by)
                   || case when new.key_hash is distinct from old.key_hash then '{"key_hash": "changed"}'::jsonb else '{}' end;
      when 'organization' then
        changes := public.audit_field_changed('name', old.name, new.name)
                   || public.audit_field_changed('temporal_namespace', old.temporal_namespace, new.temporal_namespace)
                   || public.audit_field_changed('status', old.status, new.status)
                   || public.audit_field_changed('deleted_at', old.deleted_at, new.deleted_at);
      else
        changes := public.audit_field_changed('role', old.role, new.role)
                   || public.audit_field_changed('permission', old.permission, new.permission);
    end case;
    if changes = '{}' then
      return null;
    end if;
    if kind = 'role' then
      org := '00000000-0000-0000-0000-000000000000';
      target := new.role;
    elsif kind = 'organization' then
      org := new.id;
      target := new.id;
    else
      org := new.org_id;
      target := new.id;
    end if;
    -- A reference table's row changes on every node of a Citus cluster: the node of the chain records it.
    if kind in ('organization', 'role') and not public.audit_chain_is_here(org) then
      return null;
    end if;
    -- From the changes, not the row: a condition's fields are looked up when it is prepared,
    -- whichever kind reaches it.
    if kind = 'role' then
      action := 'permission.changed';
    elsif changes ? 'deleted_at' then
      action := kind || case when changes -> 'deleted_at' -> 'after' = 'null' then '.restored' else '.deleted' end;
    elsif kind = 'api_key' and changes -> 'replaced_by' -> 'after' <> 'null' then
      action := 'api_key.rotated';
    elsif changes ? 'status' then
      action := kind || case changes -> 'status' ->> 'after' when 'active' then '.activated' when 'revoked' then '.revoked' else '.suspended' end;
    elsif kind = 'user' and changes ? 'role' then
      action := 'user.role_changed';
    elsif kind = 'user' and changes ? 'email' then
      action := 'user.email_changed';
    elsif kind = 'api_key' and changes ? 'scopes' then
      action := 'api_key.scopes_changed';
    elsif kind = 'api_key' and changes ? 'rate_limit_per_hour' then
      action := 'api_key.limit_changed';
    elsif changes ? 'name' then
      action := kind || '.renamed';
    else
      action := kind || '.updated';
    end if;
    perform public.audit_append(org, action, kind, target, changes);
    return null;
  end if;

  -- A deleted row: its recorded columns, from the row as JSON.
  old_row := to_jsonb(old);
  if kind = 'role' then
    org := '00000000-0000-0000-0000-000000000000';
    target := old_row ->> 'role';
  else
    target := old_row ->> 'id';
    org := (old_row ->> case when kind = 'organization' then 'id' else 'org_id' end)::uuid;
    -- The rows an organization's purge removes with it: its own event says so. Two IFs, not one
    -- condition: with the kind in the statement, PostgreSQL finds a plan that folds it away
    -- cheaper than its generic plan, and so plans it anew on every event (measured with tg_op:
    -- 4% of an event).
    if kind <> 'organization' then
      if not exists (select from public.organizations o where o.id = org) then
        return null;
      end if;
    end if;
  end if;
  -- A reference table's row changes on every node of a Citus cluster: the node of the chain records it.
  if kind in ('organization', 'role') and not public.audit_chain_is_here(org) then
    return null;
  end if;

  select coalesce(jsonb_object_agg(f.key, jsonb_build_object('before', f.value)), '{}')
    into changes
    from jsonb_each(old_row - array['org_id', 'id', 'created_at', 'updated_at', 'last_used_at', 'email_lower', 'key_hash']) f
   where f.value <> 'null';
  action := case kind when 'role' then 'permission.revoked' else kind || '.purged' end;
  perform public.audit_append(org, action, kind, target, changes);
  return null;
end
$$;

--
-- Name: FUNCTION audit_row_change(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.audit_row_change() IS 'Deferred row trigger: records a change of an organization, user, API key or role mapping in the audit chain.';

--
-- Name: current_org_id(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.current_org_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select public.scope_org('org')::pg_catalog.uuid
$$;

--
-- Name: FUNCTION current_org_id(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.current_org_id() IS 'The organization of the current tenant scope (app.org_id, signed by the store in app.org_token), or NULL.';

--
-- Name: enter_audit_actor(text, text, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.enter_audit_actor(p_actor text, p_actor_token text, p_context text) RETURNS void
    LANGUAGE plpgsql
    AS $$
begin
  if pg_catalog.current_setting('citus.propagate_set_commands', true) operator(pg_catalog.=) 'local' then
    execute pg_catalog.format('set local app.actor = %L', coalesce(p_actor, ''));
    execute pg_catalog.format('set local app.actor_token = %L', coalesce(p_actor_token, ''));
    execute pg_catalog.format('set local app.audit_context = %L', coalesce(p_context, ''));
  else
    perform pg_catalog.set_config('app.actor', coalesce(p_actor, ''), true),
            pg_catalog.set_config('app.actor_token', coalesce(p_actor_token, ''), true),
            pg_catalog.set_config('app.audit_context', coalesce(p_context, ''), true);
  end if;
end
$$;

--
-- Name: FUNCTION enter_audit_actor(p_actor text, p_actor_token text, p_context text); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.enter_audit_actor(p_actor text, p_actor_token text, p_context text) IS 'Sets the transaction''s audit actor, its signature and the caller''s context (SET LOCAL where Citus needs it on the workers).';

--
-- Name: enter_org_scope(uuid, bigint, bytea); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
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

--
-- Name: FUNCTION enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea) IS 'Enters the scope of an organization, signed by the store, for the rest of the transaction (settings app.org_id, app.org_expires, app.org_live, app.org_token).';

--
-- Name: key_cache_tag(uuid); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.key_cache_tag(p_org uuid) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  return (select encode(substr(sha256(k.outer_pad || sha256(k.inner_pad || convert_to('key-cache:' || p_org::text, 'UTF8'))), 1, 16), 'hex')
            from public.tenant_scope_key k where k.id = 1);
end
$$;

--
-- Name: FUNCTION key_cache_tag(p_org uuid); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.key_cache_tag(p_org uuid) IS 'The payload of engine_store_key_cache notifications about an organization: HMAC of it with the scope key, 16 bytes in hex.';

--
-- Name: lease_api_key_permits(uuid, text, bytea, text[], integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer) RETURNS TABLE(outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[], rate_limit_per_hour integer, remaining integer, resets_at timestamp with time zone, permits integer, lease_id uuid, key_expires_at timestamp with time zone, verified_at timestamp with time zone)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer) IS 'Verifies an API key as verify_api_key_in_org does and, if accepted, leases up to p_permits - 1 more units of its hour window.';

--
-- Name: notify_key_cache(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.notify_key_cache() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION notify_key_cache(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.notify_key_cache() IS 'Row trigger: tells processes that cache keys that an organization''s keys, users or status changed.';

--
-- Name: notify_key_cache_all(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.notify_key_cache_all() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  perform pg_notify('engine_store_key_cache', case when tg_table_name = 'tenant_scope_key' then 'rotated' else '' end);
  return null;
end
$$;

--
-- Name: FUNCTION notify_key_cache_all(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.notify_key_cache_all() IS 'Statement trigger: tells processes that cache keys to forget them all (role mapping) or to stop caching (scope key).';

--
-- Name: record_api_key_failure(text, bytea); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.record_api_key_failure(p_prefix text, p_key_hash bytea) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    SET lock_timeout TO '2s'
    AS $$
declare
  key record;
  reason text;
  now_at constant timestamptz := public.verification_now();
begin
  if p_prefix is null or p_key_hash is null then
    return null;
  end if;
  select k.org_id, k.id, k.key_hash, k.status, k.expires_at, k.deleted_at, k.replaced_by, k.rate_limit_per_hour,
         u.status as user_status, u.deleted_at as user_deleted_at, o.status as org_status, o.deleted_at as org_deleted_at,
         (select c.request_count from public.api_key_usage c
           where c.org_id = k.org_id and c.api_key_id = k.id and c.window_start = date_trunc('hour', now_at, 'UTC')) as used
    into key
    from public.api_key_prefixes p
    join public.api_keys k on k.org_id = p.org_id and k.prefix = p.prefix
    join public.users u on u.org_id = k.org_id and u.id = k.user_id
    join public.organizations o on o.id = k.org_id
   where p.prefix = p_prefix;
  if not found then
    return null;
  end if;
  reason := case
    when key.key_hash <> p_key_hash then 'wrong_secret'
    when key.deleted_at is not null then 'deleted'
    when key.status <> 'active' and key.replaced_by is not null then 'rotated'
    when key.status <> 'active' then 'revoked'
    when key.expires_at is not null and key.expires_at <= now_at then 'expired'
    when key.org_deleted_at is not null or key.org_status <> 'active' then 'org_inactive'
    when key.user_deleted_at is not null or key.user_status <> 'active' then 'user_inactive'
    when key.used >= key.rate_limit_per_hour then 'rate_limited'
  end;
  if reason is null then
    return null;
  end if;
  perform public.audit_count_failure(key.org_id, key.id, reason,
    date_trunc(case when reason = 'rate_limited' then 'hour' else 'minute' end, now_at, 'UTC'));
  return reason;
end
$$;

--
-- Name: FUNCTION record_api_key_failure(p_prefix text, p_key_hash bytea); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.record_api_key_failure(p_prefix text, p_key_hash bytea) IS 'Records a refused verification of an existing API key: counts it, and appends api_key.auth_failed once per key, reason and minute.';

--
-- Name: refresh_role_grants(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.refresh_role_grants() RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION refresh_role_grants(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.refresh_role_grants() IS 'Rewrites role_grants from role_permissions (run by a trigger, except on Citus).';

--
-- Name: refuse_api_key_changes_but_revocation_of_suspended_org(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.refuse_api_key_changes_but_revocation_of_suspended_org() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: FUNCTION refuse_api_key_changes_but_revocation_of_suspended_org(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.refuse_api_key_changes_but_revocation_of_suspended_org() IS 'Row trigger on api_keys: in a suspended organization, lets through only updates that revoke or soft-delete a key.';

--
-- Name: refuse_audit_event_changes(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.refuse_audit_event_changes() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  -- audit prune: its DELETE from the default partition, its TRUNCATE of a past month (named
  -- audit_events_yYYYYmMM, with a shard id after it on Citus) before it drops it.
  if current_setting('engine_store.audit_pruning', true) = 'on' then
    if tg_op = 'DELETE' then
      return old;
    end if;
    if tg_op = 'TRUNCATE' and tg_table_name ~ '^audit_events_y[0-9]{4}m[0-9]{2}' then
      return null;
    end if;
  end if;
  raise exception 'audit events are append-only: % refused (only engine-store audit prune removes them)', tg_op using errcode = 'ES005';
end
$$;

--
-- Name: FUNCTION refuse_audit_event_changes(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.refuse_audit_event_changes() IS 'Trigger: refuses UPDATE, DELETE and TRUNCATE of audit events, except the deletes and month truncations of audit prune.';

--
-- Name: refuse_writes_of_inactive_org(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.refuse_writes_of_inactive_org() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: FUNCTION refuse_writes_of_inactive_org(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.refuse_writes_of_inactive_org() IS 'Statement trigger: refuses writes in the scope of a suspended or deleted organization.';

--
-- Name: requested_org_id(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.requested_org_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select nullif(pg_catalog.current_setting('app.org_id', true), '')::pg_catalog.uuid
$$;

--
-- Name: FUNCTION requested_org_id(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.requested_org_id() IS 'The organization app.org_id names, unverified: the default of org_id, checked by the policies.';

--
-- Name: return_api_key_permits(uuid, uuid, uuid, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer) IS 'Gives back the unspent units of a lease taken by lease_api_key_permits, once, within its window.';

--
-- Name: role_permissions_refresh_role_grants(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.role_permissions_refresh_role_grants() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
begin
  perform public.refresh_role_grants();
  return null;
end
$$;

--
-- Name: FUNCTION role_permissions_refresh_role_grants(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.role_permissions_refresh_role_grants() IS 'Statement trigger on role_permissions: keeps role_grants equal to it.';

--
-- Name: rotate_tenant_scope_key(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.rotate_tenant_scope_key() RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION rotate_tenant_scope_key(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.rotate_tenant_scope_key() IS 'Makes or replaces the key of tenant scopes; processes holding the old key must reopen their store.';

--
-- Name: scope_org(text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.scope_org(p_need text) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL SAFE
    AS $$
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

--
-- Name: FUNCTION scope_org(p_need text); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.scope_org(p_need text) IS 'The current tenant scope''s organization, verified (app.org_id, signed in app.org_token): its id (''org''), its id while live (''live'') or its status (''status''); NULL outside a scope.';

--
-- Name: set_updated_at(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;

--
-- Name: FUNCTION set_updated_at(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.set_updated_at() IS 'BEFORE UPDATE trigger: stamps updated_at with the transaction time.';

--
-- Name: uuid_generate_v7(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.uuid_generate_v7() RETURNS uuid
    LANGUAGE sql PARALLEL SAFE
    AS $$
  select pg_catalog.encode(
    pg_catalog.set_bit(pg_catalog.set_bit(
      pg_catalog.overlay(pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
              pg_catalog.substr(pg_catalog.int8send((pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint), 3),
              1, 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

--
-- Name: FUNCTION uuid_generate_v7(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.uuid_generate_v7() IS 'A version 7 (time-ordered) UUID: 48 bits of Unix milliseconds, then random bits.';

--
-- Name: verification_now(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.verification_now() RETURNS timestamp with time zone
    LANGUAGE sql STABLE
    AS $$ select pg_catalog.now() $$;

--
-- Name: FUNCTION verification_now(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.verification_now() IS 'The clock of verify_api_key: the transaction''s start time.';

--
-- Name: verify_api_key(text, bytea, text); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.verify_api_key(p_prefix text, p_key_hash bytea, p_permission text DEFAULT NULL::text) RETURNS TABLE(outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[], rate_limit_per_hour integer, remaining integer, resets_at timestamp with time zone)
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
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

--
-- Name: FUNCTION verify_api_key(p_prefix text, p_key_hash bytea, p_permission text); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.verify_api_key(p_prefix text, p_key_hash bytea, p_permission text) IS 'Verifies an API key by prefix and SHA-256 digest (and, if given, that it grants a permission): finds its organization, then runs verify_api_key_in_org.';

--
-- Name: verify_api_key_in_org(uuid, text, bytea, text[]); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]) RETURNS TABLE(outcome text, org_id uuid, user_id uuid, api_key_id uuid, role text, permissions text[], rate_limit_per_hour integer, remaining integer, resets_at timestamp with time zone)
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    AS $$
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

--
-- Name: FUNCTION verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]) IS 'Verifies an API key of a known organization by prefix and SHA-256 digest (and that it grants every permission of p_required), counts the request, returns the principal or a reason.';

--
-- Name: visible_org_id(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.visible_org_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
  select public.scope_org('live')::pg_catalog.uuid
$$;

--
-- Name: FUNCTION visible_org_id(); Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON FUNCTION public.visible_org_id() IS 'The organization of the current tenant scope while it is live (not soft-deleted), else NULL.';

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: api_key_auth_failures; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_key_auth_failures (
    org_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    reason text NOT NULL,
    period_start timestamp with time zone NOT NULL,
    attempts integer NOT NULL,
    CONSTRAINT api_key_auth_failures_attempts_check CHECK ((attempts >= 1))
);

--
-- Name: TABLE api_key_auth_failures; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.api_key_auth_failures IS 'Refused verifications per API key, reason and minute (hour for rate limiting); the audit event of each is appended once.';

--
-- Name: api_key_leases; Type: TABLE; Schema: public; Owner: -
--

CREATE UNLOGGED TABLE public.api_key_leases (
    org_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    window_start timestamp with time zone NOT NULL,
    permits integer NOT NULL,
    CONSTRAINT api_key_leases_permits_check CHECK ((permits >= 1))
);

ALTER TABLE ONLY public.api_key_leases FORCE ROW LEVEL SECURITY;

--
-- Name: TABLE api_key_leases; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.api_key_leases IS 'Units of an hour window leased by a process beyond the request that leased them, until they are returned or the window ends. Unlogged.';

--
-- Name: api_key_prefixes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_key_prefixes (
    prefix text NOT NULL,
    org_id uuid DEFAULT public.requested_org_id() NOT NULL,
    CONSTRAINT api_key_prefixes_prefix_check CHECK ((prefix ~ '^[A-Za-z0-9]{8,32}$'::text))
);

ALTER TABLE ONLY public.api_key_prefixes FORCE ROW LEVEL SECURITY;

--
-- Name: TABLE api_key_prefixes; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.api_key_prefixes IS 'Every API key prefix ever issued and its organization: global uniqueness, and where verification looks first.';

--
-- Name: api_key_usage; Type: TABLE; Schema: public; Owner: -
--

CREATE UNLOGGED TABLE public.api_key_usage (
    org_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    window_start timestamp with time zone NOT NULL,
    request_count integer NOT NULL,
    CONSTRAINT api_key_usage_request_count_check CHECK ((request_count >= 1))
);

ALTER TABLE ONLY public.api_key_usage FORCE ROW LEVEL SECURITY;

--
-- Name: TABLE api_key_usage; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.api_key_usage IS 'Requests per API key and hour window. Unlogged: after a crash a counter starts again from api_key_usage_saved.';

--
-- Name: api_key_usage_saved; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_key_usage_saved (
    org_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    window_start timestamp with time zone NOT NULL,
    request_count integer NOT NULL,
    CONSTRAINT api_key_usage_saved_request_count_check CHECK ((request_count >= 1))
);

ALTER TABLE ONLY public.api_key_usage_saved FORCE ROW LEVEL SECURITY;

--
-- Name: TABLE api_key_usage_saved; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.api_key_usage_saved IS 'Counts of api_key_usage saved every 64th of the limit, from which a counter lost in a crash starts again.';

--
-- Name: api_keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_keys (
    org_id uuid DEFAULT public.requested_org_id() NOT NULL,
    id uuid DEFAULT public.uuid_generate_v7() NOT NULL,
    user_id uuid NOT NULL,
    prefix text NOT NULL,
    key_hash bytea NOT NULL,
    name text NOT NULL,
    expires_at timestamp with time zone,
    rate_limit_per_hour integer DEFAULT 1000 NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    last_used_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone,
    scopes text[],
    replaced_by uuid,
    CONSTRAINT api_keys_deleted_at_check CHECK (((deleted_at IS NULL) OR (deleted_at >= created_at))),
    CONSTRAINT api_keys_expires_at_check CHECK (((expires_at IS NULL) OR (expires_at > created_at))),
    CONSTRAINT api_keys_key_hash_check CHECK ((octet_length(key_hash) = 32)),
    CONSTRAINT api_keys_name_check CHECK (((char_length(name) >= 1) AND (char_length(name) <= 100) AND (name = btrim(name)) AND (name !~ '[[:cntrl:]]'::text))),
    CONSTRAINT api_keys_prefix_check CHECK ((prefix ~ '^[A-Za-z0-9]{8,32}$'::text)),
    CONSTRAINT api_keys_rate_limit_per_hour_check CHECK (((rate_limit_per_hour >= 1) AND (rate_limit_per_hour <= 1000000))),
    CONSTRAINT api_keys_scopes_check CHECK (((scopes IS NULL) OR ((cardinality(scopes) <= 64) AND (array_position(scopes, NULL::text) IS NULL)))),
    CONSTRAINT api_keys_status_check CHECK ((status = ANY (ARRAY['active'::text, 'revoked'::text])))
);
ALTER TABLE ONLY public.api_keys ALTER COLUMN org_id SET (n_distinct=-0.0001);

ALTER TABLE ONLY public.api_keys FORCE ROW LEVEL SECURITY;

--
-- Name: TABLE api_keys; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.api_keys IS 'API keys of users. Only a SHA-256 digest of each key is kept; the prefix finds it.';

--
-- Name: audit_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_events (
    org_id uuid NOT NULL,
    seq public.audit_seq NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    actor_kind public.audit_actor_kind NOT NULL,
    actor_id text NOT NULL,
    action public.audit_action NOT NULL,
    target_kind text NOT NULL,
    target_id text NOT NULL,
    changes jsonb NOT NULL,
    context jsonb,
    prev_hash public.sha256_digest NOT NULL,
    hash public.sha256_digest NOT NULL
)
PARTITION BY RANGE (occurred_at);

--
-- Name: TABLE audit_events; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.audit_events IS 'The audit trail: one row per audited change, per organization a hash chain (seq, prev_hash, hash). Append-only; partitioned by month.';

--
-- Name: audit_events_default; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_events_default (
    org_id uuid NOT NULL,
    seq public.audit_seq NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    actor_kind public.audit_actor_kind NOT NULL,
    actor_id text NOT NULL,
    action public.audit_action NOT NULL,
    target_kind text NOT NULL,
    target_id text NOT NULL,
    changes jsonb NOT NULL,
    context jsonb,
    prev_hash public.sha256_digest NOT NULL,
    hash public.sha256_digest NOT NULL
);

--
-- Name: audit_heads; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_heads (
    org_id uuid NOT NULL,
    seq public.audit_head_seq NOT NULL,
    hash public.sha256_digest NOT NULL,
    occurred_at timestamp with time zone NOT NULL
);

--
-- Name: TABLE audit_heads; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.audit_heads IS 'The last event of each organization''s audit chain: its seq, hash and time. Its row lock orders the appends.';

--
-- Name: audit_retention; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_retention (
    id smallint DEFAULT 1 NOT NULL,
    keep_days integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT audit_retention_id_check CHECK ((id = 1)),
    CONSTRAINT audit_retention_keep_days_check CHECK (((keep_days >= 1) AND (keep_days <= 36500)))
);

--
-- Name: TABLE audit_retention; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.audit_retention IS 'How many days audit events are kept: what audit prune removes by default and doctor checks. Owner only.';

--
-- Name: organizations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.organizations (
    id uuid DEFAULT public.uuid_generate_v7() NOT NULL,
    name text NOT NULL,
    temporal_namespace text NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT organizations_deleted_at_check CHECK (((deleted_at IS NULL) OR (deleted_at >= created_at))),
    CONSTRAINT organizations_name_check CHECK (((char_length(name) >= 1) AND (char_length(name) <= 100) AND (name = btrim(name)) AND (name !~ '[[:cntrl:]]'::text))),
    CONSTRAINT organizations_status_check CHECK ((status = ANY (ARRAY['active'::text, 'suspended'::text]))),
    CONSTRAINT organizations_temporal_namespace_check CHECK ((temporal_namespace ~ '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$'::text))
);

--
-- Name: TABLE organizations; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.organizations IS 'Tenants. Global table: every tenant-owned row carries the org_id of one of these.';

--
-- Name: permissions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.permissions (
    key text NOT NULL,
    description text NOT NULL,
    CONSTRAINT permissions_key_check CHECK ((key ~ '^[a-z]+:[a-z]+$'::text))
);

--
-- Name: TABLE permissions; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.permissions IS 'Global, read-mostly: what can be done, as stable keys such as workflow:read.';

--
-- Name: role_grants; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.role_grants (
    role text NOT NULL,
    permissions text[] NOT NULL,
    CONSTRAINT role_grants_permissions_check CHECK ((array_position(permissions, NULL::text) IS NULL)),
    CONSTRAINT role_grants_role_check CHECK ((role = ANY (ARRAY['admin'::text, 'manager'::text, 'customer'::text])))
);

--
-- Name: TABLE role_grants; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.role_grants IS 'The permissions of each role as one sorted array: role_permissions aggregated, for verify_api_key. Kept by refresh_role_grants().';

--
-- Name: role_permissions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.role_permissions (
    role text NOT NULL,
    permission text NOT NULL,
    CONSTRAINT role_permissions_role_check CHECK ((role = ANY (ARRAY['admin'::text, 'manager'::text, 'customer'::text])))
);

--
-- Name: TABLE role_permissions; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.role_permissions IS 'Global, read-mostly: which permissions each role grants.';

--
-- Name: schedules; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schedules (
    id uuid DEFAULT public.uuid_generate_v7() NOT NULL,
    workflow_id text NOT NULL,
    cron_expression text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    input jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    org_id uuid DEFAULT public.requested_org_id() NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT schedules_deleted_at_check CHECK (((deleted_at IS NULL) OR (deleted_at >= created_at)))
);
ALTER TABLE ONLY public.schedules ALTER COLUMN org_id SET (n_distinct=-0.0001);

ALTER TABLE ONLY public.schedules FORCE ROW LEVEL SECURITY;

--
-- Name: task_states; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.task_states (
    task_exec_id uuid NOT NULL,
    task_id text NOT NULL,
    workflow_exec_id uuid NOT NULL,
    workflow_id text NOT NULL,
    component text NOT NULL,
    status text NOT NULL,
    execution_type text DEFAULT 'basic'::text NOT NULL,
    agent_id text,
    tool_id text,
    action_id text,
    parent_state_id uuid,
    input jsonb,
    output jsonb,
    error jsonb,
    usage jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    org_id uuid DEFAULT public.requested_org_id() NOT NULL
);
ALTER TABLE ONLY public.task_states ALTER COLUMN org_id SET (n_distinct=-0.0001);

ALTER TABLE ONLY public.task_states FORCE ROW LEVEL SECURITY;

--
-- Name: tenant_scope_key; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tenant_scope_key (
    id smallint DEFAULT 1 NOT NULL,
    secret bytea NOT NULL,
    inner_pad bytea NOT NULL,
    outer_pad bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT tenant_scope_key_id_check CHECK ((id = 1)),
    CONSTRAINT tenant_scope_key_pads_check CHECK (((octet_length(inner_pad) = 64) AND (octet_length(outer_pad) = 64))),
    CONSTRAINT tenant_scope_key_secret_check CHECK ((octet_length(secret) = 32))
);

--
-- Name: TABLE tenant_scope_key; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.tenant_scope_key IS 'The HMAC key that signs tenant scopes (app.org_token, checked by current_org_id and visible_org_id). Owner only.';

--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    org_id uuid DEFAULT public.requested_org_id() NOT NULL,
    id uuid DEFAULT public.uuid_generate_v7() NOT NULL,
    email text NOT NULL,
    email_lower text GENERATED ALWAYS AS (lower(email)) STORED,
    role text NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone,
    CONSTRAINT users_deleted_at_check CHECK (((deleted_at IS NULL) OR (deleted_at >= created_at))),
    CONSTRAINT users_email_check CHECK (((char_length(email) <= 254) AND (email ~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+\.[^@[:space:][:cntrl:]]+$'::text))),
    CONSTRAINT users_role_check CHECK ((role = ANY (ARRAY['admin'::text, 'manager'::text, 'customer'::text]))),
    CONSTRAINT users_status_check CHECK ((status = ANY (ARRAY['active'::text, 'suspended'::text])))
);
ALTER TABLE ONLY public.users ALTER COLUMN org_id SET (n_distinct=-0.0001);

ALTER TABLE ONLY public.users FORCE ROW LEVEL SECURITY;

--
-- Name: TABLE users; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON TABLE public.users IS 'People of one organization. Email is unique per organization among live users, ignoring case.';

--
-- Name: workflow_states; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.workflow_states (
    workflow_exec_id uuid NOT NULL,
    workflow_id text NOT NULL,
    status text NOT NULL,
    input jsonb,
    output jsonb,
    error jsonb,
    usage jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    org_id uuid DEFAULT public.requested_org_id() NOT NULL
);
ALTER TABLE ONLY public.workflow_states ALTER COLUMN org_id SET (n_distinct=-0.0001);

ALTER TABLE ONLY public.workflow_states FORCE ROW LEVEL SECURITY;

--
-- Name: audit_events_default; Type: TABLE ATTACH; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_events ATTACH PARTITION public.audit_events_default DEFAULT;

--
-- Name: api_key_auth_failures api_key_auth_failures_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_auth_failures
    ADD CONSTRAINT api_key_auth_failures_pkey PRIMARY KEY (org_id, api_key_id, reason, period_start);

--
-- Name: api_key_leases api_key_leases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_leases
    ADD CONSTRAINT api_key_leases_pkey PRIMARY KEY (org_id, api_key_id, id);

--
-- Name: api_key_prefixes api_key_prefixes_org_id_prefix_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_prefixes
    ADD CONSTRAINT api_key_prefixes_org_id_prefix_key UNIQUE (org_id, prefix);

--
-- Name: api_key_prefixes api_key_prefixes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_prefixes
    ADD CONSTRAINT api_key_prefixes_pkey PRIMARY KEY (prefix);

--
-- Name: api_key_usage api_key_usage_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_usage
    ADD CONSTRAINT api_key_usage_pkey PRIMARY KEY (org_id, api_key_id, window_start);

--
-- Name: api_key_usage_saved api_key_usage_saved_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_usage_saved
    ADD CONSTRAINT api_key_usage_saved_pkey PRIMARY KEY (org_id, api_key_id, window_start);

--
-- Name: api_keys api_keys_org_id_prefix_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_org_id_prefix_key UNIQUE (org_id, prefix);

--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (org_id, id);

--
-- Name: audit_events audit_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (org_id, seq, occurred_at);

--
-- Name: audit_events_default audit_events_default_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_events_default
    ADD CONSTRAINT audit_events_default_pkey PRIMARY KEY (org_id, seq, occurred_at);

--
-- Name: audit_heads audit_heads_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_heads
    ADD CONSTRAINT audit_heads_pkey PRIMARY KEY (org_id);

--
-- Name: audit_retention audit_retention_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_retention
    ADD CONSTRAINT audit_retention_pkey PRIMARY KEY (id);

--
-- Name: organizations organizations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.organizations
    ADD CONSTRAINT organizations_pkey PRIMARY KEY (id);

--
-- Name: organizations organizations_temporal_namespace_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.organizations
    ADD CONSTRAINT organizations_temporal_namespace_key UNIQUE (temporal_namespace);

--
-- Name: permissions permissions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.permissions
    ADD CONSTRAINT permissions_pkey PRIMARY KEY (key);

--
-- Name: role_grants role_grants_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.role_grants
    ADD CONSTRAINT role_grants_pkey PRIMARY KEY (role);

--
-- Name: role_permissions role_permissions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.role_permissions
    ADD CONSTRAINT role_permissions_pkey PRIMARY KEY (role, permission);

--
-- Name: schedules schedules_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (org_id, id);

--
-- Name: task_states task_states_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_states
    ADD CONSTRAINT task_states_pkey PRIMARY KEY (org_id, task_exec_id);

--
-- Name: tenant_scope_key tenant_scope_key_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tenant_scope_key
    ADD CONSTRAINT tenant_scope_key_pkey PRIMARY KEY (id);

--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (org_id, id);

--
-- Name: workflow_states workflow_states_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.workflow_states
    ADD CONSTRAINT workflow_states_pkey PRIMARY KEY (org_id, workflow_exec_id);

--
-- Name: api_keys_org_id_created_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX api_keys_org_id_created_at_idx ON public.api_keys USING btree (org_id, created_at, id);

--
-- Name: api_keys_org_id_replaced_by_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX api_keys_org_id_replaced_by_idx ON public.api_keys USING btree (org_id, replaced_by);

--
-- Name: api_keys_org_id_status_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX api_keys_org_id_status_idx ON public.api_keys USING btree (org_id, status);

--
-- Name: api_keys_org_id_user_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX api_keys_org_id_user_id_idx ON public.api_keys USING btree (org_id, user_id);

--
-- Name: api_keys_org_id_user_id_name_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX api_keys_org_id_user_id_name_key ON public.api_keys USING btree (org_id, user_id, lower(name)) WHERE ((deleted_at IS NULL) AND (status = 'active'::text) AND (replaced_by IS NULL));

--
-- Name: audit_events_org_id_target_id_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_events_org_id_target_id_seq_idx ON ONLY public.audit_events USING btree (org_id, target_id, seq);

--
-- Name: audit_events_default_org_id_target_id_seq_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_events_default_org_id_target_id_seq_idx ON public.audit_events_default USING btree (org_id, target_id, seq);

--
-- Name: organizations_created_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX organizations_created_at_idx ON public.organizations USING btree (created_at, id);

--
-- Name: organizations_id_text_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX organizations_id_text_key ON public.organizations USING btree (((id)::text) COLLATE "C");

--
-- Name: organizations_name_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX organizations_name_key ON public.organizations USING btree (lower(name)) WHERE (deleted_at IS NULL);

--
-- Name: role_permissions_permission_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX role_permissions_permission_idx ON public.role_permissions USING btree (permission);

--
-- Name: schedules_org_id_created_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX schedules_org_id_created_at_idx ON public.schedules USING btree (org_id, created_at, id);

--
-- Name: schedules_org_id_workflow_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX schedules_org_id_workflow_id_idx ON public.schedules USING btree (org_id, workflow_id);

--
-- Name: task_states_org_id_created_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX task_states_org_id_created_at_idx ON public.task_states USING btree (org_id, created_at, task_exec_id);

--
-- Name: task_states_org_id_parent_state_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX task_states_org_id_parent_state_id_idx ON public.task_states USING btree (org_id, parent_state_id);

--
-- Name: task_states_org_id_status_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX task_states_org_id_status_idx ON public.task_states USING btree (org_id, status);

--
-- Name: task_states_org_id_workflow_exec_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX task_states_org_id_workflow_exec_id_idx ON public.task_states USING btree (org_id, workflow_exec_id);

--
-- Name: task_states_org_id_workflow_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX task_states_org_id_workflow_id_idx ON public.task_states USING btree (org_id, workflow_id);

--
-- Name: users_org_id_created_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX users_org_id_created_at_idx ON public.users USING btree (org_id, created_at, id);

--
-- Name: users_org_id_email_key; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX users_org_id_email_key ON public.users USING btree (org_id, email_lower) WHERE (deleted_at IS NULL);

--
-- Name: users_org_id_status_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX users_org_id_status_idx ON public.users USING btree (org_id, status);

--
-- Name: workflow_states_org_id_created_at_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX workflow_states_org_id_created_at_idx ON public.workflow_states USING btree (org_id, created_at, workflow_exec_id);

--
-- Name: workflow_states_org_id_status_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX workflow_states_org_id_status_idx ON public.workflow_states USING btree (org_id, status);

--
-- Name: workflow_states_org_id_workflow_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX workflow_states_org_id_workflow_id_idx ON public.workflow_states USING btree (org_id, workflow_id);

--
-- Name: audit_events_default_org_id_target_id_seq_idx; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.audit_events_org_id_target_id_seq_idx ATTACH PARTITION public.audit_events_default_org_id_target_id_seq_idx;

--
-- Name: audit_events_default_pkey; Type: INDEX ATTACH; Schema: public; Owner: -
--

ALTER INDEX public.audit_events_pkey ATTACH PARTITION public.audit_events_default_pkey;

--
-- Name: api_key_prefixes api_key_prefixes_refuse_writes_of_inactive_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER api_key_prefixes_refuse_writes_of_inactive_org BEFORE INSERT OR DELETE OR UPDATE ON public.api_key_prefixes FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_writes_of_inactive_org();

--
-- Name: api_keys api_keys_audit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE CONSTRAINT TRIGGER api_keys_audit AFTER INSERT OR DELETE ON public.api_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.audit_row_change('api_key');

--
-- Name: api_keys api_keys_audit_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE CONSTRAINT TRIGGER api_keys_audit_update AFTER UPDATE ON public.api_keys DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (((to_jsonb(old.*) - 'last_used_at'::text) IS DISTINCT FROM (to_jsonb(new.*) - 'last_used_at'::text))) EXECUTE FUNCTION public.audit_row_change('api_key');

--
-- Name: api_keys api_keys_notify_key_cache; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER api_keys_notify_key_cache AFTER UPDATE ON public.api_keys FOR EACH ROW WHEN (((old.status IS DISTINCT FROM new.status) OR (old.expires_at IS DISTINCT FROM new.expires_at) OR (old.deleted_at IS DISTINCT FROM new.deleted_at) OR (old.scopes IS DISTINCT FROM new.scopes) OR (old.rate_limit_per_hour IS DISTINCT FROM new.rate_limit_per_hour) OR (old.key_hash IS DISTINCT FROM new.key_hash) OR (old.replaced_by IS DISTINCT FROM new.replaced_by) OR (old.user_id IS DISTINCT FROM new.user_id))) EXECUTE FUNCTION public.notify_key_cache();

--
-- Name: api_keys api_keys_notify_key_cache_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER api_keys_notify_key_cache_delete AFTER DELETE ON public.api_keys FOR EACH ROW EXECUTE FUNCTION public.notify_key_cache();

--
-- Name: api_keys api_keys_refuse_changes_but_revocation_of_suspended_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER api_keys_refuse_changes_but_revocation_of_suspended_org BEFORE UPDATE ON public.api_keys FOR EACH ROW EXECUTE FUNCTION public.refuse_api_key_changes_but_revocation_of_suspended_org();

--
-- Name: api_keys api_keys_refuse_writes_of_inactive_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER api_keys_refuse_writes_of_inactive_org BEFORE INSERT OR DELETE OR UPDATE ON public.api_keys FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_writes_of_inactive_org('revocations_allowed');

--
-- Name: api_keys api_keys_set_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER api_keys_set_updated_at BEFORE UPDATE ON public.api_keys FOR EACH ROW WHEN (((to_jsonb(old.*) - 'last_used_at'::text) IS DISTINCT FROM (to_jsonb(new.*) - 'last_used_at'::text))) EXECUTE FUNCTION public.set_updated_at();

--
-- Name: audit_events audit_events_append_only; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_events_append_only BEFORE DELETE OR UPDATE ON public.audit_events FOR EACH ROW EXECUTE FUNCTION public.refuse_audit_event_changes();

--
-- Name: audit_events_default audit_events_default_no_truncate; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_events_default_no_truncate BEFORE TRUNCATE ON public.audit_events_default FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_audit_event_changes();

--
-- Name: audit_events audit_events_no_truncate; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON public.audit_events FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_audit_event_changes();

--
-- Name: organizations organizations_audit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE CONSTRAINT TRIGGER organizations_audit AFTER INSERT OR DELETE OR UPDATE ON public.organizations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.audit_row_change('organization');

--
-- Name: organizations organizations_notify_key_cache; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER organizations_notify_key_cache AFTER UPDATE ON public.organizations FOR EACH ROW WHEN (((old.status IS DISTINCT FROM new.status) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION public.notify_key_cache();

--
-- Name: organizations organizations_notify_key_cache_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER organizations_notify_key_cache_delete AFTER DELETE ON public.organizations FOR EACH ROW EXECUTE FUNCTION public.notify_key_cache();

--
-- Name: organizations organizations_set_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER organizations_set_updated_at BEFORE UPDATE ON public.organizations FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

--
-- Name: role_permissions role_permissions_audit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE CONSTRAINT TRIGGER role_permissions_audit AFTER INSERT OR DELETE OR UPDATE ON public.role_permissions DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.audit_row_change('role');

--
-- Name: role_permissions role_permissions_audit_truncate; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER role_permissions_audit_truncate AFTER TRUNCATE ON public.role_permissions FOR EACH STATEMENT EXECUTE FUNCTION public.audit_role_permissions_truncate();

--
-- Name: role_permissions role_permissions_notify_key_cache; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER role_permissions_notify_key_cache AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.role_permissions FOR EACH STATEMENT EXECUTE FUNCTION public.notify_key_cache_all();

--
-- Name: role_permissions role_permissions_refresh_role_grants; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER role_permissions_refresh_role_grants AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.role_permissions FOR EACH STATEMENT EXECUTE FUNCTION public.role_permissions_refresh_role_grants();

--
-- Name: schedules schedules_refuse_writes_of_inactive_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER schedules_refuse_writes_of_inactive_org BEFORE INSERT OR DELETE OR UPDATE ON public.schedules FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_writes_of_inactive_org();

--
-- Name: schedules schedules_set_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER schedules_set_updated_at BEFORE UPDATE ON public.schedules FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

--
-- Name: task_states task_states_refuse_writes_of_inactive_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER task_states_refuse_writes_of_inactive_org BEFORE INSERT OR DELETE OR UPDATE ON public.task_states FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_writes_of_inactive_org();

--
-- Name: task_states task_states_set_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER task_states_set_updated_at BEFORE UPDATE ON public.task_states FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

--
-- Name: tenant_scope_key tenant_scope_key_notify_key_cache; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER tenant_scope_key_notify_key_cache AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ON public.tenant_scope_key FOR EACH STATEMENT EXECUTE FUNCTION public.notify_key_cache_all();

--
-- Name: users users_audit; Type: TRIGGER; Schema: public; Owner: -
--

CREATE CONSTRAINT TRIGGER users_audit AFTER INSERT OR DELETE OR UPDATE ON public.users DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.audit_row_change('user');

--
-- Name: users users_notify_key_cache; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER users_notify_key_cache AFTER UPDATE ON public.users FOR EACH ROW WHEN (((old.role IS DISTINCT FROM new.role) OR (old.status IS DISTINCT FROM new.status) OR (old.deleted_at IS DISTINCT FROM new.deleted_at))) EXECUTE FUNCTION public.notify_key_cache();

--
-- Name: users users_notify_key_cache_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER users_notify_key_cache_delete AFTER DELETE ON public.users FOR EACH ROW EXECUTE FUNCTION public.notify_key_cache();

--
-- Name: users users_refuse_writes_of_inactive_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER users_refuse_writes_of_inactive_org BEFORE INSERT OR DELETE OR UPDATE ON public.users FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_writes_of_inactive_org();

--
-- Name: users users_set_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

--
-- Name: workflow_states workflow_states_refuse_writes_of_inactive_org; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER workflow_states_refuse_writes_of_inactive_org BEFORE INSERT OR DELETE OR UPDATE ON public.workflow_states FOR EACH STATEMENT EXECUTE FUNCTION public.refuse_writes_of_inactive_org();

--
-- Name: workflow_states workflow_states_set_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER workflow_states_set_updated_at BEFORE UPDATE ON public.workflow_states FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

--
-- Name: api_key_leases api_key_leases_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_leases
    ADD CONSTRAINT api_key_leases_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: api_key_usage api_key_usage_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_usage
    ADD CONSTRAINT api_key_usage_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: api_key_usage_saved api_key_usage_saved_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_key_usage_saved
    ADD CONSTRAINT api_key_usage_saved_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: api_keys api_keys_prefix_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_prefix_fkey FOREIGN KEY (org_id, prefix) REFERENCES public.api_key_prefixes(org_id, prefix);

--
-- Name: api_keys api_keys_replaced_by_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_replaced_by_fkey FOREIGN KEY (org_id, replaced_by) REFERENCES public.api_keys(org_id, id) DEFERRABLE INITIALLY DEFERRED;

--
-- Name: api_keys api_keys_user_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_user_fkey FOREIGN KEY (org_id, user_id) REFERENCES public.users(org_id, id) ON DELETE CASCADE;

--
-- Name: role_permissions role_permissions_permission_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.role_permissions
    ADD CONSTRAINT role_permissions_permission_fkey FOREIGN KEY (permission) REFERENCES public.permissions(key) ON DELETE RESTRICT;

--
-- Name: schedules schedules_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schedules
    ADD CONSTRAINT schedules_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: task_states task_states_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_states
    ADD CONSTRAINT task_states_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: task_states task_states_parent_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_states
    ADD CONSTRAINT task_states_parent_fkey FOREIGN KEY (org_id, parent_state_id) REFERENCES public.task_states(org_id, task_exec_id) ON DELETE CASCADE;

--
-- Name: task_states task_states_workflow_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.task_states
    ADD CONSTRAINT task_states_workflow_fkey FOREIGN KEY (org_id, workflow_exec_id) REFERENCES public.workflow_states(org_id, workflow_exec_id) ON DELETE CASCADE;

--
-- Name: users users_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: workflow_states workflow_states_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.workflow_states
    ADD CONSTRAINT workflow_states_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.organizations(id) ON DELETE CASCADE;

--
-- Name: api_key_auth_failures; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.api_key_auth_failures ENABLE ROW LEVEL SECURITY;

--
-- Name: api_key_auth_failures api_key_auth_failures_tenant_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_auth_failures_tenant_read ON public.api_key_auth_failures FOR SELECT TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id)));

--
-- Name: api_key_leases; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.api_key_leases ENABLE ROW LEVEL SECURITY;

--
-- Name: api_key_leases api_key_leases_key_verifier; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_leases_key_verifier ON public.api_key_leases TO app_key_verifier USING (true) WITH CHECK (true);

--
-- Name: api_key_prefixes; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.api_key_prefixes ENABLE ROW LEVEL SECURITY;

--
-- Name: api_key_prefixes api_key_prefixes_key_verifier; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_prefixes_key_verifier ON public.api_key_prefixes FOR SELECT TO app_key_verifier USING (true);

--
-- Name: api_key_prefixes api_key_prefixes_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_prefixes_tenant_isolation ON public.api_key_prefixes TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: api_key_usage; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.api_key_usage ENABLE ROW LEVEL SECURITY;

--
-- Name: api_key_usage api_key_usage_key_verifier; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_usage_key_verifier ON public.api_key_usage TO app_key_verifier USING (true) WITH CHECK (true);

--
-- Name: api_key_usage_saved; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.api_key_usage_saved ENABLE ROW LEVEL SECURITY;

--
-- Name: api_key_usage_saved api_key_usage_saved_key_verifier; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_usage_saved_key_verifier ON public.api_key_usage_saved TO app_key_verifier USING (true) WITH CHECK (true);

--
-- Name: api_key_usage api_key_usage_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_key_usage_tenant_isolation ON public.api_key_usage TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: api_keys; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.api_keys ENABLE ROW LEVEL SECURITY;

--
-- Name: api_keys api_keys_key_verifier_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_keys_key_verifier_read ON public.api_keys FOR SELECT TO app_key_verifier USING (true);

--
-- Name: api_keys api_keys_key_verifier_touch; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_keys_key_verifier_touch ON public.api_keys FOR UPDATE TO app_key_verifier USING (true) WITH CHECK (true);

--
-- Name: api_keys api_keys_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY api_keys_tenant_isolation ON public.api_keys TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: audit_events; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.audit_events ENABLE ROW LEVEL SECURITY;

--
-- Name: audit_events audit_events_tenant_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY audit_events_tenant_read ON public.audit_events FOR SELECT TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id)));

--
-- Name: audit_heads; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.audit_heads ENABLE ROW LEVEL SECURITY;

--
-- Name: audit_heads audit_heads_tenant_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY audit_heads_tenant_read ON public.audit_heads FOR SELECT TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id)));

--
-- Name: organizations; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.organizations ENABLE ROW LEVEL SECURITY;

--
-- Name: organizations organizations_key_verifier; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY organizations_key_verifier ON public.organizations FOR SELECT TO app_key_verifier USING (true);

--
-- Name: organizations organizations_tenant_read; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY organizations_tenant_read ON public.organizations FOR SELECT TO app_tenant USING ((id = ( SELECT public.visible_org_id() AS visible_org_id)));

--
-- Name: schedules; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.schedules ENABLE ROW LEVEL SECURITY;

--
-- Name: schedules schedules_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY schedules_tenant_isolation ON public.schedules TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: task_states; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.task_states ENABLE ROW LEVEL SECURITY;

--
-- Name: task_states task_states_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY task_states_tenant_isolation ON public.task_states TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: users; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;

--
-- Name: users users_key_verifier; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY users_key_verifier ON public.users FOR SELECT TO app_key_verifier USING (true);

--
-- Name: users users_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY users_tenant_isolation ON public.users TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: workflow_states; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.workflow_states ENABLE ROW LEVEL SECURITY;

--
-- Name: workflow_states workflow_states_tenant_isolation; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY workflow_states_tenant_isolation ON public.workflow_states TO app_tenant USING ((org_id = ( SELECT public.visible_org_id() AS visible_org_id))) WITH CHECK ((org_id = ( SELECT public.current_org_id() AS current_org_id)));

--
-- Name: SCHEMA public; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA public TO app_tenant;
GRANT USAGE ON SCHEMA public TO app_key_verifier;

--
-- Name: FUNCTION audit_append(p_org uuid, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_actor_kind text, p_actor_id text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_append(p_org uuid, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_actor_kind text, p_actor_id text) FROM PUBLIC;

--
-- Name: FUNCTION audit_chain_is_here(p_org uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_chain_is_here(p_org uuid) FROM PUBLIC;

--
-- Name: FUNCTION audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamp with time zone); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION public.audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamp with time zone) TO app_key_verifier;

--
-- Name: FUNCTION audit_ensure_partitions(p_from timestamp with time zone, p_months integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_ensure_partitions(p_from timestamp with time zone, p_months integer) FROM PUBLIC;

--
-- Name: FUNCTION audit_event_content(p_org uuid, p_seq bigint, p_occurred_at timestamp with time zone, p_actor_kind text, p_actor_id text, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_context jsonb); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_event_content(p_org uuid, p_seq bigint, p_occurred_at timestamp with time zone, p_actor_kind text, p_actor_id text, p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_context jsonb) FROM PUBLIC;

--
-- Name: FUNCTION audit_field_added(p_field text, p_value anyelement); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_field_added(p_field text, p_value anyelement) FROM PUBLIC;

--
-- Name: FUNCTION audit_field_changed(p_field text, p_before anyelement, p_after anyelement); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_field_changed(p_field text, p_before anyelement, p_after anyelement) FROM PUBLIC;

--
-- Name: FUNCTION audit_role_permissions_truncate(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_role_permissions_truncate() FROM PUBLIC;

--
-- Name: FUNCTION audit_row_change(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.audit_row_change() FROM PUBLIC;

--
-- Name: FUNCTION current_org_id(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.current_org_id() FROM PUBLIC;
GRANT ALL ON FUNCTION public.current_org_id() TO app_tenant;
GRANT ALL ON FUNCTION public.current_org_id() TO app_key_verifier;

--
-- Name: FUNCTION enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea) FROM PUBLIC;
GRANT ALL ON FUNCTION public.enter_org_scope(p_org uuid, p_expires_at bigint, p_proof bytea) TO app_tenant;

--
-- Name: FUNCTION key_cache_tag(p_org uuid); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.key_cache_tag(p_org uuid) FROM PUBLIC;

--
-- Name: FUNCTION lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer) TO app_tenant;

--
-- Name: FUNCTION notify_key_cache(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.notify_key_cache() FROM PUBLIC;

--
-- Name: FUNCTION notify_key_cache_all(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.notify_key_cache_all() FROM PUBLIC;

--
-- Name: FUNCTION record_api_key_failure(p_prefix text, p_key_hash bytea); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.record_api_key_failure(p_prefix text, p_key_hash bytea) FROM PUBLIC;
GRANT ALL ON FUNCTION public.record_api_key_failure(p_prefix text, p_key_hash bytea) TO app_tenant;

--
-- Name: FUNCTION refresh_role_grants(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.refresh_role_grants() FROM PUBLIC;

--
-- Name: FUNCTION refuse_api_key_changes_but_revocation_of_suspended_org(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.refuse_api_key_changes_but_revocation_of_suspended_org() FROM PUBLIC;

--
-- Name: FUNCTION refuse_audit_event_changes(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.refuse_audit_event_changes() FROM PUBLIC;

--
-- Name: FUNCTION refuse_writes_of_inactive_org(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.refuse_writes_of_inactive_org() FROM PUBLIC;

--
-- Name: FUNCTION requested_org_id(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.requested_org_id() FROM PUBLIC;
GRANT ALL ON FUNCTION public.requested_org_id() TO app_tenant;

--
-- Name: FUNCTION return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer) FROM PUBLIC;
GRANT ALL ON FUNCTION public.return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer) TO app_tenant;

--
-- Name: FUNCTION role_permissions_refresh_role_grants(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.role_permissions_refresh_role_grants() FROM PUBLIC;

--
-- Name: FUNCTION rotate_tenant_scope_key(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.rotate_tenant_scope_key() FROM PUBLIC;

--
-- Name: FUNCTION scope_org(p_need text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.scope_org(p_need text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.scope_org(p_need text) TO app_tenant;
GRANT ALL ON FUNCTION public.scope_org(p_need text) TO app_key_verifier;

--
-- Name: FUNCTION set_updated_at(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.set_updated_at() FROM PUBLIC;

--
-- Name: FUNCTION uuid_generate_v7(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.uuid_generate_v7() FROM PUBLIC;
GRANT ALL ON FUNCTION public.uuid_generate_v7() TO app_tenant;

--
-- Name: FUNCTION verification_now(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.verification_now() FROM PUBLIC;
GRANT ALL ON FUNCTION public.verification_now() TO app_key_verifier;

--
-- Name: FUNCTION verify_api_key(p_prefix text, p_key_hash bytea, p_permission text); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.verify_api_key(p_prefix text, p_key_hash bytea, p_permission text) FROM PUBLIC;
GRANT ALL ON FUNCTION public.verify_api_key(p_prefix text, p_key_hash bytea, p_permission text) TO app_tenant;

--
-- Name: FUNCTION verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION public.verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]) TO app_tenant;

--
-- Name: FUNCTION visible_org_id(); Type: ACL; Schema: public; Owner: -
--

REVOKE ALL ON FUNCTION public.visible_org_id() FROM PUBLIC;
GRANT ALL ON FUNCTION public.visible_org_id() TO app_tenant;

--
-- Name: TABLE api_key_auth_failures; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.api_key_auth_failures TO app_tenant;

--
-- Name: TABLE api_key_leases; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE ON TABLE public.api_key_leases TO app_key_verifier;

--
-- Name: TABLE api_key_prefixes; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT ON TABLE public.api_key_prefixes TO app_tenant;
GRANT SELECT ON TABLE public.api_key_prefixes TO app_key_verifier;

--
-- Name: TABLE api_key_usage; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.api_key_usage TO app_tenant;
GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.api_key_usage TO app_key_verifier;

--
-- Name: TABLE api_key_usage_saved; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.api_key_usage_saved TO app_key_verifier;

--
-- Name: TABLE api_keys; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.api_keys TO app_tenant;
GRANT SELECT ON TABLE public.api_keys TO app_key_verifier;

--
-- Name: COLUMN api_keys.last_used_at; Type: ACL; Schema: public; Owner: -
--

GRANT UPDATE(last_used_at) ON TABLE public.api_keys TO app_key_verifier;

--
-- Name: TABLE audit_events; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.audit_events TO app_tenant;

--
-- Name: TABLE audit_heads; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.audit_heads TO app_tenant;

--
-- Name: TABLE organizations; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.organizations TO app_tenant;
GRANT SELECT ON TABLE public.organizations TO app_key_verifier;

--
-- Name: TABLE permissions; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.permissions TO app_tenant;

--
-- Name: TABLE role_grants; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.role_grants TO app_key_verifier;

--
-- Name: TABLE role_permissions; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT ON TABLE public.role_permissions TO app_tenant;

--
-- Name: TABLE schedules; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.schedules TO app_tenant;

--
-- Name: TABLE task_states; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.task_states TO app_tenant;

--
-- Name: TABLE users; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.users TO app_tenant;
GRANT SELECT ON TABLE public.users TO app_key_verifier;

--
-- Name: TABLE workflow_states; Type: ACL; Schema: public; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE public.workflow_states TO app_tenant;

--
-- PostgreSQL database dump complete
--

-- Functions owned by a role of their own (pg_dump --no-owner leaves them out).
ALTER FUNCTION public.lease_api_key_permits(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[], p_permits integer) OWNER TO app_key_verifier;
ALTER FUNCTION public.record_api_key_failure(p_prefix text, p_key_hash bytea) OWNER TO app_key_verifier;
ALTER FUNCTION public.return_api_key_permits(p_org_id uuid, p_api_key_id uuid, p_lease_id uuid, p_unspent integer) OWNER TO app_key_verifier;
ALTER FUNCTION public.verify_api_key(p_prefix text, p_key_hash bytea, p_permission text) OWNER TO app_key_verifier;
ALTER FUNCTION public.verify_api_key_in_org(p_org_id uuid, p_prefix text, p_key_hash bytea, p_required text[]) OWNER TO app_key_verifier;
REVOKE CREATE ON SCHEMA public FROM app_key_verifier;

-- Seed rows written by the migrations.
INSERT INTO public.permissions (key, description) VALUES ('org:read', 'See the organization''s settings');
INSERT INTO public.permissions (key, description) VALUES ('org:manage', 'Change the organization''s settings');
INSERT INTO public.permissions (key, description) VALUES ('user:read', 'List and see users');
INSERT INTO public.permissions (key, description) VALUES ('user:manage', 'Add, change, suspend and remove users');
INSERT INTO public.permissions (key, description) VALUES ('apikey:read', 'List and see API keys');
INSERT INTO public.permissions (key, description) VALUES ('apikey:manage', 'Issue, rotate and revoke API keys');
INSERT INTO public.permissions (key, description) VALUES ('workflow:read', 'See workflow executions');
INSERT INTO public.permissions (key, description) VALUES ('workflow:write', 'Change and delete workflow executions');
INSERT INTO public.permissions (key, description) VALUES ('workflow:execute', 'Start, signal and cancel workflows');
INSERT INTO public.permissions (key, description) VALUES ('task:read', 'See task executions');
INSERT INTO public.permissions (key, description) VALUES ('task:write', 'Change and delete task executions');
INSERT INTO public.permissions (key, description) VALUES ('schedule:read', 'See schedules');
INSERT INTO public.permissions (key, description) VALUES ('schedule:write', 'Create, change and delete schedules');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'org:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'org:manage');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'user:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'user:manage');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'apikey:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'apikey:manage');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'workflow:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'workflow:write');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'workflow:execute');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'task:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'task:write');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'schedule:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('admin', 'schedule:write');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'org:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'user:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'user:manage');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'workflow:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'workflow:write');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'workflow:execute');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'task:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'task:write');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'schedule:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('manager', 'schedule:write');
INSERT INTO public.role_permissions (role, permission) VALUES ('customer', 'org:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('customer', 'workflow:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('customer', 'workflow:execute');
INSERT INTO public.role_permissions (role, permission) VALUES ('customer', 'task:read');
INSERT INTO public.role_permissions (role, permission) VALUES ('customer', 'schedule:read');
INSERT INTO public.organizations (id, name, temporal_namespace, status) VALUES ('00000000-0000-7000-8000-000000000001', 'default', 'default', 'active');

-- The migrations this schema is made of, so that `migrate up` continues from here.
create table if not exists public.engine_store_migrations (
  name text primary key,
  checksum text not null,
  applied_at timestamptz not null default now(),
  duration_ms integer not null,
  state text not null default 'applied' check (state in ('applied', 'applying', 'reverting')),
  resume_at integer not null default 0
);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20250601090000_create_workflow_states', '8569ec3aebe66bc72a9a094716559e3a470c37bdce775b1c78000eaee21d3e59', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20250601090100_create_task_states', '140c0330003e89a9eda0128d499199aacc6d26960c41c061fc67a2bf0acbb25d', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20250601090200_create_schedules', 'f05e44e84f67c6d81177ed4050b51566de13836be8f5adc0250633182899c6c6', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128120000_add_multitenant_schema', '21b345856072941d84d3831f69f60140b8db89485ab29eb41d38a463e6e9ea47', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128120100_update_existing_tables_for_multitenancy', 'f4a0365c6dcead96e5683ec9b05086e22d147082fa4ac81f968db65978606cb7', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128120200_key_existing_tables_by_org', '6bd4b505e9dec6624b5937a16328f7885ea0c084992e7c028366bd3e81233c6b', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128120300_index_existing_tables_by_org', 'f95b7c29efb8c80908422e4109128fdf6f3373233234752c7af28073a3dca1db', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128120400_validate_tenant_foreign_keys', 'dc2c3eddb80df7ba197a02250844cc71c6c7440174f6058fec36169a2a53aca6', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128130000_enable_row_level_security', 'e6abfb6464cbb8346841cf1b72fa350a82ac8764a338c5c32327ada25fddd54e', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128140000_add_api_key_verification', '2c1eeed736deb880ef1af326216fc4b16999e3dfd58fe457f0347690b053aab8', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128150000_drop_single_tenant_indexes', '3d93fbad054585017a92e42933a7e3785667144f3df17b6c109fa640534c1f92', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261128160000_add_key_cache_support', 'a037c390b57b41fd65805b691ce58e932ab595fe4ee9283c699f1b973fba4d27', 0);
INSERT INTO public.engine_store_migrations (name, checksum, duration_ms) VALUES ('20261205120000_add_audit_trail', '28b97c3e50057d5d78e2ba66820240f821878267838cf669a997d08055f210a7', 0);
