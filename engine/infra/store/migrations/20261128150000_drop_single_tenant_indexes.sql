-- Drops the engine's single-tenant indexes, superseded by the org_id-first ones: after row-level security every query is organization-scoped, and each extra index slows every write.
--
-- The contract step of the rollout: it runs after the engine passes its organization (the
-- row-level security migration requires that), so nothing looks rows up by id alone any more.
-- engine-store: no-transaction
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction,transaction-nesting -- this file runs outside a
-- transaction (the directive above); its BEGIN ... COMMIT blocks are its own, not nested.
-- squawk-ignore-file prefer-robust-stmts -- every build is preceded by DROP INDEX CONCURRENTLY IF EXISTS,
-- which also clears the INVALID index a failed build leaves; IF NOT EXISTS would keep that one.
--
-- Dropped and rebuilt concurrently, so neither direction blocks writes; both can be run again.
-- Up Migration
set statement_timeout = 0;

drop index concurrently if exists workflow_states_workflow_exec_id_idx;
drop index concurrently if exists task_states_task_exec_id_idx;
drop index concurrently if exists schedules_id_idx;
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
drop index concurrently if exists schedules_id_idx;
create index concurrently schedules_id_idx on schedules (id);
drop index concurrently if exists task_states_task_exec_id_idx;
create index concurrently task_states_task_exec_id_idx on task_states (task_exec_id);
drop index concurrently if exists workflow_states_workflow_exec_id_idx;
create index concurrently workflow_states_workflow_exec_id_idx on workflow_states (workflow_exec_id);
