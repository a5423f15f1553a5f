-- The tenant policies compare org_id with the scope's organization only while it is live, in one sub-select instead of current_org_is_visible().
--
-- The function (PL/pgSQL, so that its query plan is kept) cost 30-60 us per statement, most of
-- what row-level security added to a short read. The sub-select (the organization's id if it is
-- not soft-deleted, else NULL, which matches no row) is an InitPlan of the statement itself: one
-- index lookup, evaluated once per statement, whose result is the index condition on org_id.
-- app_tenant's own policy on organizations (its organization, while not soft-deleted) applies
-- inside it, as it did inside the function. WITH CHECK is unchanged. current_org_is_visible()
-- stays: the down migration refers to it.
--
-- ALTER POLICY takes a brief ACCESS EXCLUSIVE lock per table; the runner's lock_timeout and
-- retries keep it from queueing behind long transactions.
-- Up Migration
set local statement_timeout = '60s';

alter policy users_tenant_isolation on users
  using (org_id = (select o.id from organizations o where o.id = current_org_id() and o.deleted_at is null));
alter policy api_keys_tenant_isolation on api_keys
  using (org_id = (select o.id from organizations o where o.id = current_org_id() and o.deleted_at is null));
alter policy api_key_usage_tenant_isolation on api_key_usage
  using (org_id = (select o.id from organizations o where o.id = current_org_id() and o.deleted_at is null));
alter policy workflow_states_tenant_isolation on workflow_states
  using (org_id = (select o.id from organizations o where o.id = current_org_id() and o.deleted_at is null));
alter policy task_states_tenant_isolation on task_states
  using (org_id = (select o.id from organizations o where o.id = current_org_id() and o.deleted_at is null));
alter policy schedules_tenant_isolation on schedules
  using (org_id = (select o.id from organizations o where o.id = current_org_id() and o.deleted_at is null));

-- Down Migration
set local statement_timeout = '60s';

alter policy users_tenant_isolation on users
  using (org_id = (select current_org_id()) and (select current_org_is_visible()));
alter policy api_keys_tenant_isolation on api_keys
  using (org_id = (select current_org_id()) and (select current_org_is_visible()));
alter policy api_key_usage_tenant_isolation on api_key_usage
  using (org_id = (select current_org_id()) and (select current_org_is_visible()));
alter policy workflow_states_tenant_isolation on workflow_states
  using (org_id = (select current_org_id()) and (select current_org_is_visible()));
alter policy task_states_tenant_isolation on task_states
  using (org_id = (select current_org_id()) and (select current_org_is_visible()));
alter policy schedules_tenant_isolation on schedules
  using (org_id = (select current_org_id()) and (select current_org_is_visible()));
