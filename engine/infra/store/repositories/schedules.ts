/**
 * Schedules (cron triggers of workflows) of one organization, inside `withOrg`. Soft delete
 * hides a schedule from listings and `get`; `restore` brings it back; `delete` removes it.
 */
import { z } from 'zod/v4';
import { cronProblem } from './cron.ts';
import type { Queryable } from '../connection/database.ts';
import { StoreError } from '../errors.ts';
import { CURSOR_MICROS_SQL, pageShape, selectPage, type Page, type PageRequest } from './pagination.ts';
import { jsonParam, run } from '../connection/run.ts';
import { engineIdentifier, jsonPayload, parseInput, inputObject, parseObject, uuid, readIncludeDeleted } from './validation.ts';

export interface Schedule {
  id: string;
  orgId: string;
  workflowId: string;
  cronExpression: string;
  timezone: string;
  enabled: boolean;
  input: unknown;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
}

export interface CreateSchedule {
  workflowId: string;
  cronExpression: string;
  /** An IANA time zone such as `Europe/Paris`; default `UTC`. */
  timezone?: string;
  enabled?: boolean;
  input?: unknown;
}

export type ScheduleChanges = Partial<Omit<CreateSchedule, 'workflowId'>>;

export interface ListSchedules extends PageRequest {
  workflowId?: string;
  enabled?: boolean;
  includeDeleted?: boolean;
}

interface ScheduleRow {
  id: string;
  org_id: string;
  workflow_id: string;
  cron_expression: string;
  timezone: string;
  enabled: boolean;
  input: unknown;
  created_at: Date;
  updated_at: Date;
  deleted_at: Date | null;
  cursor_micros: string;
}

const COLUMNS = `id, org_id, workflow_id, cron_expression, timezone, enabled, input, created_at, updated_at, deleted_at, ${CURSOR_MICROS_SQL} as cursor_micros`;

function toSchedule(row: ScheduleRow): Schedule {
  return {
    id: row.id,
    orgId: row.org_id,
    workflowId: row.workflow_id,
    cronExpression: row.cron_expression,
    timezone: row.timezone,
    enabled: row.enabled,
    input: row.input,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deletedAt: row.deleted_at,
  };
}

/** Five fields (six with seconds first) of cron syntax, or a macro such as @hourly: see cron.ts. */
const cronExpression = z
  .string()
  .max(120, 'must be at most 120 characters')
  .superRefine((value, context) => {
    const problem = cronProblem(value);
    if (problem !== undefined) context.addIssue({ code: 'custom', message: `is not a cron expression: ${problem}` });
  });

/**
 * An IANA time zone. A name typed in another case (europe/paris) is stored as the zone spells it:
 * schedulers look zones up case-sensitively. Aliases (US/Eastern) are kept as given.
 */
const timezone = z
  .string()
  .max(64)
  .transform((value, context) => {
    try {
      const zone = new Intl.DateTimeFormat('en', { timeZone: value }).resolvedOptions().timeZone;
      return zone.toLowerCase() === value.toLowerCase() ? zone : value;
    } catch {
      context.addIssue({ code: 'custom', message: 'must be an IANA time zone such as Europe/Paris' });
      return z.NEVER;
    }
  });

const notFound = () => new StoreError('NOT_FOUND', 'no such schedule in this organization');

const CREATE_INPUT = inputObject({
  workflowId: engineIdentifier,
  cronExpression,
  timezone: timezone.optional(),
  enabled: z.boolean().optional(),
  input: jsonPayload.optional(),
});
const LIST_OPTIONS = inputObject({
  workflowId: engineIdentifier.optional(),
  enabled: z.boolean().optional(),
  includeDeleted: z.boolean().optional(),
  ...pageShape,
});
const CHANGES_INPUT = inputObject({
  cronExpression: cronExpression.optional(),
  timezone: timezone.optional(),
  enabled: z.boolean().optional(),
  input: jsonPayload.optional(),
});

export class SchedulesRepository {
  /** `orgId` is the scope's organization: every statement names it (on Citus, one shard). */
  constructor(
    private readonly db: Queryable,
    private readonly orgId: string,
  ) {}

  /**
   * @example
   * await tx.schedules.create({ workflowId: 'nightly-report', cronExpression: '0 2 * * *', timezone: 'Europe/Paris' });
   */
  async create(input: CreateSchedule): Promise<Schedule> {
    const schedule = parseObject(CREATE_INPUT, input, 'schedule');
    const { rows } = await run<ScheduleRow>(
      this.db,
      `insert into schedules (workflow_id, cron_expression, timezone, enabled, input)
       values ($1, $2, coalesce($3, 'UTC'), coalesce($4, true), $5::jsonb)
       returning ${COLUMNS}`,
      [schedule.workflowId, schedule.cronExpression.trim(), schedule.timezone ?? null, schedule.enabled ?? null, jsonParam(schedule.input)],
    );
    return toSchedule(rows[0]!);
  }

  async get(id: string, options: { includeDeleted?: boolean } = {}): Promise<Schedule> {
    const { rows } = await run<ScheduleRow>(
      this.db,
      `select ${COLUMNS} from schedules where org_id = $3 and id = $1 and ($2 or deleted_at is null)`,
      [parseInput(uuid, id, 'id'), readIncludeDeleted(options), this.orgId],
    );
    if (!rows[0]) throw notFound();
    return toSchedule(rows[0]);
  }

  /** Newest first, in pages. */
  async list(request: ListSchedules = {}): Promise<Page<Schedule>> {
    const { workflowId, enabled, includeDeleted, ...page } = parseObject(LIST_OPTIONS, request, 'list options');
    return selectPage(this.db, {
      orgId: this.orgId,
      table: 'schedules',
      columns: COLUMNS,
      idColumn: 'id',
      filters: [
        [(p) => `workflow_id = ${p}`, workflowId],
        [(p) => `enabled = ${p}`, enabled],
      ],
      where: includeDeleted === true ? [] : ['deleted_at is null'],
      request: page as PageRequest,
      toItem: toSchedule,
    });
  }

  /** Changes the given fields of a live schedule. */
  async update(id: string, changes: ScheduleChanges): Promise<Schedule> {
    const change = parseObject(CHANGES_INPUT, changes, 'changes');
    return this.change(
      id,
      `cron_expression = coalesce($2, cron_expression), timezone = coalesce($3, timezone),
       enabled = coalesce($4, enabled), input = coalesce($5::jsonb, input)`,
      [change.cronExpression?.trim() ?? null, change.timezone ?? null, change.enabled ?? null, jsonParam(change.input)],
    );
  }

  async softDelete(id: string): Promise<Schedule> {
    return this.change(id, 'deleted_at = now()');
  }

  async restore(id: string): Promise<Schedule> {
    const { rows } = await run<ScheduleRow>(
      this.db,
      `update schedules set deleted_at = null where org_id = $2 and id = $1 and deleted_at is not null returning ${COLUMNS}`,
      [parseInput(uuid, id, 'id'), this.orgId],
    );
    if (!rows[0]) throw new StoreError('NOT_FOUND', 'no soft-deleted schedule with this id in this organization');
    return toSchedule(rows[0]);
  }

  /** Removes the schedule for good, soft-deleted or not. */
  async delete(id: string): Promise<void> {
    const { rowCount } = await run(this.db, 'delete from schedules where org_id = $2 and id = $1', [
      parseInput(uuid, id, 'id'),
      this.orgId,
    ]);
    if (rowCount === 0) throw notFound();
  }

  private async change(id: string, assignments: string, params: unknown[] = []): Promise<Schedule> {
    const { rows } = await run<ScheduleRow>(
      this.db,
      `update schedules set ${assignments} where org_id = $${params.length + 2} and id = $1 and deleted_at is null returning ${COLUMNS}`,
      [parseInput(uuid, id, 'id'), ...params, this.orgId],
    );
    if (!rows[0]) throw notFound();
    return toSchedule(rows[0]);
  }
}
