-- API keys of a suspended organization can be revoked and soft-deleted; nothing else changes.
--
-- A suspended organization's data is read-only, and that used to include its keys: a key that
-- leaked could not be shut off until the organization was activated again, which is the moment
-- the key would start working again. Revoking takes access away and is now allowed:
-- - api_keys' statement trigger passes refuse_writes_of_inactive_org the argument
--   'revocations_allowed': for an UPDATE in a suspended organization it leaves the decision to
--   the row trigger below (a soft-deleted organization is still refused for every write);
-- - the row trigger lets an update through only if it changes status to 'revoked' and, at
--   most, deleted_at (and updated_at, which set_updated_at stamps after it): revoke() and
--   softDelete(). Anything else stays ORG_SUSPENDED.
-- Issuing and rotating insert a key, and stay refused.
--
-- DROP/CREATE TRIGGER take a brief SHARE ROW EXCLUSIVE lock on api_keys; the runner's
-- lock_timeout and retries keep it from queueing behind long transactions.
-- Up Migration
set local statement_timeout = '60s';

create or replace function refuse_writes_of_inactive_org() returns trigger
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
    if tg_op = 'UPDATE' and tg_nargs > 0 and tg_argv[0] = 'revocations_allowed' then
      return null;
    end if;
    raise exception 'the organization is suspended: its data can be read but not changed' using errcode = 'ES001';
  end if;
  return null;
end
$$;

create function refuse_api_key_changes_but_revocation_of_suspended_org() returns trigger
  language plpgsql
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
     and to_jsonb(new) - array['status', 'deleted_at', 'updated_at'] = to_jsonb(old) - array['status', 'deleted_at', 'updated_at'] then
    return new;
  end if;
  raise exception 'the organization is suspended: its API keys can be revoked, nothing else changed' using errcode = 'ES001';
end
$$;
comment on function refuse_api_key_changes_but_revocation_of_suspended_org() is
  'Row trigger on api_keys: in a suspended organization, lets through only updates that revoke or soft-delete a key.';

drop trigger api_keys_refuse_writes_of_inactive_org on api_keys;
create trigger api_keys_refuse_writes_of_inactive_org before insert or update or delete on api_keys
  for each statement execute function refuse_writes_of_inactive_org('revocations_allowed');
create trigger api_keys_refuse_changes_but_revocation_of_suspended_org before update on api_keys
  for each row execute function refuse_api_key_changes_but_revocation_of_suspended_org();

-- Down Migration
set local statement_timeout = '60s';

drop trigger api_keys_refuse_changes_but_revocation_of_suspended_org on api_keys;
drop trigger api_keys_refuse_writes_of_inactive_org on api_keys;
create trigger api_keys_refuse_writes_of_inactive_org before insert or update or delete on api_keys
  for each statement execute function refuse_writes_of_inactive_org();
drop function refuse_api_key_changes_but_revocation_of_suspended_org();

create or replace function refuse_writes_of_inactive_org() returns trigger
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
