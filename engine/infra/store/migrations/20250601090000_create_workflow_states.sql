-- Creates workflow_states as the single-tenant engine has it: one row per workflow execution.
-- Up Migration
set local statement_timeout = '60s';

create table workflow_states (
  workflow_exec_id uuid not null,
  workflow_id text not null,
  status text not null,
  input jsonb,
  output jsonb,
  error jsonb,
  usage jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint workflow_states_pkey primary key (workflow_exec_id)
);

create index workflow_states_status_idx on workflow_states (status);
create index workflow_states_workflow_id_idx on workflow_states (workflow_id);

-- Down Migration
set local statement_timeout = '60s';
-- squawk-ignore ban-drop-table -- reverting the create above is the point of this section
drop table workflow_states;
