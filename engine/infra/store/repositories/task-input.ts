/**
 * A task state as callers give it: the schema upsert() and upsertMany() check it with
 * (UPSERT_TASK_INPUT), and its element in upsertMany()'s batch document, one JSON object per
 * state with its columns by name (see UPSERT_BATCH_SQL).
 *
 * Checking and serializing the states is most of a batch write's JavaScript, and zod spends
 * about 3 µs on each state. So a state is first given to `plainBatchElement`, which applies the
 * schema's rules in one pass and writes the element as it goes; it accepts exactly what the
 * schema accepts. The schema still runs for a state it refuses, to name the field and the rule
 * in the error. test/task-input.test.ts holds the two to the same answers with generated inputs.
 */
import { z } from 'zod/v4';
import { StoreError } from '../errors.ts';
import { executionPayloadShape } from './execution-states.ts';
import type { UpsertTaskState } from './tasks.ts';
import {
  ENGINE_IDENTIFIER_MAX,
  EXECUTION_STATUSES,
  INVISIBLE,
  MAX_PAYLOAD_BYTES,
  REFUSED_ESCAPE,
  hiddenNonJson,
  UUID,
  engineIdentifier,
  executionStatus,
  inputObject,
  parseObject,
  uuid,
} from './validation.ts';

export const TASK_COMPONENTS = ['task', 'agent', 'tool'] as const;
export type TaskComponent = (typeof TASK_COMPONENTS)[number];

const EXECUTION_TYPE = /^[a-z][a-z0-9_]{0,31}$/;
const optionalIdentifier = engineIdentifier.nullable().optional();

/** What upsert() and upsertMany() accept for one task state. */
export const UPSERT_TASK_INPUT = inputObject({
  taskExecId: uuid,
  taskId: engineIdentifier,
  workflowExecId: uuid,
  workflowId: engineIdentifier,
  component: z.enum(TASK_COMPONENTS),
  status: executionStatus,
  executionType: z.string().regex(EXECUTION_TYPE, 'must be a lowercase identifier').optional(),
  agentId: optionalIdentifier,
  toolId: optionalIdentifier,
  actionId: optionalIdentifier,
  parentStateId: uuid.nullable().optional(),
  ...executionPayloadShape,
});

const KNOWN_FIELDS = new Set(Object.keys(UPSERT_TASK_INPUT.shape));
const COMPONENTS: ReadonlySet<unknown> = new Set(TASK_COMPONENTS);
const STATUSES: ReadonlySet<unknown> = new Set(EXECUTION_STATUSES);

/** A batch element and the id it writes (lower case, as PostgreSQL returns it). */
export interface BatchElement {
  taskExecId: string;
  json: string;
}

const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID.test(value);

function isEngineIdentifier(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length >= 1 &&
    value.length <= ENGINE_IDENTIFIER_MAX &&
    !INVISIBLE.test(value) &&
    value.isWellFormed()
  );
}

/** An optional identifier as JSON (absent and null are null), or undefined if it is not one. */
function optionalIdentifierJson(value: unknown): string | undefined {
  if (value === undefined || value === null) return 'null';
  return isEngineIdentifier(value) ? JSON.stringify(value) : undefined;
}

/** A payload as JSON text (absent and null are null), or undefined if jsonPayload refuses it. */
function payloadJson(value: unknown): string | undefined {
  if (value === undefined || value === null) return 'null';
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    return undefined;
  }
  if (text === undefined || REFUSED_ESCAPE.test(text)) return undefined;
  if (text.includes('null') && hiddenNonJson(value) !== undefined) return undefined;
  // A UTF-16 code unit is at most 3 bytes of UTF-8: most payloads need no byte count.
  if (text.length * 3 > MAX_PAYLOAD_BYTES && Buffer.byteLength(text) > MAX_PAYLOAD_BYTES) return undefined;
  return text;
}

/**
 * A valid task state's batch element as an object: what plainBatchElement writes as text. The
 * writes benchmark's floor serializes this with JSON.stringify, and the tests compare with it.
 */
export function batchColumns(task: UpsertTaskState): Record<string, unknown> {
  return {
    task_exec_id: task.taskExecId,
    task_id: task.taskId,
    workflow_exec_id: task.workflowExecId,
    workflow_id: task.workflowId,
    component: task.component,
    status: task.status,
    execution_type: task.executionType ?? null,
    agent_id: task.agentId ?? null,
    tool_id: task.toolId ?? null,
    action_id: task.actionId ?? null,
    parent_state_id: task.parentStateId ?? null,
    input: task.input ?? null,
    output: task.output ?? null,
    error: task.error ?? null,
    usage: task.usage ?? null,
  };
}

/**
 * The batch element of `input` if UPSERT_TASK_INPUT accepts it (and it is not its own parent),
 * else undefined: then the schema is asked for the error.
 */
export function plainBatchElement(input: unknown): BatchElement | undefined {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return undefined;
  for (const key of Object.keys(input)) if (!KNOWN_FIELDS.has(key)) return undefined;
  const task = input as Record<string, unknown>;
  const { taskExecId, taskId, workflowExecId, workflowId, component, status, executionType, parentStateId } = task;
  if (!isUuid(taskExecId) || !isUuid(workflowExecId) || !isEngineIdentifier(taskId) || !isEngineIdentifier(workflowId)) return undefined;
  if (!COMPONENTS.has(component) || !STATUSES.has(status)) return undefined;
  if (executionType !== undefined && !(typeof executionType === 'string' && EXECUTION_TYPE.test(executionType))) return undefined;
  if (parentStateId !== undefined && parentStateId !== null && !isUuid(parentStateId)) return undefined;
  const id = taskExecId.toLowerCase();
  const parent = parentStateId === undefined || parentStateId === null ? undefined : parentStateId.toLowerCase();
  if (parent === id) return undefined;
  const agentId = optionalIdentifierJson(task.agentId);
  const toolId = optionalIdentifierJson(task.toolId);
  const actionId = optionalIdentifierJson(task.actionId);
  if (agentId === undefined || toolId === undefined || actionId === undefined) return undefined;
  const payloads = [payloadJson(task.input), payloadJson(task.output), payloadJson(task.error), payloadJson(task.usage)];
  if (payloads.includes(undefined)) return undefined;
  const [inputJson, outputJson, errorJson, usageJson] = payloads;
  // Ids, enums and the execution type match patterns with nothing to escape in JSON.
  const json =
    `{"task_exec_id":"${id}","task_id":${JSON.stringify(taskId)},"workflow_exec_id":"${workflowExecId.toLowerCase()}",` +
    `"workflow_id":${JSON.stringify(workflowId)},"component":"${component as string}","status":"${status as string}",` +
    `"execution_type":${executionType === undefined ? 'null' : `"${executionType}"`},"agent_id":${agentId},"tool_id":${toolId},` +
    `"action_id":${actionId},"parent_state_id":${parent === undefined ? 'null' : `"${parent}"`},` +
    `"input":${inputJson},"output":${outputJson},"error":${errorJson},"usage":${usageJson}}`;
  return { taskExecId: id, json };
}

export function refuseSelfParent(task: { taskExecId: string; parentStateId?: string | null }): void {
  if (task.parentStateId === task.taskExecId) {
    throw new StoreError('INVALID_INPUT', 'a task cannot be its own parent', { field: 'parentStateId', reason: 'self_reference' });
  }
}

/**
 * The batch element of `input` by way of the schema, which throws the INVALID_INPUT of a state
 * plainBatchElement refused.
 */
export function checkedBatchElement(input: unknown): BatchElement {
  const task = parseObject(UPSERT_TASK_INPUT, input, 'task state');
  refuseSelfParent(task);
  const element = plainBatchElement(task);
  // Unreachable while the two agree (tested); a bug, not bad input, if they ever do not.
  if (element === undefined) throw new Error('task state accepted by its schema but not by plainBatchElement');
  return element;
}
