-- Drops the engine's single-tenant indexes, superseded by the org_id-first ones: every query is now organization-scoped, and each extra index slows every write.
-- engine-store: no-transaction
-- squawk-ignore-file prefer-robust-stmts -- every build is preceded by DROP INDEX CONCURRENTLY IF EXISTS,
-- which also clears the INVALID index a failed build leaves; IF NOT EXISTS would keep that one.
--
-- Dropped and rebuilt concurrently, so neither direction blocks writes; both can be run again.
-- Up Migration
set statement_timeout = 0;

drop index concurrently if exists workflow_states_status_idx;
drop index concurrently if exists workflow_states_workflow_id_idx;
drop index concurrently if exists task_states_workflow_exec_id_idx;
drop index concurrently if exists task_states_parent_state_id_idx;
drop index concurrently if exists task_states_status_idx;
drop index concurrently if exists schedules_workflow_id_idx;

-- Down Migration
set statement_timeout = 0;

drop index concurrently if exists schedules_workflow_id_idx;
create index concurrently schedules_workflow_id_idx on schedules (workflow_id);
drop index concurrently if exists task_states_status_idx;
create index concurrently task_states_status_idx on task_states (status);
drop index concurrently if exists task_states_parent_state_id_idx;
create index concurrently task_states_parent_state_id_idx on task_states (parent_state_id);
drop index concurrently if exists task_states_workflow_exec_id_idx;
create index concurrently task_states_workflow_exec_id_idx on task_states (workflow_exec_id);
drop index concurrently if exists workflow_states_workflow_id_idx;
create index concurrently workflow_states_workflow_id_idx on workflow_states (workflow_id);
drop index concurrently if exists workflow_states_status_idx;
create index concurrently workflow_states_status_idx on workflow_states (status);
