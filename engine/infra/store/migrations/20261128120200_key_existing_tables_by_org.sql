-- Makes org_id lead the primary keys of the engine's tables and makes their foreign keys composite, so that a task can never point at another organization's workflow.
-- engine-store: no-transaction
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction,transaction-nesting -- this file runs outside a
-- transaction (the directive above); its BEGIN ... COMMIT blocks are its own, not nested.
-- squawk-ignore-file prefer-robust-stmts -- every build is preceded by DROP INDEX CONCURRENTLY IF EXISTS,
-- which also clears the INVALID index a failed build leaves; IF NOT EXISTS would keep that one.
--
-- Outside a transaction because CREATE INDEX CONCURRENTLY refuses to run inside one. The new
-- primary-key indexes are built concurrently (writes go on meanwhile), then one short
-- transaction swaps each primary key onto its index: catalog changes only, under the runner's lock_timeout.
-- The new foreign keys are NOT VALID here (no scan under the strong lock) and validated by a
-- later migration. Every step may be run again after a failure half-way: a concurrent build
-- that failed leaves an INVALID index behind, so each build first drops what a previous attempt
-- left.
-- Up Migration
-- Index builds on large tables take as long as they take; they do not block writes.
set statement_timeout = 0;

drop index concurrently if exists workflow_states_org_id_workflow_exec_id_key;
create unique index concurrently workflow_states_org_id_workflow_exec_id_key
  on workflow_states (org_id, workflow_exec_id);
drop index concurrently if exists task_states_org_id_task_exec_id_key;
create unique index concurrently task_states_org_id_task_exec_id_key
  on task_states (org_id, task_exec_id);
drop index concurrently if exists schedules_org_id_id_key;
create unique index concurrently schedules_org_id_id_key
  on schedules (org_id, id);
-- Until the engine passes its organization, it still finds rows by id alone: keep an index for
-- that after the single-column primary keys go. Dropped by the contract migration
-- (drop_single_tenant_indexes), once every query is organization-scoped.
drop index concurrently if exists workflow_states_workflow_exec_id_idx;
create index concurrently workflow_states_workflow_exec_id_idx on workflow_states (workflow_exec_id);
drop index concurrently if exists task_states_task_exec_id_idx;
create index concurrently task_states_task_exec_id_idx on task_states (task_exec_id);
drop index concurrently if exists schedules_id_idx;
create index concurrently schedules_id_idx on schedules (id);

begin;
set local statement_timeout = '10s';
-- All strong locks first, in the order the engine's transactions take them (a workflow, then
-- its tasks): taken one by one, dropping the task -> workflow foreign key would lock
-- task_states before workflow_states and could deadlock with a writer.
lock table workflow_states, task_states, schedules in access exclusive mode;
alter table task_states drop constraint if exists task_states_workflow_exec_id_fkey;
alter table task_states drop constraint if exists task_states_parent_state_id_fkey;
alter table task_states drop constraint if exists task_states_workflow_fkey;
alter table task_states drop constraint if exists task_states_parent_fkey;
alter table workflow_states drop constraint workflow_states_pkey;
-- squawk-ignore disallowed-unique-constraint -- the index was built concurrently above
alter table workflow_states add constraint workflow_states_pkey
  primary key using index workflow_states_org_id_workflow_exec_id_key;
alter table task_states drop constraint task_states_pkey;
-- squawk-ignore disallowed-unique-constraint -- the index was built concurrently above
alter table task_states add constraint task_states_pkey
  primary key using index task_states_org_id_task_exec_id_key;
alter table schedules drop constraint schedules_pkey;
-- squawk-ignore disallowed-unique-constraint -- the index was built concurrently above
alter table schedules add constraint schedules_pkey
  primary key using index schedules_org_id_id_key;
-- A task's state goes with its workflow execution, children with their parent, as before; now
-- only within one organization.
alter table task_states add constraint task_states_workflow_fkey
  foreign key (org_id, workflow_exec_id) references workflow_states (org_id, workflow_exec_id)
  on delete cascade not valid;
alter table task_states add constraint task_states_parent_fkey
  foreign key (org_id, parent_state_id) references task_states (org_id, task_exec_id)
  on delete cascade not valid;
commit;

-- Down Migration
set statement_timeout = 0;

-- Single-column keys cannot keep organizations apart: once other organizations own rows, a
-- task could point at another organization's workflow again. Refuse before changing anything.
-- engine-store: down-guard
do $$
declare
  default_org constant uuid := '00000000-0000-7000-8000-000000000001';
begin
  if exists (select 1 from workflow_states where org_id <> default_org)
     or exists (select 1 from task_states where org_id <> default_org)
     or exists (select 1 from schedules where org_id <> default_org) then
    raise exception 'refusing to drop the organization-scoped keys: engine state belongs to organizations other than default'
      using errcode = 'object_not_in_prerequisite_state',
            hint = 'purge those organizations first';
  end if;
end
$$;

-- The single-column keys come back the same way: index first, concurrently, then a short swap.
-- This fails (and changes nothing) if two organizations now hold the same id.
drop index concurrently if exists workflow_states_workflow_exec_id_key;
create unique index concurrently workflow_states_workflow_exec_id_key
  on workflow_states (workflow_exec_id);
drop index concurrently if exists task_states_task_exec_id_key;
create unique index concurrently task_states_task_exec_id_key
  on task_states (task_exec_id);
drop index concurrently if exists schedules_id_key;
create unique index concurrently schedules_id_key
  on schedules (id);

begin;
set local statement_timeout = '10s';
lock table workflow_states, task_states, schedules in access exclusive mode;
alter table task_states drop constraint if exists task_states_workflow_fkey;
alter table task_states drop constraint if exists task_states_parent_fkey;
alter table task_states drop constraint if exists task_states_workflow_exec_id_fkey;
alter table task_states drop constraint if exists task_states_parent_state_id_fkey;
alter table workflow_states drop constraint workflow_states_pkey;
-- squawk-ignore disallowed-unique-constraint -- the index was built concurrently above
alter table workflow_states add constraint workflow_states_pkey
  primary key using index workflow_states_workflow_exec_id_key;
alter table task_states drop constraint task_states_pkey;
-- squawk-ignore disallowed-unique-constraint -- the index was built concurrently above
alter table task_states add constraint task_states_pkey
  primary key using index task_states_task_exec_id_key;
alter table schedules drop constraint schedules_pkey;
-- squawk-ignore disallowed-unique-constraint -- the index was built concurrently above
alter table schedules add constraint schedules_pkey
  primary key using index schedules_id_key;
alter table task_states add constraint task_states_workflow_exec_id_fkey
  foreign key (workflow_exec_id) references workflow_states (workflow_exec_id)
  on delete cascade not valid;
alter table task_states add constraint task_states_parent_state_id_fkey
  foreign key (parent_state_id) references task_states (task_exec_id)
  on delete cascade not valid;
commit;

-- Validation scans, but under a lock that lets reads and writes go on.
alter table task_states validate constraint task_states_workflow_exec_id_fkey;
alter table task_states validate constraint task_states_parent_state_id_fkey;

drop index concurrently if exists schedules_id_idx;
drop index concurrently if exists task_states_task_exec_id_idx;
drop index concurrently if exists workflow_states_workflow_exec_id_idx;
