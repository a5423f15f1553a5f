/**
 * Task execution states of one organization (inside `withOrg`). A task belongs to a workflow
 * execution and may have a parent task; both references are composite foreign keys that
 * include org_id, so neither can point into another organization.
 */
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { CURSOR_MICROS_SQL, pageShape, selectPage, type Page, type PageRequest } from './pagination.ts';
import { jsonParam, run } from '../connection/run.ts';
import { executionStatus, inputObject, parseObject, uuid, type ExecutionStatus } from './validation.ts';
import { ExecutionStatesById, type ExecutionUpdate } from './execution-states.ts';
import { UPSERT_TASK_INPUT, checkedBatchElement, plainBatchElement, refuseSelfParent, type TaskComponent } from './task-input.ts';

export { TASK_COMPONENTS, type TaskComponent } from './task-input.ts';

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

const LIST_OPTIONS = inputObject({
  workflowExecId: uuid.optional(),
  parentStateId: uuid.optional(),
  status: executionStatus.optional(),
  ...pageShape,
});

const INSERTED_COLUMNS = `task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type,
  agent_id, tool_id, action_id, parent_state_id, input, output, error, usage`;

/** An existing state keeps its identity and its payloads where the new one has none. */
const ON_CONFLICT_UPDATE = `on conflict (org_id, task_exec_id) do update set
  status = excluded.status,
  input = coalesce(excluded.input, task_states.input),
  output = coalesce(excluded.output, task_states.output),
  error = coalesce(excluded.error, task_states.error),
  usage = coalesce(excluded.usage, task_states.usage)`;

/** upsertMany()'s statement: the rows come as one JSON array (parameter $1). */
export const UPSERT_BATCH_SQL = `insert into task_states (${INSERTED_COLUMNS})
  select task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, coalesce(execution_type, 'basic'),
         agent_id, tool_id, action_id, parent_state_id, input, output, error, usage
    from jsonb_to_recordset($1::jsonb) as batch (task_exec_id uuid, task_id text, workflow_exec_id uuid, workflow_id text,
         component text, status text, execution_type text, agent_id text, tool_id text, action_id text, parent_state_id uuid,
         input jsonb, output jsonb, error jsonb, usage jsonb)
  ${ON_CONFLICT_UPDATE}
  returning ${COLUMNS}`;

const MAX_BATCH = 1000;

/** Runs a check of the batch's entry `index`, naming the entry in the error's field. */
function inIndexedField<T>(index: number, check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (!(error instanceof StoreError)) throw error;
    const field = `${index}.${error.details.field ?? 'task state'}`;
    throw new StoreError(error.code, `task state ${index}: ${error.message}`, { ...error.details, field });
  }
}

export class TaskStatesRepository {
  private readonly byId: ExecutionStatesById<TaskStateRow, TaskState>;

  /** `orgId` is the scope's organization: every statement names it (on Citus, one shard). */
  constructor(
    private readonly db: Queryable,
    private readonly orgId: string,
  ) {
    this.byId = new ExecutionStatesById(db, orgId, {
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
    const task = parseObject(UPSERT_TASK_INPUT, input, 'task state');
    refuseSelfParent(task);
    const { rows } = await run<TaskStateRow>(
      this.db,
      `insert into task_states (${INSERTED_COLUMNS})
       values ($1, $2, $3, $4, $5, $6, coalesce($7, 'basic'), $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15::jsonb)
       ${ON_CONFLICT_UPDATE}
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

  /**
   * upsert() for many states in one statement (at most 1,000): all are written or, on any
   * failure, none. A task may name as its parent another task of the same batch. Returns the
   * states in the order given.
   *
   * @example
   * await tx.tasks.upsertMany(steps.map((step) => ({ taskExecId: step.id, taskId: step.name, workflowExecId, workflowId, component: 'task', status: 'pending' })));
   */
  async upsertMany(inputs: readonly UpsertTaskState[]): Promise<TaskState[]> {
    if (!Array.isArray(inputs))
      throw new StoreError('INVALID_INPUT', 'task states must be an array', { field: 'states', reason: 'invalid_type' });
    if (inputs.length > MAX_BATCH) {
      throw new StoreError('INVALID_INPUT', `at most ${MAX_BATCH} task states at once`, { field: 'states', reason: 'too_big' });
    }
    const elements = inputs.map(
      (input: unknown, index) => plainBatchElement(input) ?? inIndexedField(index, () => checkedBatchElement(input)),
    );
    // Ids come out in lower case, as PostgreSQL returns them.
    const ids = new Set(elements.map((element) => element.taskExecId));
    if (ids.size < elements.length) {
      // PostgreSQL refuses to update one row twice in a statement; say which input is at fault.
      throw new StoreError('INVALID_INPUT', 'a taskExecId appears twice in the batch', { field: 'taskExecId', reason: 'duplicate' });
    }
    if (elements.length === 0) return [];
    // One JSON document for the whole batch: one parameter, however many rows.
    const batch = `[${elements.map((element) => element.json).join(',')}]`;
    const { rows } = await run<TaskStateRow>(this.db, UPSERT_BATCH_SQL, [batch]);
    const byId = new Map(rows.map((row) => [row.task_exec_id, toTaskState(row)]));
    return elements.map((element) => byId.get(element.taskExecId)!);
  }

  get(taskExecId: string): Promise<TaskState> {
    return this.byId.get(taskExecId);
  }

  /** Newest first, in pages; filter by workflow execution, parent task or status. */
  async list(request: ListTaskStates = {}): Promise<Page<TaskState>> {
    const { workflowExecId, parentStateId, status, ...page } = parseObject(LIST_OPTIONS, request, 'list options');
    return selectPage(this.db, {
      orgId: this.orgId,
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
