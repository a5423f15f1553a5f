/**
 * The multi-tenancy migrations of the engine's existing tables (20261128120100 .. 20261128120500)
 * must keep every row of a single-tenant database exactly as it was: up gives each row to the
 * default organization without touching any original column (updated_at included), and down
 * gives back the single-tenant tables with the same rows. Down must refuse, and change nothing,
 * while engine state belongs to an organization other than default.
 *
 * Rows are compared through a per-row digest computed in SQL over the original columns, named
 * explicitly (the tables gain org_id, and schedules deleted_at, in between).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Database, Queryable } from '../../engine/infra/store/connection/database.ts';
import { migrateDown, migrateUp, migrationStatus } from '../../engine/infra/store/migrator/runner.ts';
import { backends, type TestDatabase } from '../support/backends.ts';
import { StoreError } from '../../engine/infra/store/errors.ts';
import { DEFAULT_ORG_ID } from 'engine-store';

/** The last migration before the existing tables become multi-tenant. */
const BASELINE = '20261128120000_add_multitenant_schema';
/** The migration that makes the keys organization-scoped; its down refuses while other organizations own rows. */
const AUDIT_TRAIL = '20261205120000_add_audit_trail';
const SCOPED_KEYS = '20261128120200_key_existing_tables_by_org';

/** The columns each table has in the single-tenant schema, in table order. */
const WORKFLOW_STATES_COLUMNS = [
  'workflow_exec_id',
  'workflow_id',
  'status',
  'input',
  'output',
  'error',
  'usage',
  'created_at',
  'updated_at',
] as const;
const TASK_STATES_COLUMNS = [
  'task_exec_id',
  'task_id',
  'workflow_exec_id',
  'workflow_id',
  'component',
  'status',
  'execution_type',
  'agent_id',
  'tool_id',
  'action_id',
  'parent_state_id',
  'input',
  'output',
  'error',
  'usage',
  'created_at',
  'updated_at',
] as const;
const SCHEDULES_COLUMNS = ['id', 'workflow_id', 'cron_expression', 'timezone', 'enabled', 'input', 'created_at', 'updated_at'] as const;

interface TableSpec {
  name: 'workflow_states' | 'task_states' | 'schedules';
  /** The single-tenant primary key column; (org_id, key) once multi-tenant. */
  key: string;
  columns: readonly string[];
}

const TABLES: readonly TableSpec[] = [
  { name: 'workflow_states', key: 'workflow_exec_id', columns: WORKFLOW_STATES_COLUMNS },
  { name: 'task_states', key: 'task_exec_id', columns: TASK_STATES_COLUMNS },
  { name: 'schedules', key: 'id', columns: SCHEDULES_COLUMNS },
];

type Digests = Record<string, string>;
type Snapshot = Record<TableSpec['name'], Digests>;

// ---------------------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------------------

/** A UUID built from a counter: same ids on every run. */
function id(prefix: string, n: number): string {
  return `${prefix}-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}
const workflowId = (n: number) => id('aaaaaaaa', n);
const taskId = (n: number) => id('bbbbbbbb', n);
const scheduleId = (n: number) => id('cccccccc', n);

/** A timestamptz literal with microseconds, some in non-UTC offsets (the same instant either way). */
function timestamp(n: number, offsetSeconds: number): string {
  const base = Date.UTC(2025, 5, 1, 8, 0, 0) + n * 3_600_007 + offsetSeconds * 1000;
  const whole = new Date(base - (base % 1000)).toISOString().slice(0, 19);
  const micros = String((n * 7919 + offsetSeconds * 104_729 + 1) % 1_000_000).padStart(6, '0');
  if (n % 4 === 1) {
    // The same instant written in +05:30.
    const shifted = new Date(base - (base % 1000) + 5.5 * 3_600_000).toISOString().slice(0, 19);
    return `${shifted}.${micros}+05:30`;
  }
  return `${whole}.${micros}+00:00`;
}

const TEXTS = [
  'plain-ascii',
  'emoji 😀🚀 and a family 👨‍👩‍👧 ✓',
  'CJK 中文漢字 かなカナ 한국어',
  'right-to-left עברית مرحبا بالعالم',
  // Combining characters (NFD): must not come back normalized to NFC.
  'combining e\u0301 a\u0308 n\u0303 \u1100\u1161',
  `quotes ' '' " and backslashes \\ \\\\ \\n`,
  'tab\tnewline\ncarriage\rreturn',
  '',
] as const;
const text = (n: number) => TEXTS[n % TEXTS.length]!;

/**
 * jsonb values as JSON text, `null` meaning SQL NULL (and the text 'null' a jsonb null). Some
 * written by hand so that numbers keep digits and scale a JavaScript number would lose.
 */
const JSONS: readonly (string | null)[] = [
  null,
  'null',
  '{}',
  '[]',
  '{"a": {"b": {"c": [1, 2, {"d": "e", "f": [[], {}]}]}}, "z": false}',
  '[1, 2.5, -3.25e10, 0.1, 1.10, 0.000001, 3.14159265358979323846264338327950288, -0, 12345678901234567890]',
  JSON.stringify({ text: 'emoji 😀 中文 مرحبا e\u0301', quote: `"q" \\ '`, nested: { list: ['ü', 'ß', '\u05D0'] } }),
  '"just a string"',
  '42',
  'true',
  'false',
  '{"key with spaces": 1, "": "empty key", "dup": 1, "dup": 2}',
  '{"tokens": {"prompt": 1234, "completion": 56}, "cost_usd": 0.0123, "models": ["a", "b"], "ok": null}',
  '[null, [null], {"n": null}]',
];
const json = (n: number) => JSONS[n % JSONS.length]!;

const WORKFLOW_STATUSES = ['pending', 'running', 'success', 'failed', 'canceled', 'paused', 'waiting'];
const TASK_STATUSES = ['pending', 'running', 'success', 'failed', 'canceled', 'waiting'];
const EXECUTION_TYPES = ['basic', 'parallel', 'collection', 'router', 'composite', 'wait'];
const TIMEZONES = ['UTC', 'America/New_York', 'Asia/Kolkata', 'Europe/Berlin', 'Australia/Lord_Howe', 'Pacific/Chatham'];
const CRONS = ['0 * * * *', '*/5 * * * *', '0 9 * * 1-5', '30 2 1 * *', '@daily', '0 0 29 2 *'];

const WORKFLOW_COUNT = 50;
const TASKS_PER_WORKFLOW = 3;
const SCHEDULE_COUNT = 20;

async function loadSingleTenantData(db: Queryable): Promise<void> {
  for (let w = 0; w < WORKFLOW_COUNT; w++) {
    await db.query(
      `insert into workflow_states (workflow_exec_id, workflow_id, status, input, output, error, usage, created_at, updated_at)
       values ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7::jsonb, $8::timestamptz, $9::timestamptz)`,
      [
        workflowId(w),
        `workflow-${w % 7} ${text(w)}`,
        WORKFLOW_STATUSES[w % WORKFLOW_STATUSES.length],
        json(w),
        json(w + 3),
        w % 5 === 0
          ? JSON.stringify({ message: text(w + 1), code: 'E_TIMEOUT', stack: ['at a (x.ts:1:2)', 'at b \\ c'] })
          : json(w * 2 + 1),
        w % 3 === 0 ? null : json(12 + (w % 3)),
        timestamp(w, 0),
        timestamp(w, 86_400 + w),
      ],
    );
  }
  // Per workflow: a root task; then a child of it (even workflows) or another root; then a
  // grandchild (every third workflow), another child of the root, or a third root.
  let t = 0;
  for (let w = 0; w < WORKFLOW_COUNT; w++) {
    const first = t;
    for (let k = 0; k < TASKS_PER_WORKFLOW; k++, t++) {
      let parent: string | null = null;
      if (k === 1 && w % 2 === 0) parent = taskId(first);
      if (k === 2 && w % 3 === 0) parent = w % 2 === 0 ? taskId(first + 1) : taskId(first);
      if (k === 2 && w % 3 === 1) parent = taskId(first);
      await db.query(
        `insert into task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type,
                                  agent_id, tool_id, action_id, parent_state_id, input, output, error, usage, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15::jsonb,
                 $16::timestamptz, $17::timestamptz)`,
        [
          taskId(t),
          `task-${k} ${text(t + 2)}`,
          workflowId(w),
          `workflow-${w % 7} ${text(w)}`,
          ['agent', 'tool', 'task', 'workflow'][t % 4],
          TASK_STATUSES[t % TASK_STATUSES.length],
          EXECUTION_TYPES[t % EXECUTION_TYPES.length],
          t % 2 === 0 ? `agent-${t} ${text(t)}` : null,
          t % 3 === 0 ? `tool-${t}` : null,
          t % 5 === 0 ? null : `action-${t % 4} ${text(t + 5)}`,
          parent,
          json(t),
          json(t + 5),
          t % 7 === 0 ? JSON.stringify({ message: text(t), retryable: t % 2 === 0 }) : json(t + 1),
          json(t + 9),
          timestamp(t, 60),
          timestamp(t, 7_200 + t),
        ],
      );
    }
  }
  for (let s = 0; s < SCHEDULE_COUNT; s++) {
    await db.query(
      `insert into schedules (id, workflow_id, cron_expression, timezone, enabled, input, created_at, updated_at)
       values ($1, $2, $3, $4, $5, $6::jsonb, $7::timestamptz, $8::timestamptz)`,
      [
        scheduleId(s),
        `workflow-${s % 7} ${text(s)}`,
        CRONS[s % CRONS.length],
        TIMEZONES[s % TIMEZONES.length],
        s % 3 !== 0,
        s % 4 === 0 ? null : json(s + 2),
        timestamp(s, 30),
        timestamp(s, 172_800 + s),
      ],
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Observations
// ---------------------------------------------------------------------------------------------

/** md5 of the row of original columns, per primary key value: any changed value changes it. */
async function digests(db: Queryable, table: TableSpec, where = 'true'): Promise<Digests> {
  const { rows } = await db.query<{ key: string; digest: string }>(
    `select ${table.key}::text as key, md5(row(${table.columns.join(', ')})::text) as digest
       from ${table.name} where ${where} order by ${table.key}`,
  );
  return Object.fromEntries(rows.map((row) => [row.key, row.digest]));
}

async function snapshot(db: Queryable): Promise<Snapshot> {
  return {
    workflow_states: await digests(db, TABLES[0]!),
    task_states: await digests(db, TABLES[1]!),
    schedules: await digests(db, TABLES[2]!),
  };
}

/** updated_at as text per row: a migration that touched a row would show here first. */
async function updatedAts(db: Queryable, table: TableSpec): Promise<Record<string, string>> {
  const { rows } = await db.query<{ key: string; updated_at: string }>(
    `select ${table.key}::text as key, to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') as updated_at
       from ${table.name} order by ${table.key}`,
  );
  return Object.fromEntries(rows.map((row) => [row.key, row.updated_at]));
}

async function rowCount(db: Queryable, table: string, where = 'true'): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from ${table} where ${where}`);
  return rows[0]!.n;
}

async function columnsOf(db: Queryable, table: string): Promise<string[]> {
  const { rows } = await db.query<{ column_name: string }>(
    `select column_name from information_schema.columns
      where table_schema = current_schema() and table_name = $1 order by ordinal_position`,
    [table],
  );
  return rows.map((row) => row.column_name);
}

async function primaryKeys(db: Queryable): Promise<Record<string, string>> {
  const { rows } = await db.query<{ table_name: string; def: string }>(
    `select conrelid::regclass::text as table_name, pg_get_constraintdef(oid) as def
       from pg_constraint
      where contype = 'p' and conrelid in ('workflow_states'::regclass, 'task_states'::regclass, 'schedules'::regclass)`,
  );
  return Object.fromEntries(rows.map((row) => [row.table_name, row.def]));
}

async function appliedMigrations(db: Database): Promise<string[]> {
  const status = await migrationStatus(db);
  return status.migrations.filter((entry) => entry.state === 'applied').map((entry) => entry.name);
}

/** How many applied migrations come after the baseline: what `migrateDown` must revert. */
async function appliedAfterBaseline(db: Database): Promise<number> {
  return (await appliedMigrations(db)).filter((name) => name > BASELINE).length;
}

/** With `force` where the audit trail holds events (of an organization made and purged): dropping them is the operator's choice. */
async function migrateDownToBaseline(db: Database, options: { force?: boolean } = {}): Promise<void> {
  const count = await appliedAfterBaseline(db);
  if (count > 0) await migrateDown(db, { count, ...options });
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe.each(backends)('multi-tenancy migrations preserve single-tenant data ($name)', (backend) => {
  let testDb: TestDatabase;
  let db: Database;
  let allMigrations: string[];
  let original: Snapshot;
  let originalUpdatedAts: Record<string, Record<string, string>>;

  beforeAll(async () => {
    testDb = await backend.create();
    db = testDb.db;
    allMigrations = (await migrationStatus(db)).migrations.map((entry) => entry.name);
    await migrateUp(db, { to: BASELINE });
    await loadSingleTenantData(db);
    original = await snapshot(db);
    originalUpdatedAts = {};
    for (const table of TABLES) originalUpdatedAts[table.name] = await updatedAts(db, table);
  });

  afterAll(async () => {
    await testDb?.dispose();
  });

  test('the data set is the single-tenant schema with every row loaded', async () => {
    expect(await appliedMigrations(db)).toEqual(allMigrations.filter((name) => name <= BASELINE));
    // The column constants name every original column, so the digests cover whole rows.
    for (const table of TABLES) expect(await columnsOf(db, table.name)).toEqual([...table.columns]);
    expect(Object.keys(original.workflow_states)).toHaveLength(WORKFLOW_COUNT);
    expect(Object.keys(original.task_states)).toHaveLength(WORKFLOW_COUNT * TASKS_PER_WORKFLOW);
    expect(Object.keys(original.schedules)).toHaveLength(SCHEDULE_COUNT);
    // Parent chains three deep exist, and both kinds of null.
    expect(
      await rowCount(db, 'task_states c join task_states p on p.task_exec_id = c.parent_state_id', 'p.parent_state_id is not null'),
    ).toBeGreaterThan(0);
    expect(await rowCount(db, 'workflow_states', 'input is null')).toBeGreaterThan(0);
    expect(await rowCount(db, 'workflow_states', `input = 'null'::jsonb`)).toBeGreaterThan(0);
  });

  test('migrating up keeps every row, gives it to the default organization, and migrating down restores the single-tenant tables', async () => {
    await migrateUp(db);
    expect(await appliedMigrations(db)).toEqual(allMigrations);

    for (const table of TABLES) {
      expect(await rowCount(db, table.name), table.name).toBe(Object.keys(original[table.name]).length);
    }
    expect(await snapshot(db)).toEqual(original);
    for (const table of TABLES) {
      expect(await updatedAts(db, table), `${table.name}.updated_at`).toEqual(originalUpdatedAts[table.name]);
      const { rows } = await db.query<{ org_id: string; n: number }>(
        `select org_id::text as org_id, count(*)::int as n from ${table.name} group by org_id`,
      );
      expect(rows, `${table.name}.org_id`).toEqual([{ org_id: DEFAULT_ORG_ID, n: Object.keys(original[table.name]).length }]);
    }

    const { rows: organizations } = await db.query(
      `select id::text as id, name, temporal_namespace, status, deleted_at from organizations`,
    );
    expect(organizations).toEqual([
      { id: DEFAULT_ORG_ID, name: 'default', temporal_namespace: 'default', status: 'active', deleted_at: null },
    ]);

    expect(await primaryKeys(db)).toEqual({
      workflow_states: 'PRIMARY KEY (org_id, workflow_exec_id)',
      task_states: 'PRIMARY KEY (org_id, task_exec_id)',
      schedules: 'PRIMARY KEY (org_id, id)',
    });

    // Spot check through the driver: text and jsonb come back as they went in.
    const { rows: spot } = await db.query<{ workflow_id: string; input: unknown }>(
      `select workflow_id, input from workflow_states where workflow_exec_id = $1`,
      [workflowId(6)],
    );
    expect(spot).toEqual([{ workflow_id: `workflow-6 ${text(6)}`, input: JSON.parse(json(6)!) }]);

    await migrateDownToBaseline(db);
    expect(await appliedMigrations(db)).toEqual(allMigrations.filter((name) => name <= BASELINE));
    expect(await snapshot(db)).toEqual(original);
    for (const table of TABLES) {
      // org_id (and schedules.deleted_at) are gone: exactly the original columns remain.
      expect(await columnsOf(db, table.name)).toEqual([...table.columns]);
      expect(await updatedAts(db, table), `${table.name}.updated_at`).toEqual(originalUpdatedAts[table.name]);
    }
    expect(await primaryKeys(db)).toEqual({
      workflow_states: 'PRIMARY KEY (workflow_exec_id)',
      task_states: 'PRIMARY KEY (task_exec_id)',
      schedules: 'PRIMARY KEY (id)',
    });
    expect(await rowCount(db, 'organizations')).toBe(0);
  });

  test('migrating down refuses while another organization owns engine state, and succeeds once it is purged', async () => {
    await migrateUp(db);
    expect(await snapshot(db)).toEqual(original);

    const otherOrg = '0190a000-0000-7000-8000-0000000000a2';
    await db.query(`insert into organizations (id, name, temporal_namespace) values ($1, 'Acme Research', 'acme-research')`, [otherOrg]);
    await db.query(
      `insert into workflow_states (org_id, workflow_exec_id, workflow_id, status, input, created_at, updated_at)
       values ($1, $2, 'workflow-acme', 'running', '{"from": "acme"}', '2026-12-01 10:00:00.123456+00', '2026-12-01 10:00:01.654321+00')`,
      [otherOrg, id('dddddddd', 1)],
    );
    await db.query(
      `insert into task_states (org_id, task_exec_id, task_id, workflow_exec_id, workflow_id, component, status)
       values ($1, $2, 'task-acme', $3, 'workflow-acme', 'agent', 'running')`,
      [otherOrg, id('dddddddd', 2), id('dddddddd', 1)],
    );
    await db.query(`insert into schedules (org_id, id, workflow_id, cron_expression) values ($1, $2, 'workflow-acme', '0 * * * *')`, [
      otherOrg,
      id('dddddddd', 3),
    ]);
    const ofOtherOrg = `org_id = '${otherOrg}'`;
    const otherOrgRows = async () => ({
      workflow_states: await digests(db, TABLES[0]!, ofOtherOrg),
      task_states: await digests(db, TABLES[1]!, ofOtherOrg),
      schedules: await digests(db, TABLES[2]!, ofOtherOrg),
    });
    const otherBefore = await otherOrgRows();
    expect(Object.values(otherBefore).map((rows) => Object.keys(rows))).toEqual([
      [id('dddddddd', 1)],
      [id('dddddddd', 2)],
      [id('dddddddd', 3)],
    ]);
    expect(await appliedMigrations(db)).toEqual(allMigrations);

    // Refused before its first step, with every reason: nothing is reverted, the
    // organization-scoped keys stand, and org_id and every row are there.
    const refused = await migrateDown(db, { count: await appliedAfterBaseline(db) }).then(
      () => undefined,
      (error: unknown) => error as StoreError,
    );
    expect(refused).toMatchObject({ code: 'CONFLICT', details: { migration: AUDIT_TRAIL, reason: 'would_drop_rows' } });
    expect(refused!.message).toMatch(/refused before the first of them, so nothing was reverted/);
    expect(refused!.details.refusals!.map((refusal) => [refusal.migration, refusal.reason])).toEqual([
      // The audit trail records the organization's creation: it goes only with --force.
      [AUDIT_TRAIL, 'would_drop_rows'],
      [AUDIT_TRAIL, 'would_drop_rows'],
      [SCOPED_KEYS, 'down_guard'],
      ['20261128120100_update_existing_tables_for_multitenancy', 'down_guard'],
    ]);
    expect(refused!.details.refusals![3]!.message).toMatch(/refusing to remove org_id: .*organizations other than default \(purge those/);
    expect(await appliedMigrations(db)).toEqual(allMigrations);
    const crossOrgTask = db.query(
      `insert into task_states (org_id, task_exec_id, task_id, workflow_exec_id, workflow_id, component, status)
       values ($1, $2, 'task-cross', $3, 'workflow-x', 'agent', 'running')`,
      [otherOrg, id('dddddddd', 9), id('aaaaaaaa', 1)],
    );
    await expect(crossOrgTask).rejects.toMatchObject({ code: '23503' });
    for (const table of TABLES) expect(await columnsOf(db, table.name)).toContain('org_id');
    expect(await otherOrgRows()).toEqual(otherBefore);
    expect(await rowCount(db, 'organizations', `id in ('${otherOrg}', '${DEFAULT_ORG_ID}')`)).toBe(2);
    const defaultOrgRows: Snapshot = {
      workflow_states: await digests(db, TABLES[0]!, `org_id = '${DEFAULT_ORG_ID}'`),
      task_states: await digests(db, TABLES[1]!, `org_id = '${DEFAULT_ORG_ID}'`),
      schedules: await digests(db, TABLES[2]!, `org_id = '${DEFAULT_ORG_ID}'`),
    };
    expect(defaultOrgRows).toEqual(original);

    // Purging the organization takes its engine state with it; then nothing stands in the way.
    await db.query(`delete from organizations where id = $1`, [otherOrg]);
    for (const table of TABLES) expect(await rowCount(db, table.name, ofOtherOrg), table.name).toBe(0);

    await migrateDownToBaseline(db, { force: true });
    expect(await appliedMigrations(db)).toEqual(allMigrations.filter((name) => name <= BASELINE));
    expect(await snapshot(db)).toEqual(original);
    for (const table of TABLES) expect(await columnsOf(db, table.name)).toEqual([...table.columns]);
  });
});
