/**
 * Workflow execution states of one organization (inside `withOrg`). Keyed by
 * (org_id, workflow_exec_id): the same execution id in two organizations is two rows, and an
 * upsert can only ever meet its own organization's row.
 */
import type { Queryable } from '../connection/database.ts';
import { ExecutionStatesById, executionPayloadShape, type ExecutionUpdate } from './execution-states.ts';
import { CURSOR_MICROS_SQL, pageShape, selectPage, type Page, type PageRequest } from './pagination.ts';
import { jsonParam, run } from '../connection/run.ts';
import { engineIdentifier, executionStatus, inputObject, parseObject, uuid, type ExecutionStatus } from './validation.ts';

export type { ExecutionUpdate } from './execution-states.ts';

export interface WorkflowState {
  workflowExecId: string;
  orgId: string;
  workflowId: string;
  status: ExecutionStatus;
  input: unknown;
  output: unknown;
  error: unknown;
  usage: unknown;
  createdAt: Date;
  updatedAt: Date;
}

export interface UpsertWorkflowState {
  workflowExecId: string;
  workflowId: string;
  status: ExecutionStatus;
  input?: unknown;
  output?: unknown;
  error?: unknown;
  usage?: unknown;
}

export interface ListWorkflowStates extends PageRequest {
  status?: ExecutionStatus;
  workflowId?: string;
}

interface WorkflowStateRow {
  workflow_exec_id: string;
  org_id: string;
  workflow_id: string;
  status: ExecutionStatus;
  input: unknown;
  output: unknown;
  error: unknown;
  usage: unknown;
  created_at: Date;
  updated_at: Date;
  cursor_micros: string;
}

const COLUMNS = `workflow_exec_id, org_id, workflow_id, status, input, output, error, usage, created_at, updated_at, ${CURSOR_MICROS_SQL} as cursor_micros`;

function toWorkflowState(row: WorkflowStateRow): WorkflowState {
  return {
    workflowExecId: row.workflow_exec_id,
    orgId: row.org_id,
    workflowId: row.workflow_id,
    status: row.status,
    input: row.input,
    output: row.output,
    error: row.error,
    usage: row.usage,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const UPSERT_INPUT = inputObject({
  workflowExecId: uuid,
  workflowId: engineIdentifier,
  status: executionStatus,
  ...executionPayloadShape,
});
const LIST_OPTIONS = inputObject({ status: executionStatus.optional(), workflowId: engineIdentifier.optional(), ...pageShape });

export class WorkflowStatesRepository {
  private readonly byId: ExecutionStatesById<WorkflowStateRow, WorkflowState>;

  /** `orgId` is the scope's organization: every statement names it (on Citus, one shard). */
  constructor(
    private readonly db: Queryable,
    private readonly orgId: string,
  ) {
    this.byId = new ExecutionStatesById(db, orgId, {
      table: 'workflow_states',
      idColumn: 'workflow_exec_id',
      idField: 'workflowExecId',
      columns: COLUMNS,
      toItem: toWorkflowState,
      what: 'workflow execution',
    });
  }

  /**
   * Creates the state, or replaces status and the given payloads of an existing one (its
   * workflow id, like a task's identity, never changes; an omitted or null payload keeps the
   * stored one).
   *
   * @example
   * await tx.workflows.upsert({ workflowExecId, workflowId: 'onboarding', status: 'running', input: { user: 42 } });
   */
  async upsert(input: UpsertWorkflowState): Promise<WorkflowState> {
    const state = parseObject(UPSERT_INPUT, input, 'workflow state');
    const { rows } = await run<WorkflowStateRow>(
      this.db,
      `insert into workflow_states (workflow_exec_id, workflow_id, status, input, output, error, usage)
       values ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7::jsonb)
       on conflict (org_id, workflow_exec_id) do update set
         status = excluded.status,
         input = coalesce(excluded.input, workflow_states.input),
         output = coalesce(excluded.output, workflow_states.output),
         error = coalesce(excluded.error, workflow_states.error),
         usage = coalesce(excluded.usage, workflow_states.usage)
       returning ${COLUMNS}`,
      [
        state.workflowExecId,
        state.workflowId,
        state.status,
        jsonParam(state.input),
        jsonParam(state.output),
        jsonParam(state.error),
        jsonParam(state.usage),
      ],
    );
    return toWorkflowState(rows[0]!);
  }

  get(workflowExecId: string): Promise<WorkflowState> {
    return this.byId.get(workflowExecId);
  }

  /** Newest first, in pages, optionally by status or workflow. */
  async list(request: ListWorkflowStates = {}): Promise<Page<WorkflowState>> {
    const { status, workflowId, ...page } = parseObject(LIST_OPTIONS, request, 'list options');
    return selectPage(this.db, {
      orgId: this.orgId,
      table: 'workflow_states',
      columns: COLUMNS,
      idColumn: 'workflow_exec_id',
      filters: [
        [(p) => `status = ${p}`, status],
        [(p) => `workflow_id = ${p}`, workflowId],
      ],
      request: page as PageRequest,
      toItem: toWorkflowState,
    });
  }

  updateStatus(workflowExecId: string, update: ExecutionUpdate): Promise<WorkflowState> {
    return this.byId.updateStatus(workflowExecId, update);
  }

  /** Deletes the state and, by cascade, its task states. */
  delete(workflowExecId: string): Promise<void> {
    return this.byId.delete(workflowExecId);
  }
}
