-- Creates task_states as the single-tenant engine has it: one row per task execution, children point at their parent.
-- Up Migration
set local statement_timeout = '60s';

create table task_states (
  task_exec_id uuid not null,
  task_id text not null,
  workflow_exec_id uuid not null,
  workflow_id text not null,
  component text not null,
  status text not null,
  execution_type text not null default 'basic',
  agent_id text,
  tool_id text,
  action_id text,
  parent_state_id uuid,
  input jsonb,
  output jsonb,
  error jsonb,
  usage jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint task_states_pkey primary key (task_exec_id),
  -- A task's state means nothing without its workflow execution: it goes with it.
  constraint task_states_workflow_exec_id_fkey foreign key (workflow_exec_id)
    references workflow_states (workflow_exec_id) on delete cascade,
  -- Child tasks go with their parent.
  constraint task_states_parent_state_id_fkey foreign key (parent_state_id)
    references task_states (task_exec_id) on delete cascade
);

create index task_states_workflow_exec_id_idx on task_states (workflow_exec_id);
create index task_states_parent_state_id_idx on task_states (parent_state_id);
create index task_states_status_idx on task_states (status);

-- Down Migration
set local statement_timeout = '60s';
-- squawk-ignore ban-drop-table -- reverting the create above is the point of this section
drop table task_states;
