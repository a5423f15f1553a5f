-- Using an API key no longer changes its updated_at: verification writes last_used_at (at most
-- once a minute), and set_updated_at stamped updated_at with it, so updated_at said "last used"
-- rather than "last changed" (revoked, rotated, renamed by SQL). The trigger now fires only for an
-- update that changes something besides last_used_at.
--
-- DROP/CREATE TRIGGER take a brief SHARE ROW EXCLUSIVE lock on api_keys; the runner's
-- lock_timeout and retries keep it from queueing behind long transactions.
-- Up Migration
set local statement_timeout = '60s';

drop trigger api_keys_set_updated_at on api_keys;
create trigger api_keys_set_updated_at before update on api_keys
  for each row
  when ((to_jsonb(old) - 'last_used_at') is distinct from (to_jsonb(new) - 'last_used_at'))
  execute function set_updated_at();

-- Down Migration
set local statement_timeout = '60s';

drop trigger api_keys_set_updated_at on api_keys;
create trigger api_keys_set_updated_at before update on api_keys
  for each row execute function set_updated_at();
