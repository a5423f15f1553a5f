-- Adds the audit trail: every change to organizations, users, API keys and the permission mapping recorded by the database, in the transaction of the change, in a hash chain per organization.
--
-- Capture. Deferred constraint triggers on organizations, users, api_keys and role_permissions
-- record each changed row at commit, whatever wrote it: the store's API, tx.kysely, the CLI or
-- an owner's own SQL. A rolled-back change leaves no event, and a committed one never lacks its
-- event: both are in one transaction. Deferred to commit, so that an organization's chain is
-- locked only for the moment of the commit: a transaction that locked a row and then waited for
-- the chain while another held the chain and waited for that row would deadlock. Workflow, task
-- and schedule states are the engine's high-volume traffic and are not audited.
--
-- Who did it. A tenant scope may carry an actor (app.actor = '<kind>:<id>'), signed by the store
-- like the scope itself (app.actor_token, HMAC-SHA256 of 'actor:<org>:<expires>:<actor>' with the
-- scope key): tenant SQL that names an actor of its own is refused at commit (ES006). Outside a
-- tenant scope only the owner writes these tables, and its app.actor (an operator's name, set by
-- the store or the CLI) is taken as given. No actor: 'system' and the database role.
--
-- The chain. Each organization's events are numbered 1, 2, 3... (seq) and each event's hash is
-- SHA-256(previous hash || canonical content), the first one's previous hash 32 zero bytes. The
-- canonical content is audit_event_content(), a JSON array rendered by PostgreSQL's own
-- json_build_array, which `engine-store audit verify` renders again from the stored columns. audit_heads
-- keeps each organization's last seq and hash; its row lock orders an organization's appends, so
-- appends serialize per organization and only at the commit of audited writes. The role
-- mapping is global: its events form the chain of the nil organization
-- 00000000-0000-0000-0000-000000000000, which no tenant can read.
--
-- Row-level security is enabled on the events and heads, not forced: the owner reads every
-- organization's chain (audit verify) and writes them only through the SECURITY DEFINER
-- functions below (tenancy/tenant-safety.ts, OWNER_WIDE_TABLES).
--
-- Append-only. Nobody holds UPDATE, DELETE or TRUNCATE on the events; a trigger refuses them to
-- the owner too (ES005), except DELETE by `audit prune` (which sets engine_store.audit_pruning
-- locally); `audit verify` finds what an owner who gets around that (disabling triggers) changed.
-- The tenant login reads its own organization's events, through row-level security.
--
-- Retention. Events are partitioned by month of occurred_at (UTC); `audit prune` drops whole
-- months and records, in each organization's chain, where it cut. occurred_at never goes back
-- within a chain (greatest(clock, previous)), so a cut in time is a cut in seq. Months with no
-- partition of their own land in audit_events_default: audit_ensure_partitions() makes the
-- coming ones (migrate, prune), and doctor reports a default partition that holds rows.
--
-- On Citus (docs/scaling-out.md) the events and heads are distributed by org_id, co-located with
-- users and api_keys, and the capture triggers run on the workers: a shard's trigger appends to
-- the chain's shard on its own node, a reference table's trigger only on the node of the chain
-- (audit_chain_is_here), with the actor set by SET LOCAL (enter_audit_actor).
--
-- Authentication failures. record_api_key_failure() (called by the store after a refused
-- verification) appends one event per key, reason and minute (rate limiting: per hour window),
-- and counts the attempts in api_key_auth_failures, so a flood adds counts, not rows.
-- Up Migration
set local statement_timeout = '60s';
-- On Citus (a placeholder elsewhere), applied after distribution: see the Down Migration.
set local citus.multi_shard_modify_mode = 'sequential';
-- The strong locks first, children before parents, as writers take them (CREATE TRIGGER takes
-- SHARE ROW EXCLUSIVE).
lock table api_keys, users, organizations, role_permissions in share row exclusive mode;

-- What an event's fields may hold, as domains rather than CHECK constraints: PostgreSQL reads a
-- table's CHECK constraints back from their stored text and plans them again at every statement
-- that writes the table, and the trail writes from inside its functions, a statement per event
-- (measured with callgrind, an audited insert of a user: 143,000 instructions of the 754,000 the
-- trail adds). A domain's constraints stay parsed for the session, in the type cache: 21,000.
-- squawk warns that a domain's constraint is hard to change online: a later change goes NOT VALID,
-- then VALIDATE, which ALTER DOMAIN allows as ALTER TABLE does.
-- squawk-ignore ban-create-domain-with-constraint -- see above
create domain audit_seq as bigint constraint audit_seq_check check (value >= 1);
comment on domain audit_seq is 'The position of an event in its organization''s audit chain: 1, 2, 3...';
-- squawk-ignore ban-create-domain-with-constraint -- see above
create domain audit_head_seq as bigint constraint audit_head_seq_check check (value >= 0);
comment on domain audit_head_seq is 'The position of the last event of an audit chain: 0 before the first.';
-- squawk-ignore ban-create-domain-with-constraint -- see above
create domain sha256_digest as bytea constraint sha256_digest_check check (octet_length(value) = 32);
comment on domain sha256_digest is 'A SHA-256 digest: 32 bytes.';
-- squawk-ignore ban-create-domain-with-constraint -- see above
create domain audit_actor_kind as text constraint audit_actor_kind_check check (value in ('operator', 'user', 'api_key', 'system'));
comment on domain audit_actor_kind is 'Who acted in an audit event: operator, user, api_key or system.';
-- squawk-ignore ban-create-domain-with-constraint -- see above
create domain audit_action as text constraint audit_action_check check (value ~ '^[a-z_]+\.[a-z_]+$');
comment on domain audit_action is 'An audit event''s action: a dotted name such as api_key.revoked.';

create table audit_heads (
  org_id uuid not null,
  seq audit_head_seq not null,
  hash sha256_digest not null,
  occurred_at timestamptz not null,
  constraint audit_heads_pkey primary key (org_id)
);
comment on table audit_heads is 'The last event of each organization''s audit chain: its seq, hash and time. Its row lock orders the appends.';
revoke all on audit_heads from public;

create table audit_events (
  org_id uuid not null,
  seq audit_seq not null,
  occurred_at timestamptz not null,
  actor_kind audit_actor_kind not null,
  actor_id text not null,
  action audit_action not null,
  target_kind text not null,
  target_id text not null,
  changes jsonb not null,
  context jsonb,
  prev_hash sha256_digest not null,
  hash sha256_digest not null,
  -- A partitioned table's unique keys include its partition key; seq is unique per organization
  -- by construction (audit_heads), and audit verify checks that it is.
  constraint audit_events_pkey primary key (org_id, seq, occurred_at)
) partition by range (occurred_at);
comment on table audit_events is 'The audit trail: one row per audited change, per organization a hash chain (seq, prev_hash, hash). Append-only; partitioned by month.';
revoke all on audit_events from public;
-- The "what happened to this user/key" reads of audit list.
create index audit_events_org_id_target_id_seq_idx on audit_events (org_id, target_id, seq);

create table audit_events_default partition of audit_events default;

-- How long events are kept (audit prune without --before, and doctor's warnings). One row, or
-- none: retention not configured.
create table audit_retention (
  -- squawk-ignore prefer-bigint-over-smallint -- one row, id 1 (the check below)
  id smallint not null default 1,
  -- squawk-ignore prefer-bigint-over-int -- 1 to 36,500 days (the check below)
  keep_days integer not null,
  updated_at timestamptz not null default now(),
  constraint audit_retention_pkey primary key (id),
  constraint audit_retention_id_check check (id = 1),
  constraint audit_retention_keep_days_check check (keep_days between 1 and 36500)
);
comment on table audit_retention is 'How many days audit events are kept: what audit prune removes by default and doctor checks. Owner only.';
revoke all on audit_retention from public;

-- Counts of refused verifications per key, reason and period (a minute; an hour window for
-- rate limiting): the event is appended when a period's row is inserted, the attempts counted
-- on it afterwards.
create table api_key_auth_failures (
  org_id uuid not null,
  api_key_id uuid not null,
  reason text not null,
  period_start timestamptz not null,
  -- squawk-ignore prefer-bigint-over-int -- attempts of one key in one minute or hour
  attempts integer not null,
  constraint api_key_auth_failures_pkey primary key (org_id, api_key_id, reason, period_start),
  constraint api_key_auth_failures_attempts_check check (attempts >= 1)
);
comment on table api_key_auth_failures is 'Refused verifications per API key, reason and minute (hour for rate limiting); the audit event of each is appended once.';
revoke all on api_key_auth_failures from public;

-- The canonical content of an event, as its hash covers it. audit verify renders the same array
-- from the stored columns (engine/infra/store/audit/chain.ts): both must stay identical. Times as
-- Unix microseconds, so that no session's time zone or date style enters it.
create function audit_event_content(
  p_org uuid, p_seq bigint, p_occurred_at timestamptz, p_actor_kind text, p_actor_id text,
  p_action text, p_target_kind text, p_target_id text, p_changes jsonb, p_context jsonb
) returns text
  -- No SET clause, and stable as what it calls (json_build_array, extract), so that it is
  -- inlined where it is called; every name is pg_catalog's. json_build_array, not jsonb's: the
  -- same text (its separators are jsonb's, and it renders changes and context by jsonb's own
  -- output), without building a jsonb of the array first and rendering that (counted with
  -- callgrind: 15,000 instructions an event, 3% of the trail).
  language sql stable parallel safe
as $$
  select pg_catalog.json_build_array(p_org::pg_catalog.text, p_seq,
           (extract(epoch from p_occurred_at) operator(pg_catalog.*) 1000000)::pg_catalog.int8,
           p_actor_kind, p_actor_id, p_action, p_target_kind, p_target_id, p_changes, p_context)::pg_catalog.text
$$;
comment on function audit_event_content(uuid, bigint, timestamptz, text, text, text, text, text, jsonb, jsonb) is
  'The canonical text of an audit event, which its hash covers (with the previous hash).';
revoke execute on function audit_event_content(uuid, bigint, timestamptz, text, text, text, text, text, jsonb, jsonb) from public;

-- Appends one event to organization p_org's chain. The actor is p_actor_kind/p_actor_id when
-- given (the store's own events: authentication failures, prune); otherwise the transaction's:
-- app.actor, signed in a tenant scope (see the top of this file), or 'system' and the database
-- role. The caller's context is app.audit_context, a JSON object of at most 2,048 bytes.
-- SECURITY DEFINER: only the owner writes the chain. EXECUTE is granted to nobody: the audit
-- triggers and audit_count_failure run as the owner. No SET clause (a search_path change and back
-- on every event): its callers are those functions, whose own SET clause gives it
-- pg_catalog, pg_temp, and the owner (audit prune); the tables are schema-qualified.
create function audit_append(
  p_org uuid, p_action text, p_target_kind text, p_target_id text, p_changes jsonb,
  p_actor_kind text default null, p_actor_id text default null
) returns void
  language plpgsql volatile security definer
as $$
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
comment on function audit_append(uuid, text, text, text, jsonb, text, text) is
  'Appends an event to an organization''s audit chain, with the transaction''s actor (signed in a tenant scope) and context.';
revoke execute on function audit_append(uuid, text, text, text, jsonb, text, text) from public;

-- Sets who acts (app.actor, app.actor_token) and the caller's context (app.audit_context) for
-- the rest of the transaction, as the store does on Citus: there the capture triggers run on the
-- workers, which a setting reaches only by SET LOCAL with citus.propagate_set_commands =
-- 'local' (set_config does not reach them). Elsewhere set_config, which is what it amounts to.
-- No SET clause: it would undo the SET LOCALs on return; every name is schema-qualified.
-- Anyone may call it: a setting proves nothing without the store's signature (see the top).
create function enter_audit_actor(p_actor text, p_actor_token text, p_context text) returns void
  language plpgsql volatile
as $$
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
comment on function enter_audit_actor(text, text, text) is
  'Sets the transaction''s audit actor, its signature and the caller''s context (SET LOCAL where Citus needs it on the workers).';

-- Whether organization p_org's chain is on this node. Always, on one server. On Citus the
-- organizations and the role mapping are reference tables, copied to every node, whose triggers
-- run on every copy: the node that holds the chain's shard records the change, the others
-- (the coordinator among them) do nothing. A shard's trigger (users, api_keys) needs no check:
-- its organization's chain is co-located with it. Before the store is distributed, on a
-- database with the Citus extension, the chain is here too.
create function audit_chain_is_here(p_org uuid) returns boolean
  language plpgsql stable
  set search_path = pg_catalog, pg_temp
as $$
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
comment on function audit_chain_is_here(uuid) is 'Whether an organization''s audit chain is on this node (always, but on a Citus worker that does not hold its shard).';
revoke execute on function audit_chain_is_here(uuid) from public;

-- One recorded field of a row's changes: of a new row, {"<field>": {"after": value}}, nothing for a
-- NULL; of an updated row, {"<field>": {"before": ..., "after": ...}} when it changed, else
-- nothing. SQL bodies, stable as jsonb_build_object is, so that PostgreSQL inlines them where
-- audit_row_change calls them: the expression is the one written out by hand, with no call.
create function audit_field_added(p_field text, p_value anyelement) returns jsonb
  language sql stable parallel safe
as $$
  select case when p_value is null then '{}'::pg_catalog.jsonb
              else pg_catalog.jsonb_build_object(p_field, pg_catalog.jsonb_build_object('after', p_value)) end
$$;
comment on function audit_field_added(text, anyelement) is 'A new row''s recorded field as audit changes: {"<field>": {"after": value}}, or {} for NULL.';
revoke execute on function audit_field_added(text, anyelement) from public;

create function audit_field_changed(p_field text, p_before anyelement, p_after anyelement) returns jsonb
  language sql stable parallel safe
as $$
  select case when p_before is distinct from p_after
              then pg_catalog.jsonb_build_object(p_field, pg_catalog.jsonb_build_object('before', p_before, 'after', p_after))
              else '{}'::pg_catalog.jsonb end
$$;
comment on function audit_field_changed(text, anyelement, anyelement) is
  'An updated row''s recorded field as audit changes: {"<field>": {"before": ..., "after": ...}} when it changed, else {}.';
revoke execute on function audit_field_changed(text, anyelement, anyelement) from public;

-- The row triggers' function: the action and the changed fields of one row, then the append.
-- Never recorded: ids and organization (they are the target), times the database stamps
-- (created_at, updated_at), last_used_at (verification's), email_lower (derived) and key_hash
-- (a digest of a secret: its change is recorded as {"key_hash": "changed"}).
--
-- An inserted or updated row's changes are built from its columns by name, every one but those
-- (an insert's NULLs left out, an update's unchanged columns): the object the diff of the rows
-- as JSON would make (a deleted row's still is), without rendering them and aggregating over
-- jsonb_each (counted with callgrind, bench/instructions.ts: 130,000 instructions less per
-- insert, a fifth of what the trail cost it). A column added to an audited table must be named
-- in both: tests compare each table's columns with what an insert and an update record
-- (test/audit/audit-trail.test.ts).
create function audit_row_change() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
as $$
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
comment on function audit_row_change() is 'Deferred row trigger: records a change of an organization, user, API key or role mapping in the audit chain.';
revoke execute on function audit_row_change() from public;

-- A TRUNCATE of the role mapping, which no row trigger sees.
create function audit_role_permissions_truncate() returns trigger
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
as $$
begin
  if public.audit_chain_is_here('00000000-0000-0000-0000-000000000000') then
    perform public.audit_append('00000000-0000-0000-0000-000000000000', 'permission.cleared', 'role', '*', '{}');
  end if;
  return null;
end
$$;
comment on function audit_role_permissions_truncate() is 'Statement trigger: records a TRUNCATE of role_permissions in the audit chain.';
revoke execute on function audit_role_permissions_truncate() from public;

-- Deferrable, initially deferred: run at commit (see the top of this file). The update triggers
-- of api_keys skip verification's own write (last_used_at alone) before anything is queued.
create constraint trigger organizations_audit after insert or update or delete on organizations
  deferrable initially deferred for each row execute function audit_row_change('organization');
create constraint trigger users_audit after insert or update or delete on users
  deferrable initially deferred for each row execute function audit_row_change('user');
create constraint trigger api_keys_audit after insert or delete on api_keys
  deferrable initially deferred for each row execute function audit_row_change('api_key');
create constraint trigger api_keys_audit_update after update on api_keys
  deferrable initially deferred for each row
  when ((pg_catalog.to_jsonb(old) - 'last_used_at') is distinct from (pg_catalog.to_jsonb(new) - 'last_used_at'))
  execute function audit_row_change('api_key');
create constraint trigger role_permissions_audit after insert or update or delete on role_permissions
  deferrable initially deferred for each row execute function audit_row_change('role');
create trigger role_permissions_audit_truncate after truncate on role_permissions
  for each statement execute function audit_role_permissions_truncate();

-- Append-only, for the owner too: only audit prune deletes (whole months are dropped instead
-- wherever they have a partition of their own).
create function refuse_audit_event_changes() returns trigger
  language plpgsql
  set search_path = pg_catalog, pg_temp
as $$
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
comment on function refuse_audit_event_changes() is 'Trigger: refuses UPDATE, DELETE and TRUNCATE of audit events, except the deletes and month truncations of audit prune.';
revoke execute on function refuse_audit_event_changes() from public;
create trigger audit_events_append_only before update or delete on audit_events
  for each row execute function refuse_audit_event_changes();
-- TRUNCATE of the parent; each partition gets its own (audit_ensure_partitions), since a
-- partition truncated by name fires only its own triggers.
create trigger audit_events_no_truncate before truncate on audit_events
  for each statement execute function refuse_audit_event_changes();
create trigger audit_events_default_no_truncate before truncate on audit_events_default
  for each statement execute function refuse_audit_event_changes();

-- Makes the monthly partitions of p_months months from the month of p_from on, where missing
-- (audit_events_yYYYYmMM, UTC months). A month whose rows already sit in the default partition
-- is left there: moving them would take the table's strongest lock; prune removes them by row.
-- Returns the partitions it made.
create function audit_ensure_partitions(p_from timestamptz, p_months integer) returns setof text
  language plpgsql volatile
  set search_path = pg_catalog, pg_temp
as $$
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
comment on function audit_ensure_partitions(timestamptz, integer) is 'Makes the missing monthly partitions of audit_events from a month on (owner only).';
revoke execute on function audit_ensure_partitions(timestamptz, integer) from public;
-- The month before (events at the turn of a month while this runs) and the coming ones.
select count(*) from audit_ensure_partitions(now() - interval '1 month', 5);

-- Counts a refused verification of key p_key in its period and, at the first of the period,
-- appends its event. The owner's, like every write of the trail: on Citus one transaction may not
-- write an organization's shards as two different users (record_api_key_failure reads them as
-- app_key_verifier, then this writes them). EXECUTE for app_key_verifier only.
create function audit_count_failure(p_org uuid, p_key uuid, p_reason text, p_period timestamptz) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
as $$
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
comment on function audit_count_failure(uuid, uuid, text, timestamptz) is
  'Counts a refused verification of an API key in its period, and appends api_key.auth_failed at the first of the period.';
revoke execute on function audit_count_failure(uuid, uuid, text, timestamptz) from public;
grant execute on function audit_count_failure(uuid, uuid, text, timestamptz) to app_key_verifier;

-- A refused verification of a key that exists, recorded (see the top of this file): the reason
-- is worked out here from the key, its user, its organization and its counter, not taken from
-- the caller, so that nobody can write an event the database would not. Owned by
-- app_key_verifier, whose policies let it read keys across organizations; the tenant login may
-- call it, as it may present any key. Returns the reason recorded, or NULL when the key is
-- unknown or would be accepted.
-- Its own lock_timeout, above the verification pool's 100 ms: refusals of one key queue on the
-- key's counter row (each holds it for an upsert and, once a minute, an append), and a count lost
-- to a timeout under a flood would make `attempts` short (measured: 9,999 of 10,000, once).
create function record_api_key_failure(p_prefix text, p_key_hash bytea) returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set lock_timeout = '2s'
as $$
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
comment on function record_api_key_failure(text, bytea) is
  'Records a refused verification of an existing API key: counts it, and appends api_key.auth_failed once per key, reason and minute.';
revoke execute on function record_api_key_failure(text, bytea) from public;
grant execute on function record_api_key_failure(text, bytea) to app_tenant;
-- Written by the owner's audit_count_failure only; not forced, like the events (OWNER_WIDE_TABLES).
alter table api_key_auth_failures enable row level security;
create policy api_key_auth_failures_tenant_read on api_key_auth_failures for select to app_tenant
  using (org_id = (select visible_org_id()));
grant select on api_key_auth_failures to app_tenant;
-- Owned by app_key_verifier, as verify_api_key is (see migration 20261128140000).
grant create on schema public to app_key_verifier;
alter function record_api_key_failure(text, bytea) owner to app_key_verifier;
revoke create on schema public from app_key_verifier;

-- Tenants read their own organization's events and nothing else; they write none.
alter table audit_events enable row level security;
create policy audit_events_tenant_read on audit_events for select to app_tenant
  using (org_id = (select visible_org_id()));
grant select on audit_events to app_tenant;
-- Its own head, too: what an organization keeps outside the database to prove its history later.
alter table audit_heads enable row level security;
create policy audit_heads_tenant_read on audit_heads for select to app_tenant
  using (org_id = (select visible_org_id()));
grant select on audit_heads to app_tenant;

-- Down Migration
set local statement_timeout = '60s';
-- On Citus (a placeholder elsewhere): DDL on a reference table (organizations, role_permissions,
-- audit_retention) is refused after parallel DDL on a distributed one in the same transaction.
set local citus.multi_shard_modify_mode = 'sequential';
lock table api_keys, users, organizations, role_permissions in share row exclusive mode;

-- An audit trail is not thrown away by a rollback unless the operator says so: migrate down
-- refuses to drop a table that holds rows without --force (migrator/down-checks.ts).
drop trigger role_permissions_audit_truncate on role_permissions;
drop trigger role_permissions_audit on role_permissions;
drop trigger api_keys_audit_update on api_keys;
drop trigger api_keys_audit on api_keys;
drop trigger users_audit on users;
drop trigger organizations_audit on organizations;
drop function record_api_key_failure(text, bytea);
drop function audit_count_failure(uuid, uuid, text, timestamptz);
-- squawk-ignore ban-drop-table -- counts of refused verifications; migrate down refuses a table with rows unless forced
drop table api_key_auth_failures;
-- squawk-ignore ban-drop-table -- as above; its partitions go with it
drop table audit_events;
-- squawk-ignore ban-drop-table -- as above
drop table audit_heads;
-- squawk-ignore ban-drop-table -- a setting of the trail dropped above
drop table audit_retention;
drop function audit_ensure_partitions(timestamptz, integer);
drop function refuse_audit_event_changes();
drop function audit_role_permissions_truncate();
drop function audit_row_change();
drop function audit_field_changed(text, anyelement, anyelement);
drop function audit_field_added(text, anyelement);
drop function audit_chain_is_here(uuid);
drop function enter_audit_actor(text, text, text);
drop function audit_append(uuid, text, text, text, jsonb, text, text);
drop function audit_event_content(uuid, bigint, timestamptz, text, text, text, text, text, jsonb, jsonb);
drop domain audit_action;
drop domain audit_actor_kind;
drop domain sha256_digest;
drop domain audit_head_seq;
drop domain audit_seq;
