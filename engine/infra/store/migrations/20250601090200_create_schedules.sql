-- Creates schedules as the single-tenant engine has it: cron triggers of workflows.
-- Up Migration
set local statement_timeout = '60s';

create table schedules (
  id uuid not null default gen_random_uuid(),
  workflow_id text not null,
  cron_expression text not null,
  timezone text not null default 'UTC',
  enabled boolean not null default true,
  input jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint schedules_pkey primary key (id)
);

create index schedules_workflow_id_idx on schedules (workflow_id);

-- Down Migration
set local statement_timeout = '60s';
-- squawk-ignore ban-drop-table -- reverting the create above is the point of this section
drop table schedules;
