-- Validates the foreign keys that tie the engine's rows to their organization and to each other, and the schedules soft-delete check.
-- engine-store: no-transaction
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction,transaction-nesting -- this file runs outside a
-- transaction (the directive above); its BEGIN ... COMMIT blocks are its own, not nested.
-- squawk-ignore-file prefer-robust-stmts -- validating a valid constraint again is a no-op, so a re-run is safe.
--
-- VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE, which lets reads and writes
-- go on. Each runs in its own transaction (this file runs outside one), so a failure keeps the
-- validations before it, and validating an already valid constraint again is a no-op.
-- Up Migration
set statement_timeout = 0;

alter table workflow_states validate constraint workflow_states_org_id_fkey;
alter table task_states validate constraint task_states_org_id_fkey;
alter table schedules validate constraint schedules_org_id_fkey;
alter table task_states validate constraint task_states_workflow_fkey;
alter table task_states validate constraint task_states_parent_fkey;
alter table schedules validate constraint schedules_deleted_at_check;

-- Down Migration
set statement_timeout = 0;

-- The exact reverse: the same constraints, NOT VALID again. Catalog changes only.
begin;
set local statement_timeout = '10s';
alter table schedules drop constraint schedules_deleted_at_check;
alter table schedules add constraint schedules_deleted_at_check
  check (deleted_at is null or deleted_at >= created_at) not valid;
alter table task_states drop constraint task_states_parent_fkey;
alter table task_states add constraint task_states_parent_fkey
  foreign key (org_id, parent_state_id) references task_states (org_id, task_exec_id)
  on delete cascade not valid;
alter table task_states drop constraint task_states_workflow_fkey;
alter table task_states add constraint task_states_workflow_fkey
  foreign key (org_id, workflow_exec_id) references workflow_states (org_id, workflow_exec_id)
  on delete cascade not valid;
alter table schedules drop constraint schedules_org_id_fkey;
alter table schedules add constraint schedules_org_id_fkey
  foreign key (org_id) references organizations (id) on delete cascade not valid;
alter table task_states drop constraint task_states_org_id_fkey;
alter table task_states add constraint task_states_org_id_fkey
  foreign key (org_id) references organizations (id) on delete cascade not valid;
alter table workflow_states drop constraint workflow_states_org_id_fkey;
alter table workflow_states add constraint workflow_states_org_id_fkey
  foreign key (org_id) references organizations (id) on delete cascade not valid;
commit;
