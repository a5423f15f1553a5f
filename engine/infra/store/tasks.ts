/**
 * Task execution states of one organization (inside `withOrg`). A task belongs to a workflow
 * execution and may have a parent task; both references are composite foreign keys that
 * include org_id, so neither can point into another organization.
 */
import { z } from 'zod';
import type { Queryable } from './db.ts';
import { StoreError } from './errors.ts';
import { CURSOR_MICROS_SQL, pageShape, selectPage, type Page, type PageRequest } from './pagination.ts';
import { jsonParam, run } from './sql.ts';
import { engineIdentifier, executionStatus, parseObject, uuid, type ExecutionStatus } from './validation.ts';
import { ExecutionStatesById, executionPayloadShape, type ExecutionUpdate } from './execution-states.ts';

export const TASK_COMPONENTS = ['task', 'agent', 'tool'] as const;
export type TaskComponent = (typeof TASK_COMPONENTS)[number];

export interface TaskState {
  taskExecId: string;
  orgId: string;
  taskId: string;
  workflowExecId: string;
  workflowId: string;
  component: TaskComponent;
  status: ExecutionStatus;
  executionType: string;
  agentId: string | null;
  toolId: string | null;
  actionId: string | null;
  parentStateId: string | null;
  input: unknown;
  output: unknown;
  error: unknown;
  usage: unknown;
  createdAt: Date;
  updatedAt: Date;
}

export interface UpsertTaskState {
  taskExecId: string;
  taskId: string;
  workflowExecId: string;
  workflowId: string;
  component: TaskComponent;
  status: ExecutionStatus;
  /** Default `basic`. */
  executionType?: string;
  agentId?: string | null;
  toolId?: string | null;
  actionId?: string | null;
  parentStateId?: string | null;
  input?: unknown;
  output?: unknown;
  error?: unknown;
  usage?: unknown;
}

export interface ListTaskStates extends PageRequest {
  workflowExecId?: string;
  parentStateId?: string;
  status?: ExecutionStatus;
}

interface TaskStateRow {
  task_exec_id: string;
  org_id: string;
  task_id: string;
  workflow_exec_id: string;
  workflow_id: string;
  component: TaskComponent;
  status: ExecutionStatus;
  execution_type: string;
  agent_id: string | null;
  tool_id: string | null;
  action_id: string | null;
  parent_state_id: string | null;
  input: unknown;
  output: unknown;
  error: unknown;
  usage: unknown;
  created_at: Date;
  updated_at: Date;
  cursor_micros: string;
}

const COLUMNS = `task_exec_id, org_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type,
  agent_id, tool_id, action_id, parent_state_id, input, output, error, usage, created_at, updated_at,
  ${CURSOR_MICROS_SQL} as cursor_micros`;

function toTaskState(row: TaskStateRow): TaskState {
  return {
    taskExecId: row.task_exec_id,
    orgId: row.org_id,
    taskId: row.task_id,
    workflowExecId: row.workflow_exec_id,
    workflowId: row.workflow_id,
    component: row.component,
    status: row.status,
    executionType: row.execution_type,
    agentId: row.agent_id,
    toolId: row.tool_id,
    actionId: row.action_id,
    parentStateId: row.parent_state_id,
    input: row.input,
    output: row.output,
    error: row.error,
    usage: row.usage,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const optionalIdentifier = engineIdentifier.nullable().optional();

export class TaskStatesRepository {
  private readonly byId: ExecutionStatesById<TaskStateRow, TaskState>;

  constructor(private readonly db: Queryable) {
    this.byId = new ExecutionStatesById(db, {
      table: 'task_states',
      idColumn: 'task_exec_id',
      idField: 'taskExecId',
      columns: COLUMNS,
      toItem: toTaskState,
      what: 'task execution',
    });
  }

  /**
   * Creates the state, or replaces status and the given payloads of an existing one. The
   * workflow execution (and the parent, when given) must exist in this organization.
   *
   * @example
   * await tx.tasks.upsert({ taskExecId, taskId: 'send-email', workflowExecId, workflowId: 'onboarding', component: 'tool', status: 'running' });
   */
  async upsert(input: UpsertTaskState): Promise<TaskState> {
    const task = parseObject(
      {
        taskExecId: uuid,
        taskId: engineIdentifier,
        workflowExecId: uuid,
        workflowId: engineIdentifier,
        component: z.enum(TASK_COMPONENTS),
        status: executionStatus,
        executionType: z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, 'must be a lowercase identifier').optional(),
        agentId: optionalIdentifier,
        toolId: optionalIdentifier,
        actionId: optionalIdentifier,
        parentStateId: uuid.nullable().optional(),
        ...executionPayloadShape,
      },
      input,
      'task state',
    );
    if (task.parentStateId === task.taskExecId) {
      throw new StoreError('INVALID_INPUT', 'a task cannot be its own parent', { field: 'parentStateId', reason: 'self_reference' });
    }
    const { rows } = await run<TaskStateRow>(
      this.db,
      `insert into task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type,
                                agent_id, tool_id, action_id, parent_state_id, input, output, error, usage)
       values ($1, $2, $3, $4, $5, $6, coalesce($7, 'basic'), $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15::jsonb)
       on conflict (org_id, task_exec_id) do update set
         status = excluded.status,
         input = coalesce(excluded.input, task_states.input),
         output = coalesce(excluded.output, task_states.output),
         error = coalesce(excluded.error, task_states.error),
         usage = coalesce(excluded.usage, task_states.usage)
       returning ${COLUMNS}`,
      [
        task.taskExecId,
        task.taskId,
        task.workflowExecId,
        task.workflowId,
        task.component,
        task.status,
        task.executionType ?? null,
        task.agentId ?? null,
        task.toolId ?? null,
        task.actionId ?? null,
        task.parentStateId ?? null,
        jsonParam(task.input),
        jsonParam(task.output),
        jsonParam(task.error),
        jsonParam(task.usage),
      ],
    );
    return toTaskState(rows[0]!);
  }

  get(taskExecId: string): Promise<TaskState> {
    return this.byId.get(taskExecId);
  }

  /** Newest first, in pages; filter by workflow execution, parent task or status. */
  async list(request: ListTaskStates = {}): Promise<Page<TaskState>> {
    const { workflowExecId, parentStateId, status, ...page } = parseObject(
      {
        workflowExecId: uuid.optional(),
        parentStateId: uuid.optional(),
        status: executionStatus.optional(),
        ...pageShape,
      },
      request,
      'list options',
    );
    return selectPage(this.db, {
      table: 'task_states',
      columns: COLUMNS,
      idColumn: 'task_exec_id',
      filters: [
        [(p) => `workflow_exec_id = ${p}::uuid`, workflowExecId],
        [(p) => `parent_state_id = ${p}::uuid`, parentStateId],
        [(p) => `status = ${p}`, status],
      ],
      request: page as PageRequest,
      toItem: toTaskState,
    });
  }

  /** The direct children of a task, newest first. */
  async children(parentStateId: string, request: PageRequest = {}): Promise<Page<TaskState>> {
    return this.list({ ...request, parentStateId });
  }

  updateStatus(taskExecId: string, update: ExecutionUpdate): Promise<TaskState> {
    return this.byId.updateStatus(taskExecId, update);
  }

  /** Deletes the task state and, by cascade, its children. */
  delete(taskExecId: string): Promise<void> {
    return this.byId.delete(taskExecId);
  }
}
