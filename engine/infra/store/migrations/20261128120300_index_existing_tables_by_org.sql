-- Adds the org_id-first indexes that organization-scoped queries of the engine's tables use.
-- engine-store: no-transaction
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction,transaction-nesting -- this file runs outside a
-- transaction (the directive above); its BEGIN ... COMMIT blocks are its own, not nested.
-- squawk-ignore-file prefer-robust-stmts -- every build is preceded by DROP INDEX CONCURRENTLY IF EXISTS,
-- which also clears the INVALID index a failed build leaves; IF NOT EXISTS would keep that one.
--
-- Built concurrently, so writes go on meanwhile; each build first drops what a failed earlier
-- attempt may have left (an INVALID index), so the migration can be run again.
-- The (org_id, created_at, <id>) indexes serve newest-first keyset pagination in full: the id
-- breaks ties between rows created in the same transaction.
-- Up Migration
set statement_timeout = 0;

drop index concurrently if exists workflow_states_org_id_created_at_idx;
create index concurrently workflow_states_org_id_created_at_idx
  on workflow_states (org_id, created_at, workflow_exec_id);
drop index concurrently if exists workflow_states_org_id_status_idx;
create index concurrently workflow_states_org_id_status_idx
  on workflow_states (org_id, status);
drop index concurrently if exists workflow_states_org_id_workflow_id_idx;
create index concurrently workflow_states_org_id_workflow_id_idx
  on workflow_states (org_id, workflow_id);

drop index concurrently if exists task_states_org_id_created_at_idx;
create index concurrently task_states_org_id_created_at_idx
  on task_states (org_id, created_at, task_exec_id);
drop index concurrently if exists task_states_org_id_status_idx;
create index concurrently task_states_org_id_status_idx
  on task_states (org_id, status);
drop index concurrently if exists task_states_org_id_workflow_id_idx;
create index concurrently task_states_org_id_workflow_id_idx
  on task_states (org_id, workflow_id);
-- One index per foreign key, so that deleting a workflow or parent finds its children fast.
drop index concurrently if exists task_states_org_id_workflow_exec_id_idx;
create index concurrently task_states_org_id_workflow_exec_id_idx
  on task_states (org_id, workflow_exec_id);
drop index concurrently if exists task_states_org_id_parent_state_id_idx;
create index concurrently task_states_org_id_parent_state_id_idx
  on task_states (org_id, parent_state_id);

drop index concurrently if exists schedules_org_id_created_at_idx;
create index concurrently schedules_org_id_created_at_idx
  on schedules (org_id, created_at, id);
drop index concurrently if exists schedules_org_id_workflow_id_idx;
create index concurrently schedules_org_id_workflow_id_idx
  on schedules (org_id, workflow_id);

-- Down Migration
set statement_timeout = 0;

drop index concurrently if exists schedules_org_id_workflow_id_idx;
drop index concurrently if exists schedules_org_id_created_at_idx;
drop index concurrently if exists task_states_org_id_parent_state_id_idx;
drop index concurrently if exists task_states_org_id_workflow_exec_id_idx;
drop index concurrently if exists task_states_org_id_workflow_id_idx;
drop index concurrently if exists task_states_org_id_status_idx;
drop index concurrently if exists task_states_org_id_created_at_idx;
drop index concurrently if exists workflow_states_org_id_workflow_id_idx;
drop index concurrently if exists workflow_states_org_id_status_idx;
drop index concurrently if exists workflow_states_org_id_created_at_idx;
