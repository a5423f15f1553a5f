/**
 * What workflow states and task states have in common: their JSON payloads, their status
 * changes, and reading, updating and deleting one row by its execution id. Each repository
 * describes its table once; the statements live here.
 */
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { jsonParam, run } from '../connection/run.ts';
import { executionStatus, inputObject, jsonPayload, parseInput, parseObject, uuid, type ExecutionStatus } from './validation.ts';

/** What a status change may carry; omitted payloads keep their stored value. */
export interface ExecutionUpdate {
  status: ExecutionStatus;
  output?: unknown;
  error?: unknown;
  usage?: unknown;
}

/** The JSON payloads of a workflow or task execution, validated alike. */
export const executionPayloadShape = {
  input: jsonPayload.optional(),
  output: jsonPayload.optional(),
  error: jsonPayload.optional(),
  usage: jsonPayload.optional(),
};

/** A status change: the input is not changed by one. */
const EXECUTION_UPDATE = inputObject({
  status: executionStatus,
  output: jsonPayload.optional(),
  error: jsonPayload.optional(),
  usage: jsonPayload.optional(),
});

export interface ExecutionTable<Row, Item> {
  table: 'workflow_states' | 'task_states';
  /** The id column, and the name callers know it by (for INVALID_INPUT messages). */
  idColumn: string;
  idField: string;
  columns: string;
  toItem: (row: Row) => Item;
  /** Said by NOT_FOUND: "no such ... in this organization". */
  what: string;
}

/** Get, status change and delete of one execution state by id, inside a tenant scope. */
export class ExecutionStatesById<Row, Item> {
  constructor(
    private readonly db: Queryable,
    /** The scope's organization: every statement names it (on Citus, one shard). */
    private readonly orgId: string,
    private readonly spec: ExecutionTable<Row, Item>,
  ) {}

  async get(id: string): Promise<Item> {
    const { rows } = await run<Row>(
      this.db,
      `select ${this.spec.columns} from ${this.spec.table} where org_id = $2 and ${this.spec.idColumn} = $1`,
      [this.parseId(id), this.orgId],
    );
    return this.one(rows);
  }

  async updateStatus(id: string, update: ExecutionUpdate): Promise<Item> {
    const key = this.parseId(id);
    const change = parseObject(EXECUTION_UPDATE, update, 'update');
    const { rows } = await run<Row>(
      this.db,
      `update ${this.spec.table}
          set status = $2, output = coalesce($3::jsonb, output), error = coalesce($4::jsonb, error), usage = coalesce($5::jsonb, usage)
        where org_id = $6 and ${this.spec.idColumn} = $1
       returning ${this.spec.columns}`,
      [key, change.status, jsonParam(change.output), jsonParam(change.error), jsonParam(change.usage), this.orgId],
    );
    return this.one(rows);
  }

  async delete(id: string): Promise<void> {
    const { rowCount } = await run(this.db, `delete from ${this.spec.table} where org_id = $2 and ${this.spec.idColumn} = $1`, [
      this.parseId(id),
      this.orgId,
    ]);
    if (rowCount === 0) throw this.notFound();
  }

  notFound(): StoreError {
    return new StoreError('NOT_FOUND', `no such ${this.spec.what} in this organization`);
  }

  private parseId(id: string): string {
    return parseInput(uuid, id, this.spec.idField);
  }

  private one(rows: Row[]): Item {
    if (!rows[0]) throw this.notFound();
    return this.spec.toItem(rows[0]);
  }
}
